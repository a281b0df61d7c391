"""A run's outputs, fed by the training loop one event at a time: the console (progress bar, a row per epoch, the
book's closing lines), metrics.jsonl/.csv, TensorBoard, curves.png and summary.json. Rank 0 has RunOutputs; the other
ranks have NoOutputs, which takes the same calls and does nothing, so the loop never asks which rank it is on."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from augrun import environment as env
from augrun import rundir, signals
from augrun.report.console import RunConsole
from augrun.report.metrics_files import FINAL_NUMBERS, MetricsFiles
from augrun.report.tracker import Tracker

# A CPU run projected to take longer than this is told so once, with faster settings (the default ResNet-18 on
# CIFAR-10 runs ~20 images/s on 2 cores: about 7 hours). Read at each run, so a test can lower it.
CPU_NOTE_SECONDS = 600.0
FASTER_ON_CPU = "model=small_cnn, dataset.train_size=5000, or experiment=smoke"


def summary(status: str, records: list[dict[str, Any]], epochs: int | None, examples_per_s: float | None,
            devices: list[str] | None, total_seconds: float | None, error: str | None = None,
            environment: dict[str, Any] | None = None) -> dict[str, Any]:
    """summary.json: how the run ended (completed, stopped, failed), its final numbers, and where it ran (the
    environment block, without which a failure before training is written). None where nothing was measured."""
    last = records[-1] if records else {}
    return {
        "status": status, "epochs": epochs, "epochs_completed": len(records),
        "final": {k: last[k] for k in FINAL_NUMBERS if k in last} or None,
        "best_test_acc": max((r["test_acc"] for r in records if r["test_acc"] is not None), default=None),
        "examples_per_s": examples_per_s, "devices": devices, "total_seconds": total_seconds, "error": error,
    } | ({"environment": env.finished(environment)} if environment is not None else {})


def format_duration(seconds: float) -> str:
    """'6 h 50 min', '12 min', '40 s': a projection's precision, no more."""
    if seconds < 60:
        return f"{round(seconds)} s"
    minutes = round(seconds / 60)
    return f"{minutes // 60} h {minutes % 60} min" if minutes >= 60 else f"{minutes} min"


def cpu_time_note(images_per_s: float, images_left: float, *, threshold_s: float) -> str | None:
    """The one line that tells a CPU run how long it will take, when that is over `threshold_s`; None otherwise."""
    seconds = images_left / max(images_per_s, 1e-9)
    if seconds <= threshold_s:
        return None
    return (f"augrun: note: on the CPU this run will take about {format_duration(seconds)} "
            f"({images_per_s:,.0f} images/s); faster: {FASTER_ON_CPU}")


class RunOutputs:
    def __init__(self, run_dir: Path, *, epochs: int, devices: list[str], trackers: list[Tracker] = (),
                 environment: dict[str, Any] | None = None, cpu_images_per_epoch: int | None = None):
        """`trackers`: TensorBoard, MLflow (logger=); `cpu_images_per_epoch`: set on a CPU run, whose first progress
        update then projects its duration."""
        self.run_dir, self.epochs, self.devices, self.environment = run_dir, epochs, devices, environment
        self.console = RunConsole()
        self.files = MetricsFiles(run_dir)
        self.trackers = list(trackers)
        self.cpu_images_per_epoch = cpu_images_per_epoch
        self.epoch, self.steps = 1, 1

    def note(self, message: str) -> None:
        self.console.note(message)

    def started(self) -> None:
        for tracker in self.trackers:
            tracker.start(None, [])

    def resumed(self, records: list[dict[str, Any]], epoch: int, step: int, tracking: dict[str, Any] | None) -> None:
        """`tracking`: what the checkpoint kept of the trackers (the MLflow run to go on in)."""
        self.files.rewrite(records)  # epochs logged after this checkpoint (a kill before the next one) are redone
        self.console.note(f"resuming {self.run_dir} at epoch {epoch}, step {step}")
        for tracker in self.trackers:
            tracker.start(tracking, records)

    def tracking_state(self) -> dict[str, Any]:
        """What the checkpoint keeps of the trackers."""
        return {key: value for tracker in self.trackers for key, value in tracker.state().items()}

    def epoch_started(self, epoch: int, steps: int, done: int) -> None:
        self.epoch, self.steps = epoch, steps
        self.console.start_epoch(epoch, self.epochs, steps, done)

    def step_progress(self, step: int, loss: float, accuracy: float, images_per_s: float) -> None:
        self.console.update(step, loss, accuracy, images_per_s)
        if self.cpu_images_per_epoch is not None:
            self._project_cpu_time(step, images_per_s)

    def _project_cpu_time(self, step: int, images_per_s: float) -> None:
        """Once, at the first progress update (past the slow first steps): the time the rest of the run will take."""
        epochs_left = self.epochs - self.epoch + (self.steps - step) / self.steps
        note = cpu_time_note(images_per_s, epochs_left * self.cpu_images_per_epoch, threshold_s=CPU_NOTE_SECONDS)
        self.cpu_images_per_epoch = None
        if note:
            self.console.console.print(note, highlight=False, soft_wrap=True)  # above a live progress bar, which stays

    def epoch_finished(self, records: list[dict[str, Any]]) -> None:
        record = records[-1]
        self.files.append(record, records[:-1])
        self.console.epoch_row(record)
        for tracker in self.trackers:
            tracker.log_epoch(record)
        from augrun.report.curves import plot_curves  # matplotlib: imported by the rank that draws
        plot_curves(records, self.run_dir / rundir.CURVES, epochs=self.epochs)

    def stopped(self, signum: int, where: str, records: list[dict[str, Any]], total_seconds: float) -> None:
        self.files.write_summary(summary("stopped", records, self.epochs, None, self.devices, total_seconds,
                                         environment=self.environment))
        self.console.note(f"stopped by signal {signum} {where}; checkpoint saved. {signals.resume_hint(self.run_dir)}")
        for tracker in self.trackers:
            tracker.end("stopped")

    def completed(self, records: list[dict[str, Any]], total_seconds: float) -> None:
        examples = sum(r["examples_per_s"] * r["seconds"] for r in records)
        examples_per_s = examples / max(sum(r["seconds"] for r in records), 1e-9)
        self.console.final_lines(records[-1], examples_per_s, self.devices)
        self.files.write_summary(summary("completed", records, self.epochs, examples_per_s, self.devices,
                                         total_seconds, environment=self.environment))
        for tracker in self.trackers:
            tracker.end("completed")

    def failed(self, message: str) -> None:
        """The run failed while training (its summary.json is written by the process that launched it)."""
        for tracker in self.trackers:
            tracker.end("failed", message)


def _nothing(self, *args: Any, **kwargs: Any) -> None:
    pass


class NoOutputs(RunOutputs):
    """What ranks other than 0 show and write: nothing."""

    def __init__(self):
        pass

    note = started = resumed = epoch_started = step_progress = epoch_finished = stopped = completed = failed = _nothing

    def tracking_state(self) -> dict[str, Any]:
        return {}
