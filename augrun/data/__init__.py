"""The data: the dataset registry and loaders (datasets), image folders and their decoded cache (folders), opening an
image file (decoding), what a split holds (splits), the per-photo transforms of streamed folders (photos), and the
batch sources a run trains on (batches; streaming for photos decoded in workers). Below the run, above augment."""
