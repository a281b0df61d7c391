"""uint8 pixels as the float images that augmentation ops and models take, exactly as the cpu backend converts them.
Its own module so that batch sources and drawings can convert without importing the whole gpu op library."""
from __future__ import annotations

import functools

import torch


def to_float(images: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 images -> float in [0, 1], bit-identical to the cpu backend's ToTensor (the book's: x / 255 in float32).

    On other devices by table look-up: CUDA computes a division by a scalar as a multiplication by its reciprocal,
    which differs in the last bit for 126 of the 256 values (as v2's ToDtype(scale=True) does everywhere)."""
    if images.device.type == "cpu":
        return images.to(dtype).div_(255)  # the CPU divides exactly, as v1's ToTensor does; 20x faster than the table
    return _book_values(images.device, dtype)[images.long()]


@functools.lru_cache(maxsize=None)
def _book_values(device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """x / 255 for every uint8 x, divided on the CPU and copied to `device` once (a blocking copy, like gpu._const:
    the first batch of a run makes it, before anything checks for host syncs)."""
    return (torch.arange(256, dtype=torch.float32) / 255).to(device=device, dtype=dtype)
