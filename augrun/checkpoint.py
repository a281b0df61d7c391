"""checkpoint.pt: written to a temporary file and renamed, so a kill at any instant leaves the previous one intact."""
from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

CHECKPOINT = "checkpoint.pt"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: printed as one line, exit status 2."""


def save_atomic(state: dict[str, Any], path: Path) -> None:
    """Write next to the target, fsync, then rename: the rename is atomic, so readers see the old or the new file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as file:
            torch.save(state, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        Path(tmp).unlink(missing_ok=True)  # disk full or killed: drop the partial file, keep the old checkpoint
        if isinstance(error, Exception):  # torch reports a full disk as a RuntimeError from its zip writer
            reason = " ".join(str(error).split()) or type(error).__name__
            raise OSError(f"could not write {path} ({reason}); the previous checkpoint is kept") from None
        raise


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
