"""The two forms a dataset split takes: decoded images held in memory (`ImageData`), or image files decoded when a
batch needs them (`FileData`, photo folders streamed at their own resolution); and the train/test pair (`DataSplits`).

Its own module, below both the dataset loaders (augrun.data.datasets, augrun.data.folders) and the batch sources, so that each can
name these types without importing the others.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch


@dataclass
class ImageData:
    images: torch.Tensor  # uint8 (N, C, H, W)
    labels: torch.Tensor  # int64 (N,)
    classes: list[str]

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def channels(self) -> int:
        return self.images.shape[1]

    @property
    def image_size(self) -> int:
        return self.images.shape[-1]

    def take(self, chosen: torch.Tensor) -> ImageData:
        return ImageData(self.images[chosen], self.labels[chosen], self.classes)


class DecodedFiles(Sequence):
    """`FileData.images`: image i decoded on access, at its own size, as uint8 (3, H, W), EXIF rotation applied; for
    the few places that want a picture of the data (a run's preview.png, `augrun preview show=dataset`)."""

    def __init__(self, paths: Sequence[Path]):
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index):  # one image; slices are not needed by anyone
        from augrun.data.decoding import ImageFileError, open_rgb
        from augrun.errors import DataError
        try:
            image = open_rgb(self.paths[int(index)])
        except ImageFileError as error:  # a file that passed the header check but not the decoder: named, one line
            raise DataError("dataset.root", str(error)) from None
        return torch.from_numpy(np.array(image)).permute(2, 0, 1)


@dataclass
class FileData:
    """A streamed split: image files and their labels; the batch sources decode each file when it is used."""
    paths: list[Path]
    labels: torch.Tensor  # int64 (N,)
    classes: list[str]
    image_size: int       # what the train pipeline (or the evaluation transform) brings every image to
    channels: int = 3     # photos are decoded to RGB
    images: DecodedFiles = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.images = DecodedFiles(self.paths)

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, chosen: torch.Tensor) -> FileData:
        return FileData([self.paths[int(i)] for i in chosen], self.labels[chosen], self.classes, self.image_size,
                        self.channels)


@dataclass
class DataSplits:
    train: ImageData | FileData
    test: ImageData | FileData

    @property
    def num_classes(self) -> int:
        return len(self.train.classes)

    @property
    def channels(self) -> int:
        return self.train.channels

    @property
    def image_size(self) -> int:
        return self.train.image_size

    @property
    def streamed(self) -> bool:
        return isinstance(self.train, FileData)
