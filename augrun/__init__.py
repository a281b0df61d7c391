"""augrun: config-driven image-augmentation experiments (train with and without augmentation, log, compare)."""
__version__ = "0.1.0"
