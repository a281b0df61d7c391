"""uint8 pixels as the float images that augmentation ops and models take, exactly as the cpu backend converts them.
Its own module so that batch sources and drawings can convert without importing the whole gpu op library."""
from __future__ import annotations

import torch


def to_float(images: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 images -> float in [0, 1], bit-identical to the cpu backend's ``ToDtype(float32, scale=True)``
    (x * (1 / 255); the book's ToTensor divides by 255, which differs in the last bit for some values)."""
    return images.to(dtype).mul_(1.0 / 255)
