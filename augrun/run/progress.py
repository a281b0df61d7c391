"""Where a run stands (the epoch it is in, that epoch's partial sums, the finished epochs' records, the time spent), and
the checkpointer that saves it with the model and optimizer after every epoch and at a stop, and restores it."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from augrun.run import checkpoint, distributed
from augrun.run.build import BuiltRun
from augrun.run.engine import EpochState


@dataclass
class Progress:
    epoch: int                # the epoch being trained (1-based); epochs before it are finished
    state: EpochState         # this epoch's steps done and sums so far
    records: list[dict[str, Any]] = field(default_factory=list)  # one metrics record per finished epoch
    total_seconds: float = 0.0  # wall time of training and evaluation so far, across resumes

    @classmethod
    def fresh(cls, device: torch.device) -> Progress:
        return cls(1, EpochState.fresh(device))

    def finish_epoch(self, record: dict[str, Any], device: torch.device) -> None:
        self.records.append(record)
        self.epoch += 1
        self.state = EpochState.fresh(device)


class Checkpointer:
    """Saves and restores a run: the model, optimizer and schedule, every RNG, and its Progress.

    `save` is a collective (the epoch's sums are reduced over the ranks): every rank calls it, rank 0 writes."""

    def __init__(self, path: Path, run: BuiltRun, *, config: dict[str, Any], is_main: bool):
        self.path, self.run, self.config, self.is_main = path, run, config, is_main
        self.tracking: dict[str, Any] = {}  # the trackers' ids (the MLflow run), for a resume to go on in them

    def save(self, progress: Progress) -> None:
        sums = distributed.all_reduce_sum(progress.state.sums)
        if not self.is_main:
            return
        run = self.run
        checkpoint.save_atomic({
            "epoch": progress.epoch, "next_step": progress.state.next_step, "sums": sums.cpu(),
            "seconds": progress.state.seconds, "model": run.model.state_dict(), "optimizer": run.optimizer.state_dict(),
            "scheduler": run.scheduler.state_dict() if run.scheduler is not None else None,
            "records": progress.records, "total_seconds": progress.total_seconds, "config": self.config,
            "rng": checkpoint.rng_states(), "tracking": self.tracking,
            # the weights' average (what `augrun eval weights=ema` reads) and fp16's loss scale, for an exact resume
            "ema": run.updater.ema.module.state_dict() if run.updater.ema is not None else None,
            "ema_updates": run.updater.ema.updates if run.updater.ema is not None else 0,
            "scaler": run.updater.scaler.state_dict() if run.updater.scaler is not None else None}, self.path)

    def restore(self, state: dict[str, Any], device: torch.device) -> Progress:
        """The run as `state` (a loaded checkpoint, the same on every rank) left it. The saved sums are the ranks'
        total: rank 0 carries them on, the others restart from zero, so the next reduction counts them once."""
        run = self.run
        run.model.load_state_dict(state["model"])
        run.optimizer.load_state_dict(state["optimizer"])
        if run.scheduler is not None:
            run.scheduler.load_state_dict(state["scheduler"])
        checkpoint.restore_rng_states(state["rng"])
        if run.updater.ema is not None:
            run.updater.ema.load_state_dict({"weights": state["ema"], "updates": state["ema_updates"]})
        if run.updater.scaler is not None:
            run.updater.scaler.load_state_dict(state["scaler"])
        sums = state["sums"].to(device) if self.is_main else torch.zeros_like(state["sums"], device=device)
        return Progress(state["epoch"], EpochState(sums, state["next_step"], state["seconds"]), state["records"],
                        state["total_seconds"])
