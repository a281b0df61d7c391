"""checkpoint.pt: written to a temporary file and renamed, so a kill at any instant leaves the previous one intact."""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from augrun.files import atomic_open

CHECKPOINT = "checkpoint.pt"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: printed as one line, exit status 2."""


def save_atomic(state: dict[str, Any], path: Path) -> None:
    """Written beside the target, synced, then renamed: a kill or a full disk keeps the previous checkpoint."""
    try:
        with atomic_open(path, "wb", fsync=True) as file:
            torch.save(state, file)
    except Exception as error:  # torch reports a full disk as a RuntimeError from its zip writer
        reason = " ".join(str(error).split()) or type(error).__name__
        raise OSError(f"could not write {path} ({reason}); the previous checkpoint is kept") from None


def load(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(f"resume: no {CHECKPOINT} in {path.parent}; valid: resume=true with hydra.run.dir set to a "
                              "run directory that has one, or resume=false to start fresh")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # torch raises many types for a damaged zip/pickle
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise CheckpointError(f"resume: {path} is corrupt or unreadable ({reason}); valid: a checkpoint.pt written by "
                              "augrun, or resume=false in a new run directory") from None


def rng_states() -> dict[str, Any]:
    """Every global RNG, saved for completeness: augrun's own draws are re-derived from (seed, epoch, step)."""
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng_states(states: dict[str, Any]) -> None:
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def config_differences(saved: dict[str, Any], current: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested config dicts."""
    keys = sorted(set(saved) | set(current))
    diffs = []
    for key in keys:
        a, b = saved.get(key, "<absent>"), current.get(key, "<absent>")
        if isinstance(a, dict) and isinstance(b, dict):
            diffs += config_differences(a, b, f"{prefix}{key}.")
        elif a != b:
            diffs.append(f"{prefix}{key} ({a!r} -> {b!r})")
    return diffs
