"""The comparison of a search (a sweeper that picks values as it goes, such as Optuna): every trial has values of its own,
so instead of seed groups it lists the trials best first and plots each searched parameter against test accuracy."""
from __future__ import annotations

import math
from pathlib import Path

import yaml
from matplotlib.figure import Figure

from augrun import rundir
from augrun.compare.runs import RunResult
from augrun.errors import printable
from augrun.report.curves import save_figure


def is_search(runs: list[RunResult]) -> bool:
    """Whether these runs are the trials of a searching sweeper, read from the Hydra config each job saved (a sweeper
    other than the basic one need not write the sweep root's multirun.yaml)."""
    if not runs:
        return False
    try:
        config = yaml.safe_load((runs[0].path / rundir.CONFIG_DIR / rundir.HYDRA_CONFIG).read_text())
        target = config["hydra"]["sweeper"]["_target_"]
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return False
    return target != rundir.BASIC_SWEEPER


def searched_keys(runs: list[RunResult]) -> list[str]:
    """Override keys whose value differs across the trials: the searched parameters."""
    keys = sorted({key for run in runs for key in run.overrides})
    return [key for key in keys if len({run.overrides.get(key) for run in runs}) > 1]


def numeric_keys(runs: list[RunResult]) -> list[str]:
    """The searched parameters that hold a number in every trial: those that can be plotted."""
    return [key for key in searched_keys(runs) if all(_number(run.overrides.get(key)) is not None for run in runs)]


def ranked(runs: list[RunResult]) -> list[RunResult]:
    """Completed trials by final test accuracy, best first; failed ones after them."""
    done = sorted((r for r in runs if r.ok), key=lambda r: -r.values["test_acc"])
    return done + [r for r in runs if not r.ok]


def markdown(runs: list[RunResult]) -> str:
    keys = searched_keys(runs)
    header = ["trial", *keys, "test acc", "train acc", "gap", "status"]
    lines = ["## Trials, best first", "", _row(header), "|" + "---|" * len(header)]
    for run in ranked(runs):
        v = run.values
        lines.append(_row([printable(run.path.name), *(run.overrides.get(k, "") for k in keys), _fmt(v["test_acc"]),
                           _fmt(v["train_acc"]), _fmt(v["gap"]), run.status if run.ok else run.error]))
    return "\n".join(lines) + "\n"


def write_figure(runs: list[RunResult], path: Path) -> Path | None:
    """Each searched parameter against final test accuracy, one panel per parameter; None when nothing was searched."""
    keys = numeric_keys(runs)
    done = [r for r in runs if r.ok]
    if not keys or not done:
        return None
    fig = Figure(figsize=(4 * len(keys), 3.5))
    axes = fig.subplots(1, len(keys), squeeze=False)[0]
    best = ranked(done)[0]
    for ax, key in zip(axes, keys):
        ax.scatter([_number(r.overrides[key]) for r in done], [r.values["test_acc"] for r in done], color="C0")
        ax.scatter([_number(best.overrides[key])], [best.values["test_acc"]], color="C3", label="best")
        ax.set_xlabel(key, fontsize="small")
        ax.grid(True)
    axes[0].set_ylabel("final test accuracy")
    axes[0].legend(fontsize="small")
    width = 4 * len(keys)  # inches: fixed margins in inches, so the accuracy labels fit however many panels there are
    fig.subplots_adjust(left=0.85 / width, right=1 - 0.15 / width, bottom=0.18, top=0.95, wspace=0.3)
    save_figure(fig, path)
    return path


def _row(cells: list[str]) -> str:
    # a "|" in a value (a list) would split the markdown cell
    return "| " + " | ".join(str(cell).replace("|", "\\|") for cell in cells) + " |"


def _number(text: str | None) -> float | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
