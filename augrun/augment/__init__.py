"""Augmentation: the op registry a config names ops from (ops: names, Gluon aliases, arguments, backends, and the
catalogue `augrun ops` prints), the cpu backend (torchvision per image), the gpu backend (batched per-sample ops and
`build_pipeline`), and pixel conversions both share (pixels)."""
