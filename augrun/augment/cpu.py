"""The cpu backend: torchvision transforms per image in DataLoader workers, giving exactly the book's values.

The book composes torchvision.transforms (v1) classes: image ops on PIL images (each colour adjustment rounds to
uint8), then ToTensor (x / 255), then the tensor-only ops, then the dataset's normalisation. Configs name ops by their
torchvision class names and ops.py checks the arguments through the v2 classes; here each op is built from the class
that gives v1's values fastest (FASTEST_CLASS), and ToTensor's values come by a shorter route than v1's.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torchvision.transforms as V1
import torchvision.transforms.v2 as V2
from PIL import Image

from augrun.augment.ops import TENSOR_OPS, OpSpec, build_torchvision_op

# Registered op -> the class the cpu backend runs it with. Measured per 32x32 image in one thread, as a DataLoader
# worker runs them (`python benchmarks/cpu_backend.py --per-op`; 2-core AMD EPYC, torchvision 0.29.1; numbers in
# benchmarks/RESULTS.md). Where v1 and v2 give identical outputs for the same seed, the faster; where they differ, v1,
# the book's, for the ops the book uses. v2's per-call dispatch (flattening its inputs, finding the image among them)
# costs more than a flip.
FASTEST_CLASS: dict[str, type] = {
    "RandomHorizontalFlip": V1.RandomHorizontalFlip,  # identical; v1 1.3x as fast
    "RandomVerticalFlip": V1.RandomVerticalFlip,      # identical; v1 1.35x
    "ColorJitter": V1.ColorJitter,                    # identical; v1 1.05x (all four) to 1.09x (brightness alone)
    "RandomResizedCrop": V2.RandomResizedCrop,        # identical; v2 1.02x (21 rounds; 0.98 to 1.04 in single runs)
    "RandomCrop": V1.RandomCrop,                      # identical; v1 1.2x
    "RandomGrayscale": V1.RandomGrayscale,            # identical; v1 1.27x
    "RandomRotation": V1.RandomRotation,              # identical; v1 1.17x
    "RandomAffine": V1.RandomAffine,                  # identical; v1 1.2x
    "RandomErasing": V1.RandomErasing,                # identical (on the tensor after ToTensor); v1 1.13x
    # The book uses none of the ops below, so it has no values to match: v2, faster by 1.07x to 1.58x. (v1 and v2
    # differ here: GaussianBlur rounds a few pixels the other way, v2's Solarize threshold is 255 x a float32
    # fraction, AugMix's tensor ops round differently, and the draws come in another order.)
    "GaussianBlur": V2.GaussianBlur,
    "AutoAugment": V2.AutoAugment,
    "RandAugment": V2.RandAugment,
    "TrivialAugmentWide": V2.TrivialAugmentWide,
    "AugMix": V2.AugMix,
}
# Normalize (the dataset's mean and std, after the tensor ops) stays v2's: identical, v2 1.05x.


class ToTensor:
    """v1's ToTensor for the L and RGB images the workers make: CHW float32 in [0, 1], x / 255, contiguous.

    numpy divides in float32 and rounds as torch does, so the values are v1's bit for bit (tests check all 256), at
    about twice v1's speed on a 32x32 image: v1 goes through a copy, a torch view, permute + contiguous and a float
    tensor before dividing. Other modes (16-bit, float, palette, ...) go to v1's ToTensor itself.
    """

    def __init__(self):
        self.v1 = V1.ToTensor()

    def __call__(self, image: Image.Image) -> torch.Tensor:
        if not isinstance(image, Image.Image) or image.mode not in ("L", "RGB"):
            return self.v1(image)
        pixels = np.asarray(image)
        channels_first = pixels[np.newaxis] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)
        return torch.from_numpy(np.divide(channels_first, np.float32(255), dtype=np.float32, order="C"))

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def build_op(spec: OpSpec) -> Callable:
    """A spec as the cpu backend runs it (ops.py has checked its arguments against the v2 class of its name)."""
    return build_torchvision_op(spec, FASTEST_CLASS.get(spec.name))


def build_train_transform(specs: Sequence[OpSpec], *, mean: Sequence[float] | None = None,
                          std: Sequence[float] | None = None) -> V1.Compose:
    """PIL image -> augmented float tensor in [0, 1] (normalised when mean/std are given)."""
    image_ops = [build_op(s) for s in specs if s.name not in TENSOR_OPS]
    tensor_ops = [build_op(s) for s in specs if s.name in TENSOR_OPS]
    # v1's Compose: a plain loop, where v2's unpacks and repacks every op's inputs
    return V1.Compose(image_ops + [ToTensor()] + tensor_ops + _normalization(mean, std))


def build_test_transform(*, mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> V1.Compose:
    """Test images are never randomly augmented: ToTensor and the dataset's normalisation only."""
    return V1.Compose([ToTensor()] + _normalization(mean, std))


def _normalization(mean: Sequence[float] | None, std: Sequence[float] | None) -> list[Callable]:
    return [] if mean is None else [V2.Normalize(list(mean), list(std))]
