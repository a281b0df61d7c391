"""What the Python API returns: a run, a sweep and a comparison, read back from their directories with the same
readers as `augrun compare` (augrun.compare), so that a notebook sees exactly what the files and the report say.

No torch import: reading results needs no GPU stack. Figures are bare matplotlib Figures (no pyplot), which Jupyter
shows inline when they are a cell's value.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from augrun import rundir
from augrun.compare import RunResult, build_report, find_runs, load_run
from augrun.compare.render import comparison_figure, comparison_markdown, comparison_rows
from augrun.compare.runs import counts_as_completed, final_numbers
from augrun.compare.stats import Report
from augrun.errors import CompareError, printable
from augrun.report.curves import curves_figure

REPORT_FILES = ("comparison.md", "comparison.csv", "comparison.png", "search.png")


class Records(list):
    """Rows of numbers, a dict per row (a run's epochs as in metrics.jsonl, a comparison's groups as in its CSV)."""

    def to_pandas(self):
        """The rows as a pandas DataFrame, a column per key. pandas is optional: augrun itself does not need it."""
        try:
            import pandas
        except ImportError:
            raise ModuleNotFoundError("to_pandas() needs pandas, which augrun does not install: pip install pandas",
                                      name="pandas") from None
        return pandas.DataFrame(list(self))


@dataclass
class Run:
    """One run directory: its summary.json, its metrics.jsonl rows, and how it ended."""
    dir: Path
    status: str                     # completed, stopped or failed (summary.json's status)
    summary: dict[str, Any]
    metrics: Records                # one dict per epoch, as metrics.jsonl
    overrides: dict[str, str]       # the command line's overrides, the seed apart
    seed: int | str | None
    error: str | None               # why the run does not count as completed, in one line; None when it does

    @classmethod
    def load(cls, path: str | Path) -> Run:
        path = Path(path).absolute()
        if not (path / rundir.CONFIG_DIR).is_dir():
            raise CompareError("", f"{printable(path)} is not a run directory: expected one with {rundir.CONFIG_DIR}/ "
                               "(outputs/<date>/<time>, or a sweep's job)")
        return cls.from_result(load_run(path))

    @classmethod
    def from_result(cls, result: RunResult) -> Run:
        return cls(Path(result.path).absolute(), result.status, result.summary, Records(result.epochs),
                   result.overrides, result.seed, result.error)

    @property
    def ok(self) -> bool:
        return counts_as_completed(self.status, self.error)  # as `augrun compare` counts it

    @property
    def final(self) -> dict[str, Any]:
        """The final numbers as the book prints them: train loss, train acc, test acc (and test acc with TTA), each
        from summary.json, else from the last epoch, exactly as `augrun compare` reports them."""
        return final_numbers(self.summary, list(self.metrics))

    def curves(self) -> Figure:
        """The book's plot: train loss, train acc and test acc against epoch (the run's curves.png)."""
        return curves_figure(list(self.metrics), epochs=self.summary.get("epochs") or None)

    def __repr__(self) -> str:
        numbers = ", ".join(f"{key} {value:.3f}" for key, value in self.final.items()
                            if key in ("train_acc", "test_acc") and value is not None)
        return f"Run({_shown(self.dir)!r}, {self.status}, {len(self.metrics)} epochs{', ' + numbers if numbers else ''})"


@dataclass
class Comparison:
    """The comparison of a sweep's (or any) runs: groups by overrides, seeds pooled, as comparison.md/.csv say."""
    report: Report
    rows: Records                   # one dict per group, the keys of comparison.csv, numbers as numbers
    files: list[Path] = field(default_factory=list)  # the report files written, where there are any

    @classmethod
    def of(cls, report: Report) -> Comparison:
        return cls(report, Records(comparison_rows(report)), list(report.files))

    def figure(self) -> Figure:
        """Test and train accuracy against epoch, mean ± std over seeds per group (comparison.png)."""
        return comparison_figure(self.report)

    def to_pandas(self):
        return self.rows.to_pandas()

    def _repr_markdown_(self) -> str:  # Jupyter shows the table as comparison.md has it
        return comparison_markdown(self.report)

    def __repr__(self) -> str:
        return f"Comparison({', '.join(row['group'] for row in self.rows)})"


@dataclass
class Sweep:
    """A sweep's root: its jobs as runs (in job order) and their comparison."""
    dir: Path
    runs: list[Run]
    comparison: Comparison

    @classmethod
    def load(cls, path: str | Path) -> Sweep:
        path = Path(path).absolute()
        results = [load_run(job) for job in find_runs([path])]
        report = build_report(results)  # the files at the root say the same (the sweep's callback wrote them)
        report.files = [path / name for name in REPORT_FILES if (path / name).is_file()]
        return cls(path, [Run.from_result(result) for result in results], Comparison.of(report))

    @property
    def failed(self) -> list[Run]:
        """Jobs that did not complete (stopped ones included)."""
        return [run for run in self.runs if not run.ok]

    def __repr__(self) -> str:
        return f"Sweep({_shown(self.dir)!r}, {len(self.runs)} runs, {len(self.failed)} not completed)"


def load(path: str | Path) -> Run | Sweep:
    """A run directory as a Run; a sweep's root (or any folder of runs) as a Sweep."""
    path = Path(path)
    if (path / rundir.CONFIG_DIR).is_dir():
        return Run.load(path)
    return Sweep.load(path)


def _shown(path: Path) -> str:
    """A directory as the command line names it: relative to the working directory when it is below it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)
