"""The cpu backend: torchvision transforms per image in DataLoader workers, exactly as the book composes them.

Image ops run on PIL images (the book's semantics: each colour adjustment rounds to uint8), then ToTensor
(ToImage + ToDtype(float32, scale=True) is v2's spelling of it), then tensor-only ops, then the dataset's normalisation.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torchvision.transforms.v2 as T

from augrun.augment.ops import TENSOR_OPS, OpSpec, build_torchvision_op


def _to_tensor() -> list[T.Transform]:
    return [T.ToImage(), T.ToDtype(torch.float32, scale=True)]


def build_train_transform(specs: Sequence[OpSpec], *, mean: Sequence[float] | None = None,
                          std: Sequence[float] | None = None) -> T.Compose:
    """PIL image -> augmented float tensor in [0, 1] (normalised when mean/std are given)."""
    image_ops = [build_torchvision_op(s) for s in specs if s.name not in TENSOR_OPS]
    tensor_ops = [build_torchvision_op(s) for s in specs if s.name in TENSOR_OPS]
    return T.Compose(image_ops + _to_tensor() + tensor_ops + _normalization(mean, std))


def build_test_transform(*, mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> T.Compose:
    """Test images are never randomly augmented: ToTensor and the dataset's normalisation only."""
    return T.Compose(_to_tensor() + _normalization(mean, std))


def _normalization(mean: Sequence[float] | None, std: Sequence[float] | None) -> list[T.Transform]:
    return [] if mean is None else [T.Normalize(list(mean), list(std))]
