"""What a run shows and writes: a progress bar per epoch, a table row per epoch, the book's final lines, and the
metrics files (metrics.jsonl, metrics.csv, summary.json) in the run directory. Only rank 0 creates one of these."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from augrun.files import write_text_atomic

METRIC_FIELDS = ["epoch", "train_loss", "train_acc", "test_acc", "lr", "seconds", "examples_per_s"]
COLUMNS = [("epoch", "{:d}"), ("train_loss", "{:.4f}"), ("train_acc", "{:.4f}"), ("test_acc", "{:.4f}"),
           ("lr", "{:.3g}"), ("seconds", "{:.1f}"), ("examples_per_s", "{:.1f}")]


class MetricsFiles:
    """metrics.jsonl gets one line per epoch (appended, so a resumed run continues it); metrics.csv mirrors it."""

    def __init__(self, run_dir: Path):
        self.jsonl = run_dir / "metrics.jsonl"
        self.csv = run_dir / "metrics.csv"
        self.summary = run_dir / "summary.json"

    def read(self) -> list[dict[str, Any]]:
        if not self.jsonl.is_file():
            return []
        return [json.loads(line) for line in self.jsonl.read_text().splitlines() if line.strip()]

    def rewrite(self, records: list[dict[str, Any]]) -> None:
        """Rewrite both files from records (a resume drops epochs logged after the checkpoint it continues from)."""
        write_text_atomic(self.jsonl, "".join(json.dumps(r) + "\n" for r in records))
        self._write_csv(records)

    def append(self, record: dict[str, Any], previous: list[dict[str, Any]]) -> None:
        with open(self.jsonl, "a") as file:
            file.write(json.dumps(record) + "\n")
        self._write_csv(previous + [record])

    def _write_csv(self, records: list[dict[str, Any]]) -> None:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=METRIC_FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(records)
        write_text_atomic(self.csv, buffer.getvalue())

    def write_summary(self, summary: dict[str, Any]) -> None:
        write_text_atomic(self.summary, json.dumps(summary, indent=2) + "\n")


class TensorBoardLog:
    """logger=tensorboard: the per-epoch scalars as event files in the run directory (`tensorboard --logdir outputs/`)."""

    def __init__(self, run_dir: Path):
        from torch.utils.tensorboard import SummaryWriter
        self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))

    def log(self, record: dict[str, Any]) -> None:
        for name in METRIC_FIELDS[1:]:
            self.writer.add_scalar(name, record[name], global_step=record["epoch"])
        self.writer.flush()


def check_logger(logger: str) -> None:
    """Fail before any work when the chosen logger's package is missing."""
    if logger == "tensorboard":
        try:
            import tensorboard  # noqa: F401
        except ImportError:
            from augrun.config import ConfigError
            raise ConfigError("logger", "tensorboard is not installed; valid: pip install 'augrun[tensorboard]', "
                              "or logger=none") from None


class RunConsole:
    """Rich output of rank 0: a live progress bar while an epoch trains, a table row when it ends."""

    def __init__(self, console: Console | None = None):
        self.console = console or Console()
        self.progress: Progress | None = None
        self.task = None
        self.rows_printed = 0

    def start_epoch(self, epoch: int, epochs: int, steps: int, done: int = 0) -> None:
        self.progress = Progress(TextColumn(f"epoch {epoch}/{epochs}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[stats]}"), TimeElapsedColumn(), console=self.console,
                                 transient=True)
        self.progress.start()
        self.task = self.progress.add_task("train", total=steps, completed=done, stats="")

    def update(self, step: int, loss: float, acc: float, images_per_s: float) -> None:
        if self.progress is not None:
            stats = f"loss {loss:.3f}  acc {acc:.3f}  {images_per_s:,.0f} img/s"
            self.progress.update(self.task, completed=step, stats=stats)

    def stop_progress(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None

    def epoch_row(self, record: dict[str, Any]) -> None:
        self.stop_progress()
        table = Table(show_header=self.rows_printed == 0, box=None, pad_edge=False)
        for name, _ in COLUMNS:
            table.add_column(name, justify="right", min_width=max(len(name), 8))
        table.add_row(*(fmt.format(record[name]) for name, fmt in COLUMNS))
        self.console.print(table)
        self.rows_printed += 1

    def final_lines(self, record: dict[str, Any], examples_per_s: float, devices: list[str]) -> None:
        """The book's closing lines, in its format."""
        self.console.print(f"loss {record['train_loss']:.3f}, train acc {record['train_acc']:.3f}, "
                           f"test acc {record['test_acc']:.3f}")
        self.console.print(f"{examples_per_s:.1f} examples/sec on {devices}", highlight=False)

    def note(self, message: str) -> None:
        self.stop_progress()
        self.console.print(message, highlight=False, soft_wrap=True)  # unwrapped: users copy commands out of notes
