"""Streamed photos: what a DataLoader worker does with one file, and how a train pipeline is split between the workers
and the device for the gpu backend.

Workers decode each file at its own resolution (augrun.data.decoding.open_rgb: RGB, EXIF rotation applied), then
- cpu backend, training: the whole torchvision pipeline, as for resident images (it must bring the photo to image_size;
  the pre-check refuses one that does not);
- gpu backend, training: only the geometric ops up to the first crop to image_size (`split_for_device`), giving uint8;
  the flips and colour ops placed before that crop run after it, batched on the device with the rest;
- test images (both backends): the standard evaluation transform of torchvision's classification references, the
  shorter side resized to int(image_size / eval_resize_ratio), then a centre crop of image_size, as uint8.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torchvision.transforms.v2 as T
from torchvision.transforms.v2 import functional as F

from augrun.augment.ops import OpSpec, build_torchvision_op

# ops that bring any photo to one size: the end of what the gpu backend's workers do
SIZING_OPS = ("RandomResizedCrop", "RandomCrop")
# ops before that crop which the gpu backend moves after it, onto the device (README: "Your own photos"):
# flips commute with a crop whose position is uniform (the same law either way); brightness, saturation and grayscale
# are pointwise linear, so they commute with a crop and a linear resize up to clamping and rounding; hue is pointwise,
# so it commutes with the crop exactly and with the resize closely; contrast blends with the mean of the image it sees,
# which after the move is the crop's mean instead of the whole photo's (measured in tests/test_photos.py).
MOVED_TO_DEVICE = ("RandomHorizontalFlip", "RandomVerticalFlip", "ColorJitter", "RandomGrayscale")


def split_for_device(specs: Sequence[OpSpec]) -> tuple[list[OpSpec], list[OpSpec]]:
    """(worker ops, device ops) of a train pipeline for the gpu backend on streamed photos.

    The workers run every op up to and including the first crop to a fixed size, except the flips and colour ops
    among them (MOVED_TO_DEVICE), which the device runs first, in their order, followed by the ops after the crop.
    Without such a crop the workers run nothing and the pre-check refuses the pipeline (sizes differ).
    """
    specs = list(specs)
    end = next((i + 1 for i, s in enumerate(specs) if s.name in SIZING_OPS), 0)
    head, tail = specs[:end], specs[end:]
    return [s for s in head if s.name not in MOVED_TO_DEVICE], [s for s in head if s.name in MOVED_TO_DEVICE] + tail


def to_uint8_tensor(image) -> torch.Tensor:
    """A PIL image as a uint8 (C, H, W) tensor: what workers send when the device finishes the batch."""
    return F.pil_to_tensor(image)


def worker_transform(specs: Sequence[OpSpec]) -> T.Compose:
    """The gpu backend's worker part: the ops `split_for_device` leaves to the workers, on the PIL photo, then uint8."""
    return T.Compose([build_torchvision_op(s) for s in specs] + [to_uint8_tensor])


def eval_resize(image_size: int, ratio: float) -> int:
    """The shorter side test photos are resized to: int(image_size / ratio), as torchvision's references (224 -> 256)."""
    return int(image_size / ratio)


def eval_transform(image_size: int, ratio: float) -> T.Compose:
    """Test photos: shorter side to eval_resize (bilinear, antialiased: PIL's resize), centre crop, uint8 (C, S, S)."""
    return T.Compose([T.Resize(eval_resize(image_size, ratio)), T.CenterCrop(image_size), to_uint8_tensor])
