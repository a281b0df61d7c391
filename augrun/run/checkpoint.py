"""checkpoint.pt: saved atomically, loaded as data only (never as code), and checked to be an augrun checkpoint.

A checkpoint is a file users share and download, so it is read with `torch.load(weights_only=True)`: tensors and plain
Python values only. Everything augrun saves is kept to those types (the numpy RNG state as a tensor), and the file
carries a format name and version so that a foreign or older file is refused in one line instead of failing later.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from augrun.errors import CheckpointError
from augrun.files import atomic_open
from augrun.models.weights import load_as_data
from augrun.rundir import CHECKPOINT

FORMAT = "augrun-checkpoint"
VERSION = 2  # 1: before the format marker (pickled numpy RNG state; loadable only as code)
# what a resume reads, and the type each must have
REQUIRED = {"epoch": int, "next_step": int, "sums": torch.Tensor, "seconds": float, "model": dict, "optimizer": dict,
            "records": list, "total_seconds": float, "config": dict, "rng": dict}
# what a resume can do instead of using a checkpoint it cannot read (another command that reads one says its own)
START_FRESH = "resume=false in a new run directory"



def save_atomic(state: dict[str, Any], path: Path) -> None:
    """Written beside the target, synced, then renamed: a kill or a full disk keeps the previous checkpoint."""
    try:
        with atomic_open(path, "wb", fsync=True) as file:
            torch.save({"format": FORMAT, "version": VERSION, **state}, file)
    except Exception as error:  # torch reports a full disk as a RuntimeError from its zip writer
        reason = " ".join(str(error).split()) or type(error).__name__
        raise OSError(f"could not write {path} ({reason}); the previous checkpoint is kept") from None


def load(path: Path, *, key: str = "resume", otherwise: str = START_FRESH) -> dict[str, Any]:
    """The checkpoint at `path`, as data: a file that would need code to load, or is not augrun's, is refused. A
    refusal names `key` and says what the user can do `otherwise` (the reading command's alternative)."""
    if not path.is_file():
        raise CheckpointError(key, f"no {CHECKPOINT} in {path.parent}; valid: resume=true with hydra.run.dir set to a "
                              "run directory that has one, or resume=false to start fresh")
    state = load_as_data(path, error=CheckpointError, key=key, what="an augrun checkpoint", remedy=_remedy(otherwise))
    check_structure(state, path, key=key, otherwise=otherwise)
    return state


def _remedy(otherwise: str) -> str:
    return f"valid: a checkpoint.pt written by this version of augrun, or {otherwise}"


def check_structure(state: Any, path: Path, *, key: str = "resume", otherwise: str = START_FRESH) -> None:
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(key, f"{path} is not an augrun checkpoint (a torch file without augrun's format "
                              f"marker); {_remedy(otherwise)}")
    if state.get("version") != VERSION:
        raise CheckpointError(key, f"{path} is an augrun checkpoint of format version {state.get('version')!r}, "
                              f"this augrun reads version {VERSION}; valid: the augrun that wrote it, or {otherwise}")
    for field, kind in REQUIRED.items():
        value = state.get(field)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise CheckpointError(key, f"{path} is damaged: '{field}' is {type(value).__name__}, expected "
                                  f"{kind.__name__}; {_remedy(otherwise)}")


def rng_states() -> dict[str, Any]:
    """Every global RNG, saved for completeness: augrun's own draws are re-derived from (seed, epoch, step).

    Plain values and tensors only, so the checkpoint loads with weights_only (numpy's state holds an ndarray)."""
    name, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached_gaussian)},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng_states(states: dict[str, Any]) -> None:
    random.setstate(states["python"])
    n = states["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
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
