"""A run's outputs, fed by the training loop one event at a time: the console (progress bar, a row per epoch, the
book's closing lines), metrics.jsonl/.csv, TensorBoard, curves.png and summary.json. Rank 0 has RunOutputs; the other
ranks have NoOutputs, which takes the same calls and does nothing, so the loop never asks which rank it is on."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from augrun import rundir, signals
from augrun.report import MetricsFiles, RunConsole, TensorBoardLog


def summary(status: str, records: list[dict[str, Any]], epochs: int, examples_per_s: float | None,
            devices: list[str], total_seconds: float, error: str | None = None) -> dict[str, Any]:
    """summary.json: how the run ended (completed, stopped, failed) and its final numbers."""
    last = records[-1] if records else {}
    return {
        "status": status, "epochs": epochs, "epochs_completed": len(records),
        "final": {k: last[k] for k in ("train_loss", "train_acc", "test_acc", "test_acc_tta") if k in last} or None,
        "best_test_acc": max((r["test_acc"] for r in records if r["test_acc"] is not None), default=None),
        "examples_per_s": examples_per_s, "devices": devices, "total_seconds": total_seconds, "error": error,
    }


class RunOutputs:
    def __init__(self, run_dir: Path, *, epochs: int, devices: list[str], tensorboard: bool):
        self.run_dir, self.epochs, self.devices = run_dir, epochs, devices
        self.console = RunConsole()
        self.files = MetricsFiles(run_dir)
        self.tensorboard = TensorBoardLog(run_dir) if tensorboard else None

    def note(self, message: str) -> None:
        self.console.note(message)

    def resumed(self, records: list[dict[str, Any]], epoch: int, step: int) -> None:
        self.files.rewrite(records)  # epochs logged after this checkpoint (a kill before the next one) are redone
        self.console.note(f"resuming {self.run_dir} at epoch {epoch}, step {step}")

    def epoch_started(self, epoch: int, steps: int, done: int) -> None:
        self.console.start_epoch(epoch, self.epochs, steps, done)

    def step_progress(self, step: int, loss: float, accuracy: float, images_per_s: float) -> None:
        self.console.update(step, loss, accuracy, images_per_s)

    def epoch_finished(self, records: list[dict[str, Any]]) -> None:
        record = records[-1]
        self.files.append(record, records[:-1])
        self.console.epoch_row(record)
        if self.tensorboard is not None:
            self.tensorboard.log(record)
        from augrun.curves import plot_curves  # matplotlib: imported by the rank that draws
        plot_curves(records, self.run_dir / rundir.CURVES, epochs=self.epochs)

    def stopped(self, signum: int, where: str, records: list[dict[str, Any]], total_seconds: float) -> None:
        self.files.write_summary(summary("stopped", records, self.epochs, None, self.devices, total_seconds))
        self.console.note(f"stopped by signal {signum} {where}; checkpoint saved. {signals.resume_hint(self.run_dir)}")

    def completed(self, records: list[dict[str, Any]], total_seconds: float) -> None:
        examples = sum(r["examples_per_s"] * r["seconds"] for r in records)
        examples_per_s = examples / max(sum(r["seconds"] for r in records), 1e-9)
        self.console.final_lines(records[-1], examples_per_s, self.devices)
        self.files.write_summary(summary("completed", records, self.epochs, examples_per_s, self.devices,
                                         total_seconds))


def _nothing(self, *args: Any, **kwargs: Any) -> None:
    pass


class NoOutputs(RunOutputs):
    """What ranks other than 0 show and write: nothing."""

    def __init__(self):
        pass

    note = resumed = epoch_started = step_progress = epoch_finished = stopped = completed = _nothing
