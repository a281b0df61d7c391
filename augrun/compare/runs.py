"""Reading runs back for a comparison: find the run directories under a path, and load each one's overrides, seed,
per-epoch metrics and summary, checked against the schema of what the trainer writes. A damaged run is a RunResult
with an error (listed with the failed runs), never an exception: one bad file must not stop the comparison of the rest.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from augrun import environment, rundir
from augrun.errors import CompareError, printable
from augrun.report.metrics_files import FINAL_NUMBERS

SEED_KEY = "seed"
MAX_ERROR_CHARS = 200


@dataclass(frozen=True)
class Number:
    """What one numeric field of metrics.jsonl or summary.json must hold for compare to use it."""

    required: bool = False  # a record without it is damaged
    nullable: bool = False  # null is a value: test_acc of an epoch without evaluation (trainer.eval_every)
    finite: bool = True  # NaN and inf are values: a diverged run's loss, which json.dumps writes as NaN
    integer: bool = False

    def describe(self) -> str:
        kind = "an integer" if self.integer else "a finite number" if self.finite else "a number"
        return kind + (" or null" if self.nullable else "")

    def accepts(self, value: Any) -> bool:
        if value is None:
            return self.nullable
        if isinstance(value, bool) or not isinstance(value, int if self.integer else (int, float)):
            return False
        try:
            return math.isfinite(float(value)) or not self.finite
        except OverflowError:  # an integer of hundreds of digits: no statistic or plot can use it
            return False


# The fields compare reads, as the trainer writes them (augrun.report.console.METRIC_FIELDS). A record that breaks this schema
# makes its run damaged, listed with the failed runs, so that one bad file never stops the comparison of the others.
# Fields not named here are not read, and not checked: a newer trainer's extra fields still compare.
METRICS_ROW_FIELDS = {
    "epoch": Number(required=True, integer=True), "train_loss": Number(finite=False), "train_acc": Number(),
    "test_acc": Number(nullable=True), "test_acc_tta": Number(nullable=True),
    "test_acc_ema": Number(nullable=True), "lr": Number(),
    "seconds": Number(finite=False), "examples_per_s": Number(finite=False),
}  # fmt: skip
SUMMARY_FIELDS = {"best_test_acc": Number(nullable=True), "examples_per_s": Number(nullable=True, finite=False)}
SUMMARY_FINAL_FIELDS = {name: METRICS_ROW_FIELDS[name] for name in FINAL_NUMBERS}
COMPLETED = "completed"


def counts_as_completed(status: str, error: str | None) -> bool:
    """Whether a run is a completed seed: summary.json says it completed, and reading it back found nothing wrong."""
    return status == COMPLETED and error is None


def final_numbers(summary: dict[str, Any], epochs: list[dict[str, Any]]) -> dict[str, Any]:
    """A run's final numbers (summary.json's `final` fields: train loss, train and test acc, test acc with TTA), each
    from summary.json, else from the last epoch row: a run killed before it wrote summary.json, or whose summary.json
    is damaged, still shows its last epoch's numbers. The one rule for both `augrun compare` and the Python API."""
    last = epochs[-1] if epochs else {}
    final = summary.get("final") or {}
    return {name: final[name] if name in final else last[name]
            for name in SUMMARY_FINAL_FIELDS if name in final or name in last}


@dataclass
class RunResult:
    path: Path
    overrides: dict[str, str]  # command-line overrides without the seed, e.g. {"aug": "none", "experiment": "smoke"}
    seed: int | str | None
    status: str  # summary.json's status; "failed" when there is no summary.json
    epochs: list[dict[str, Any]]  # metrics.jsonl rows
    summary: dict[str, Any]
    error: str | None  # one line; set whenever the run cannot be counted as a completed seed

    @property
    def ok(self) -> bool:
        return counts_as_completed(self.status, self.error)

    @property
    def values(self) -> dict[str, float | None]:
        """The numbers a comparison reports: the final ones (final_numbers), the best test acc, the gap, the rate."""
        final = final_numbers(self.summary, self.epochs)
        tests = [r["test_acc"] for r in self.epochs if r.get("test_acc") is not None]
        best = self.summary.get("best_test_acc")
        train_acc, test_acc = final.get("train_acc"), final.get("test_acc")
        return {
            "test_acc": test_acc,
            "best_test_acc": best if best is not None else max(tests, default=None),
            "train_acc": train_acc,
            "gap": None if train_acc is None or test_acc is None else train_acc - test_acc,
            "loss": final.get("train_loss"),
            "examples_per_s": self.summary.get("examples_per_s"),
        }


def _natural_key(text: str) -> list[Any]:
    # Job directories are 0, 1, ..., 10: numeric order, not string order (which puts 10 before 2).
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def find_runs(paths: list[Path]) -> list[Path]:
    """Run directories in ``paths``: a path with ``.hydra/`` is a run, otherwise every run below it (a sweep root)."""
    runs: list[Path] = []
    for path in map(Path, paths):
        if not path.is_dir():
            problem = "is not a directory" if path.exists() else "does not exist"
            raise CompareError("", f"{printable(path)} {problem}: expected a Hydra sweep root or a run directory")
        if (path / rundir.CONFIG_DIR).is_dir():
            runs.append(path)
            continue
        # rglob, not only the direct children: hydra.sweep.subdir may nest job directories (e.g. aug=x/seed=y).
        found = sorted((p.parent for p in path.rglob(rundir.CONFIG_DIR) if p.is_dir()), key=lambda p: _natural_key(str(p)))
        if not found:
            raise CompareError(
                "",
                f"no runs in {printable(path)}: expected a Hydra sweep root (job directories 0, 1, ... with .hydra/) "
                "or a run directory with .hydra/"
            )
        runs.extend(found)
    return list(dict.fromkeys(runs))  # a run named twice (root and job) is compared once


def _one_line(text: str) -> str:
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    line = lines[0] if lines else "unknown error"
    return line if len(line) <= MAX_ERROR_CHARS else line[: MAX_ERROR_CHARS - 3] + "..."


def _split_override(text: str) -> tuple[str, str]:
    # "~aug.train.X" (a deletion) has no value; keep the key with its +/~ prefix so the label shows what was typed.
    key, _, value = str(text).partition("=")
    return key, value


def _read_yaml(path: Path) -> Any:
    """The file's content, None when it does not exist. Hydra wrote it, so unreadable YAML is bad input (CompareError),
    not a failed run."""
    if not path.is_file():
        return None
    try:
        return yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError, OSError) as e:
        raise CompareError("", f"unreadable {printable(path)}: {_one_line(_reason(e))}") from None


def _reason(error: Exception) -> str:
    # an OSError's str repeats the path; its strerror does not
    return (error.strerror if isinstance(error, OSError) else None) or str(error)


# overrides that say how a run was executed, not what was trained: they never split a group
RUN_ONLY_KEYS = ("resume", "trainer.progress_updates")


def _read_overrides(path: Path) -> dict[str, str]:
    items = _read_yaml(path)
    pairs = (_split_override(item) for item in items) if isinstance(items, list) else ()
    return {key: value for key, value in pairs if key.lstrip("+") not in RUN_ONLY_KEYS}


def _pop_seed(overrides: dict[str, str], config_path: Path) -> int | str | None:
    for key in list(overrides):
        if key.lstrip("+") == SEED_KEY:
            value = overrides.pop(key)
            return int(value) if re.fullmatch(r"-?\d+", value) else value
    # Not overridden: the seed the job actually used is in its resolved config.
    config = _read_yaml(config_path)
    return config.get(SEED_KEY) if isinstance(config, dict) else None


def _schema_problem(record: Any, fields: dict[str, Number]) -> str | None:
    """Why ``record`` does not hold the numbers ``fields`` describe, in a few words; None when it does."""
    if not isinstance(record, dict):
        return f"{_shown(record)} is not an object; valid: an object of numbers such as {{\"epoch\": 1, ...}}"
    for name, spec in fields.items():
        if name not in record:
            if spec.required:
                return f"no {name}; valid: {name} holding {spec.describe()}"
        elif not spec.accepts(record[name]):
            return f"{name} is {_shown(record[name])}; valid: {spec.describe()}"
    return None


def _shown(value: Any) -> str:
    # as JSON, the way the file spells it (null, "abc"); json.dumps escapes control characters, so it stays one line
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _read_metrics(path: Path) -> tuple[list[dict[str, Any]], str | None]:
    """metrics.jsonl's rows, and why the file is damaged (None when it is not). A missing file is no rows and no
    damage: summary.json says why the run has none."""
    if not path.is_file():
        return [], None
    try:
        lines = path.read_text(encoding="utf-8").split("\n")
    except (OSError, UnicodeDecodeError) as e:
        return [], f"unreadable metrics.jsonl: {_one_line(_reason(e))}"
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except (json.JSONDecodeError, RecursionError) as e:  # RecursionError: thousands of nested brackets
            if number == len(lines):
                continue  # no newline after it: a job killed mid-write tore its last line; earlier epochs are valid
            return rows, f"damaged metrics.jsonl line {number}: not JSON ({getattr(e, 'msg', type(e).__name__)})"
        problem = _schema_problem(row, METRICS_ROW_FIELDS)
        if problem:
            return rows, f"damaged metrics.jsonl line {number}: {problem}"
        rows.append(row)
    return rows, None


def _read_summary(path: Path) -> tuple[dict[str, Any], str | None]:
    if not path.is_file():
        return {}, "no summary.json"
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError, OSError) as e:
        return {}, f"unreadable summary.json: {_one_line(_reason(e))}"
    problem = _schema_problem(summary, SUMMARY_FIELDS)
    if problem is None and summary.get("final") is not None:
        problem = _schema_problem(summary["final"], SUMMARY_FINAL_FIELDS)
        problem = problem and f"final: {problem}"
    return (summary, None) if problem is None else ({}, f"damaged summary.json: {problem}")


def load_run(run_dir: Path) -> RunResult:
    """Read one run directory. A broken run is not an exception (``error`` says why it failed); only a .hydra/ file
    that is not YAML raises CompareError."""
    run_dir = Path(run_dir)
    overrides = _read_overrides(run_dir / rundir.CONFIG_DIR / rundir.OVERRIDES)
    seed = _pop_seed(overrides, run_dir / rundir.CONFIG_DIR / rundir.CONFIG)
    summary, error = _read_summary(run_dir / rundir.SUMMARY)
    epochs, damage = _read_metrics(run_dir / rundir.METRICS)
    status = str(summary.get("status", "failed"))
    run = RunResult(run_dir, overrides, seed, status, epochs, summary, error or damage)
    if run.error is None and status != COMPLETED:
        planned = summary.get("epochs", "?")
        run.error = _one_line(summary.get("error") or f"{status} after {len(run.epochs)} of {planned} epochs")
    elif run.error is None and run.values["test_acc"] is None:
        run.error = "completed, but no final test accuracy in summary.json or metrics.jsonl"
    return run


def environment_warning(runs: list[RunResult]) -> str | None:
    """Why the runs' timings (img/s) cannot be compared, when they ran on different devices or library versions; runs
    written before summary.json had an environment block are left out of the check."""
    blocks = [run.summary["environment"] for run in runs if isinstance(run.summary.get("environment"), dict)]
    difference = environment.difference(blocks)
    return difference and f"the runs compared ran on different {difference}: timings are not comparable"
