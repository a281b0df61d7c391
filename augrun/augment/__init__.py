"""Augmentation: the op registry a config names ops from (ops: names, Gluon aliases, arguments, backends, and the
catalogue `augrun ops` prints), the cpu backend (torchvision per image), the gpu backend's batched per-sample ops (gpu)
and the builder that makes a config's specs into them (gpu_pipeline: `build_pipeline`, `build_batch_op`), and pixel
conversions both share (pixels)."""
