"""Every random draw in a run is a pure function of (seed, purpose, epoch, step or image index).

So the same seed gives the same run whatever the worker count, and a run resumed at any step draws exactly what the
uninterrupted run would have drawn: nothing but the position needs to be saved. The augmentation draws are seeded by the
functions below, one per rule, so that every batch source (resident or streamed, either backend) seeds alike.
"""
from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch only where a draw is seeded: this module is imported by code that needs no torch
    import torch


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from any tuple of names and numbers; stable across processes and Python versions."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def seed_image_draws(*, seed: int, epoch: int, index: int) -> None:
    """Seed torch's global RNG for one image's per-image ops (the cpu backend's transform, a streamed photo's worker
    ops): torchvision's transforms draw from it. Per image, not per worker, so the worker count does not matter."""
    import torch

    torch.default_generator.manual_seed(derive_seed(seed, "aug", epoch, index))


def seed_step_draws(generator: torch.Generator, *, seed: int, epoch: int, step: int, rank: int) -> None:
    """Seed `generator` for one step's batched per-image ops on the device (the gpu backend's pipeline). Per step and
    rank: each rank draws for its own share of the global batch, and a run resumed at `step` draws as the original."""
    generator.manual_seed(derive_seed(seed, "aug", epoch, step, rank))


def seed_batch_op_draws(generator: torch.Generator, *, seed: int, epoch: int, step: int, rank: int) -> None:
    """Seed `generator` for one step's batch ops (MixUp, CutMix, on the device for both backends): a purpose of its
    own, so adding a batch op does not change the per-image draws."""
    generator.manual_seed(derive_seed(seed, "batch_ops", epoch, step, rank))
