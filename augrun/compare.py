"""Compare the runs of a sweep: group by overrides (seeds pooled), mean ± std per group, difference to ``aug=none``.

Reads only the run-directory contract (``metrics.jsonl``, ``summary.json``, ``.hydra/overrides.yaml``), so it works
on finished sweeps (``augrun compare``) and at the end of one (the ``SweepReport`` Hydra callback). No torch import:
a report must be quick and must not need a GPU stack.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from matplotlib.figure import Figure
from omegaconf import DictConfig, OmegaConf
from rich import box
from rich.console import Console
from rich.table import Table

from augrun import rundir
from augrun.curves import integer_epochs, save_figure
from augrun.files import write_text_atomic
from augrun.errors import printable

BASELINE_KEY, BASELINE_VALUE = "aug", "none"
SEED_KEY = "seed"
ALL_LABEL = "all"  # label when every run has the same overrides
DEFAULTS_LABEL = "defaults"  # a group that sets none of the overrides its neighbours vary

# Per-run numbers that get a mean ± std per group, in table order.
METRICS = ("test_acc", "best_test_acc", "train_acc", "gap", "loss", "examples_per_s")
CSV_COLUMNS = (
    "group", "n_seeds", "n_failed",
    "test_acc_mean", "test_acc_std", "best_test_acc_mean", "best_test_acc_std", "train_acc_mean", "train_acc_std",
    "gap_mean", "gap_std", "loss_mean", "loss_std", "examples_per_s_mean", "delta_vs_none", "within_noise",
)  # fmt: skip
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


# The fields compare reads, as the trainer writes them (augrun.report.METRIC_FIELDS). A record that breaks this schema
# makes its run damaged, listed with the failed runs, so that one bad file never stops the comparison of the others.
# Fields not named here are not read, and not checked: a newer trainer's extra fields still compare.
METRICS_ROW_FIELDS = {
    "epoch": Number(required=True, integer=True), "train_loss": Number(finite=False), "train_acc": Number(),
    "test_acc": Number(nullable=True), "test_acc_tta": Number(nullable=True), "lr": Number(),
    "seconds": Number(finite=False), "examples_per_s": Number(finite=False),
}  # fmt: skip
SUMMARY_FIELDS = {"best_test_acc": Number(nullable=True), "examples_per_s": Number(nullable=True, finite=False)}
SUMMARY_FINAL_FIELDS = {name: METRICS_ROW_FIELDS[name] for name in ("train_loss", "train_acc", "test_acc", "test_acc_tta")}
OUT_VALID = "valid: --out DIR naming a directory that can be written (made if missing)"


def table_console() -> Console:
    """A console for the wide comparison table: rich would fold it into 80 columns when output goes to a file or pipe."""
    console = Console()
    return console if console.is_terminal else Console(width=160)


class CompareError(ValueError):
    """Bad input to the comparison (no runs where runs were expected); the message is one line for the user."""


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
        return self.status == "completed" and self.error is None

    @property
    def values(self) -> dict[str, float | None]:
        """The run's final numbers, from summary.json, falling back to the last epoch row for anything it lacks."""
        final = {**(self.epochs[-1] if self.epochs else {}), **(self.summary.get("final") or {})}
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


@dataclass(frozen=True)
class Stat:
    mean: float | None  # None when no completed run has the value
    std: float | None  # sample std (ddof=1); None with fewer than two values


@dataclass
class Group:
    label: str
    key: dict[str, str]  # the overrides that tell this group apart from the others
    runs: list[RunResult]
    stats: dict[str, Stat] = field(default_factory=dict)
    baseline: str | None = None  # label of the aug=none group this one is compared with
    delta_vs_none: float | None = None  # mean final test acc minus the baseline's
    within_noise: bool | None = None  # None when there is no baseline or no noise estimate (one seed)
    note: str = ""

    @property
    def completed(self) -> list[RunResult]:
        return [r for r in self.runs if r.ok]

    @property
    def failed(self) -> list[RunResult]:
        return [r for r in self.runs if not r.ok]


@dataclass
class Report:
    groups: list[Group]
    failed: list[RunResult]
    files: list[Path] = field(default_factory=list)  # written by write_report


# ---------------------------------------------------------------- finding and loading runs


def _natural_key(text: str) -> list[Any]:
    # Job directories are 0, 1, ..., 10: numeric order, not string order (which puts 10 before 2).
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def find_runs(paths: list[Path]) -> list[Path]:
    """Run directories in ``paths``: a path with ``.hydra/`` is a run, otherwise every run below it (a sweep root)."""
    runs: list[Path] = []
    for path in map(Path, paths):
        if not path.is_dir():
            problem = "is not a directory" if path.exists() else "does not exist"
            raise CompareError(f"{printable(path)} {problem}: expected a Hydra sweep root or a run directory")
        if (path / rundir.CONFIG_DIR).is_dir():
            runs.append(path)
            continue
        # rglob, not only the direct children: hydra.sweep.subdir may nest job directories (e.g. aug=x/seed=y).
        found = sorted((p.parent for p in path.rglob(rundir.CONFIG_DIR) if p.is_dir()), key=lambda p: _natural_key(str(p)))
        if not found:
            raise CompareError(
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
        raise CompareError(f"unreadable {printable(path)}: {_one_line(_reason(e))}") from None


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
    if run.error is None and status != "completed":
        planned = summary.get("epochs", "?")
        run.error = _one_line(summary.get("error") or f"{status} after {len(run.epochs)} of {planned} epochs")
    elif run.error is None and run.values["test_acc"] is None:
        run.error = "completed, but no final test accuracy in summary.json or metrics.jsonl"
    return run


# ---------------------------------------------------------------- grouping and statistics


def _label(key: dict[str, str], all_same: bool) -> str:
    if all_same:
        return ALL_LABEL
    parts = [k if k.startswith("~") and not v else f"{k}={v}" for k, v in sorted(key.items())]
    return " ".join(parts) or DEFAULTS_LABEL


def _varying_keys(runs: list[RunResult]) -> list[str]:
    """Override keys whose value differs between runs (a key missing from some runs differs too)."""
    keys = sorted({k for r in runs for k in r.overrides})
    return [k for k in keys if len({r.overrides.get(k) for r in runs}) > 1]


def _stat(values: list[float]) -> Stat:
    if not values:
        return Stat(None, None)
    return Stat(statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None)


def _group_stats(runs: list[RunResult]) -> dict[str, Stat]:
    done = [r.values for r in runs if r.ok]
    return {m: _stat([v[m] for v in done if v[m] is not None]) for m in METRICS}


def _compare_to_baseline(group: Group, base: Group) -> None:
    """Fill delta, noise flag and note: the difference is within noise when |diff| < 2 * SE of the difference."""
    a, b = group.stats["test_acc"], base.stats["test_acc"]
    if b.mean is None and a.mean is not None:
        group.note = f"{group.label}: no completed {base.label} run to compare with"
    if a.mean is None or b.mean is None:
        return
    group.baseline, group.delta_vs_none = base.label, a.mean - b.mean
    head = f"{group.label}: test acc {group.delta_vs_none:+.4f} vs {base.label}"
    if a.std is None or b.std is None:
        # One seed has no spread estimate, so no difference can be called noise or signal.
        group.note = f"{head}; 1 seed: no noise estimate"
        return
    se = math.sqrt(a.std**2 / len(group.completed) + b.std**2 / len(base.completed))
    group.within_noise = abs(group.delta_vs_none) < 2 * se
    group.note = f"{head} ({'within noise' if group.within_noise else 'beyond noise'}: 2·SE = {2 * se:.4f})"


def group_runs(runs: list[RunResult]) -> list[Group]:
    """Group runs by their overrides other than the seed, sorted by label; each compared with its aug=none twin."""
    varying = _varying_keys(runs)
    by_key: dict[tuple[tuple[str, str], ...], list[RunResult]] = {}
    for run in runs:
        key = tuple((k, run.overrides[k]) for k in varying if k in run.overrides)
        by_key.setdefault(key, []).append(run)
    groups = [Group(_label(dict(k), not varying), dict(k), rs, _group_stats(rs)) for k, rs in by_key.items()]
    groups.sort(key=lambda g: _natural_key(g.label))
    # The baseline of "aug=flip optim=sgd" is "aug=none optim=sgd": only the augmentation changes.
    by_label = {g.label: g for g in groups}
    for group in groups:
        if BASELINE_KEY in group.key and group.key[BASELINE_KEY] != BASELINE_VALUE:
            base = by_label.get(_label({**group.key, BASELINE_KEY: BASELINE_VALUE}, False))
            if base is not None:
                _compare_to_baseline(group, base)
    return groups


def build_report(runs: list[RunResult]) -> Report:
    groups = group_runs(runs)
    return Report(groups, [r for g in groups for r in g.failed])


# ---------------------------------------------------------------- output


def _fmt_stat(stat: Stat, digits: int) -> str:
    if stat.mean is None:
        return "-"
    # No spaces around ±: ten columns must fit a terminal (the CSV keeps the full precision).
    return f"{stat.mean:.{digits}f}±{'-' if stat.std is None else f'{stat.std:.{digits}f}'}"


def _fmt_delta(group: Group) -> str:
    if group.delta_vs_none is None:
        return "baseline" if group.key.get(BASELINE_KEY) == BASELINE_VALUE else ""
    tag = {True: " (noise)", False: "", None: " (1 seed)"}[group.within_noise]
    return f"{group.delta_vs_none:+.3f}{tag}"


# Short headers so that ten columns fit an 80-column terminal; the markdown explains gap and Δ below the table.
TABLE_HEADERS = (
    "group", "seeds", "failed", "test acc", "best test", "train acc", "gap", "loss", "img/s", "Δ vs none",
)  # fmt: skip


def _table_rows(report: Report) -> list[list[str]]:
    """The human table (markdown and console share it): mean ± sample std over completed seeds."""
    digits = {"examples_per_s": 0}  # the rest at 3 decimals, as the book prints accuracies
    return [
        [g.label, str(len(g.completed)), str(len(g.failed))]
        + [_fmt_stat(g.stats[m], digits.get(m, 3)) for m in METRICS]
        + [_fmt_delta(g)]
        for g in report.groups
    ]


def _failed_lines(report: Report) -> list[str]:
    return [f"{g.label} seed {r.seed} ({r.status}): {r.error} [{printable(r.path)}]"
            for g in report.groups for r in g.failed]


def _notes(report: Report) -> list[str]:
    return [g.note for g in report.groups if g.note]


def _markdown(report: Report) -> str:
    md = ["# Comparison", "", "| " + " | ".join(TABLE_HEADERS) + " |", "|" + "---|" * len(TABLE_HEADERS)]
    # A "|" in an override value (e.g. a list) would split the markdown cell.
    md += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in _table_rows(report)]
    md += [
        "",
        "Mean ± sample std (ddof=1) over completed seeds; `-` where one seed gives no spread. "
        "best test = best test acc of any epoch; gap = final train acc - final test acc (overfitting); "
        "Δ vs none = mean final test acc minus that of the aug=none group with the same other overrides, "
        "within noise, marked (noise), when |Δ| < 2·sqrt(s1²/n1 + s2²/n2).",
        "",
        "## Failed jobs",
        "",
    ]
    md += [f"- {line}" for line in _failed_lines(report)] or ["none"]
    md += ["", "## Noise", ""]
    md += [f"- {line}" for line in _notes(report)] or ["no aug=none group to compare with"]
    return "\n".join(md) + "\n"


def _num(value: float | None) -> str:
    # 6 significant digits: enough for accuracies, stable across platforms, so equal inputs give equal files.
    return "" if value is None else f"{value:.6g}"


def _csv(report: Report) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for g in report.groups:
        s = g.stats
        writer.writerow(
            [g.label, len(g.completed), len(g.failed)]
            + [_num(x) for m in METRICS[:-1] for x in (s[m].mean, s[m].std)]
            + [_num(s["examples_per_s"].mean), _num(g.delta_vs_none)]
            + ["" if g.within_noise is None else str(g.within_noise).lower()]
        )
    return buf.getvalue()


def _mean_curve(runs: list[RunResult], key: str) -> tuple[list[int], list[float], list[float]]:
    """Per epoch: mean and sample std over the runs that reached it (std 0 with one run: no band)."""
    by_epoch: dict[int, list[float]] = {}
    for run in runs:
        for row in run.epochs:
            if row.get(key) is not None and row.get("epoch") is not None:
                by_epoch.setdefault(int(row["epoch"]), []).append(float(row[key]))
    epochs = sorted(by_epoch)
    stats = [_stat(by_epoch[e]) for e in epochs]
    return epochs, [s.mean for s in stats], [s.std or 0.0 for s in stats]


def _figure(report: Report) -> Figure:
    fig = Figure(figsize=(10, 4))
    # One y scale for both panels, so the train-test gap (overfitting, what augmentation should shrink) reads directly.
    axes = fig.subplots(1, 2, sharey=True)
    panels = (("test_acc", "test accuracy"), ("train_acc", "train accuracy"))
    for ax, (key, name) in zip(axes, panels):
        for j, group in enumerate(report.groups):
            epochs, mean, std = _mean_curve(group.completed, key)
            if not epochs:
                continue
            color = f"C{j % 10}"  # fixed per group order, so both panels and reruns use the same colours
            ax.plot(epochs, mean, color=color, label=f"{group.label} (n={len(group.completed)})",
                    marker="o" if len(epochs) == 1 else None)  # fmt: skip
            # Band: ± one sample std over seeds, the same spread the table reports (min/max would widen with n).
            ax.fill_between(epochs, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)],
                            color=color, alpha=0.2, linewidth=0)  # fmt: skip
        integer_epochs(ax)
        ax.set_title(f"{name} (mean ± std over seeds)", fontsize="medium")
        ax.grid(True)
        if ax.lines:
            ax.legend(fontsize="small")
        else:
            ax.text(0.5, 0.5, "no completed runs", ha="center", va="center", transform=ax.transAxes)
    axes[0].set_ylabel("accuracy")  # shared by both panels; the titles tell them apart
    # Fixed margins for the fixed figure size: tight_layout would measure every label, a third of the drawing time.
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.13, top=0.92, wspace=0.08)
    return fig


def write_report(runs: list[RunResult], out_dir: Path) -> Report:
    """Write comparison.md, comparison.csv and comparison.png to ``out_dir``; the same runs give the same files."""
    out_dir = Path(out_dir)
    report = build_report(runs)
    md, csv_path, png = out_dir / "comparison.md", out_dir / "comparison.csv", out_dir / "comparison.png"
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(md, _markdown(report))
        write_text_atomic(csv_path, _csv(report))
        save_figure(_figure(report), png)
    except OSError as e:  # a full disk, a read-only file system: what _check_out_dir cannot see in advance
        raise CompareError(f"cannot write the report into {printable(out_dir)} ({_one_line(_reason(e))}); "
                           f"{OUT_VALID}") from None
    report.files = [md, csv_path, png]
    return report


def print_report(report: Report, console: Console) -> None:
    table = Table(title="Comparison (mean±std over seeds)", box=box.SIMPLE_HEAD)
    for i, header in enumerate(TABLE_HEADERS):
        # fold, not rich's default ellipsis: on a narrow terminal a number wraps instead of losing digits.
        table.add_column(header, justify="left" if i == 0 else "right", overflow="fold")
    for row in _table_rows(report):
        table.add_row(*row)
    console.print(table)
    for line in _failed_lines(report):
        console.print(line, style="red", highlight=False, markup=False, soft_wrap=True)
    for line in _notes(report):
        console.print(line, highlight=False, markup=False, soft_wrap=True)
    if report.files:
        written = ", ".join(str(p) for p in report.files)
        console.print(f"wrote {written}", highlight=False, markup=False, soft_wrap=True)


def compare_paths(paths: list[Path], out_dir: Path, console: Console | None = None) -> Report:
    """The whole ``augrun compare``: find, load, write to ``out_dir``, and print when given a console."""
    report = write_report([load_run(p) for p in find_runs(paths)], out_dir)
    if console is not None:
        print_report(report, console)
    return report


COMPARE_USAGE = """usage: augrun compare PATH [PATH ...] [--out DIR]

PATH: a sweep root (outputs/multirun/<date>/<time>) or run directories. Writes comparison.md, .csv and .png to DIR,
by default to PATH itself when there is one PATH."""


def _parse_compare_args(argv: list[str]) -> tuple[list[Path], Path]:
    paths: list[Path] = []
    out: Path | None = None
    args = iter(argv)
    for arg in args:
        if arg == "--out" or arg.startswith("--out="):
            value = arg.partition("=")[2] if "=" in arg else _option_value(next(args, ""))
            if not value:
                raise CompareError(f"--out: no directory given; {OUT_VALID}, e.g. augrun compare PATH --out DIR")
            out = Path(value)
        elif arg.startswith("-"):
            raise CompareError(f"{printable(arg)}: unknown option of augrun compare; valid: --out DIR, --help")
        else:
            paths.append(Path(arg))
    if not paths:
        raise CompareError("no PATH given: augrun compare outputs/multirun/<date>/<time> [--out DIR]")
    if out is None and len(paths) > 1:
        raise CompareError(f"{len(paths)} paths given: name the report directory with --out DIR")
    if out is not None:
        _check_out_dir(out)
    return paths, out or paths[0]


def _option_value(arg: str) -> str:
    # "--out --bogus" is a forgotten directory, not a directory named --bogus (--out=-dir names one)
    return "" if arg.startswith("-") else arg


def _check_out_dir(out: Path) -> None:
    """Refuse, before any run is read, an --out that cannot become a directory the report is written to."""
    # os.path.exists, not Path.exists: False, not PermissionError, inside a directory that cannot be searched
    existing = next((p for p in (out, *out.parents) if os.path.exists(p)), None)  # "." or "/" at the latest
    if existing is None:
        return  # the working directory is gone: writing will say so
    if existing == out and not out.is_dir():
        raise CompareError(f"--out: {printable(out)} is a file; {OUT_VALID}")
    if not existing.is_dir():
        raise CompareError(f"--out: {printable(out)} is inside {printable(existing)}, which is a file; {OUT_VALID}")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise CompareError(f"--out: {printable(existing)} is not writable; {OUT_VALID}")


def compare_command(argv: list[str]) -> None:
    """``augrun compare``: bad input is one line on stderr and exit status 2, as everywhere in augrun."""
    from augrun.errors import fail

    if any(arg in ("-h", "--help") for arg in argv):
        print(COMPARE_USAGE)
        return
    try:
        paths, out = _parse_compare_args(argv)
        compare_paths(paths, out, table_console())
    except CompareError as e:  # one line already, naming its paths with printable
        fail(str(e))
    except OSError as e:  # a run directory vanishing or unreadable while it is read
        fail(_one_line(e))


# ---------------------------------------------------------------- Hydra callback


def _sweep_root(config: DictConfig) -> Path:
    root = Path(str(config.hydra.sweep.dir))
    # A relative sweep dir is relative to where Hydra was started, not to a job's cwd (hydra.job.chdir may move it).
    cwd = OmegaConf.select(config, "hydra.runtime.cwd")
    return root if root.is_absolute() or not cwd else Path(cwd) / root


class SweepReport(Callback):
    """Writes and prints the comparison at the sweep root when a multirun ends. Register it in the Hydra config::

        hydra:
          callbacks:
            sweep_report:
              _target_: augrun.compare.SweepReport

    It also rewrites the files (silently) after every job, so the comparison grows while a long sweep runs and is
    there when on_multirun_end never comes: a sweep stopped with Ctrl-C or by a cluster's time limit, or a job that
    raises (Hydra's basic sweeper re-raises it once the batch is done and skips on_multirun_end).
    """

    # Failed jobs of the last report in this process: `augrun train -m` exits non-zero when there are any, also when
    # a parallel launcher ran the jobs in other processes. (Consoles are made per call: launchers pickle callbacks.)
    failed_jobs: list[str] = []

    def _report(self, config: DictConfig, console: Console | None) -> None:
        # Never raise: the jobs' results are already on disk; a broken report must not turn a sweep into a traceback.
        try:
            root = _sweep_root(config)
            report = compare_paths([root], root, console)
            SweepReport.failed_jobs = [str(run.path) for run in report.failed]
        except Exception as e:  # noqa: BLE001 - any failure is reported as one line
            message = f"augrun: no sweep comparison written: {_one_line(e)}"
            Console(stderr=True).print(message, highlight=False, markup=False, soft_wrap=True)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._report(config, table_console())

    def on_job_end(self, config: DictConfig, job_return: Any = None, **kwargs: Any) -> None:
        if OmegaConf.select(config, "hydra.mode") == RunMode.MULTIRUN:
            self._report(config, None)
