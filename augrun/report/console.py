"""What a run shows on its console: a progress bar per epoch, a table row per epoch, the book's final lines. Only rank 0
creates one."""
from __future__ import annotations

import importlib.util
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from augrun.report.metrics_files import metric_fields

COLUMNS = {"epoch": "{:d}", "train_loss": "{:.4f}", "train_acc": "{:.4f}", "test_acc": "{:.4f}", "test_acc_tta": "{:.4f}",
           "test_acc_ema": "{:.4f}",
           "lr": "{:.3g}", "seconds": "{:.1f}", "examples_per_s": "{:.1f}"}
# each row is printed as its own table, so a column's width must not depend on its value: lr can print as 3.16e-05
MIN_WIDTH = {"lr": 8}


def shows_live_progress(console: Console) -> bool:
    """Whether a progress bar can redraw in place: in a terminal, or in Jupyter, where rich draws it into an ipywidgets
    Output (without ipywidgets rich would warn at every redraw, so there is no bar, only the epoch rows)."""
    if console.is_terminal:
        return True
    return console.is_jupyter and importlib.util.find_spec("ipywidgets") is not None


class RunConsole:
    """Rich output of rank 0: a live progress bar while an epoch trains, a table row when it ends."""

    def __init__(self, console: Console | None = None):
        self.console = console or Console()
        self.progress: Progress | None = None
        self.task = None
        self.rows_printed = 0

    def start_epoch(self, epoch: int, epochs: int, steps: int, done: int = 0) -> None:
        if not shows_live_progress(self.console):  # a log file gets the epoch rows, not a bar's redraws
            return
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
        table = Table(show_header=self.rows_printed == 0, box=None, pad_edge=False, collapse_padding=True)
        names = metric_fields(record)
        for name in names:
            table.add_column(name, justify="right", min_width=max(len(name), MIN_WIDTH.get(name, 0)))
        table.add_row(*("-" if record[name] is None else COLUMNS[name].format(record[name]) for name in names))
        self.console.print(table)
        self.rows_printed += 1

    def final_lines(self, record: dict[str, Any], examples_per_s: float, devices: list[str]) -> None:
        """The book's closing lines, in its format."""
        tta = f" (with flip tta {record['test_acc_tta']:.3f})" if "test_acc_tta" in record else ""
        tta += f" (ema {record['test_acc_ema']:.3f})" if record.get("test_acc_ema") is not None else ""
        self.console.print(f"loss {record['train_loss']:.3f}, train acc {record['train_acc']:.3f}, "
                           f"test acc {record['test_acc']:.3f}{tta}")
        self.console.print(f"{examples_per_s:.1f} examples/sec on {devices}", highlight=False)

    def note(self, message: str) -> None:
        self.stop_progress()
        self.console.print(message, highlight=False, soft_wrap=True)  # unwrapped: users copy commands out of notes
