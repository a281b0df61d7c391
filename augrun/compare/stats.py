"""Grouping and statistics: runs grouped by their overrides (seeds pooled), mean ± sample std per group, and each
group's difference to its `aug=none` twin, called noise when it is below twice its standard error."""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from augrun.compare.runs import RunResult, _natural_key

BASELINE_KEY, BASELINE_VALUE = "aug", "none"
ALL_LABEL = "all"  # label when every run has the same overrides
DEFAULTS_LABEL = "defaults"  # a group that sets none of the overrides its neighbours vary
# Per-run numbers that get a mean ± std per group, in table order.
METRICS = ("test_acc", "best_test_acc", "train_acc", "gap", "loss", "examples_per_s")


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
    delta_se: float | None = None  # its standard error (None with one seed on either side)
    gap_delta_vs_none: float | None = None  # mean train-test gap minus the baseline's: less overfitting is negative
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
    gaps = group.stats["gap"].mean, base.stats["gap"].mean
    if None not in gaps:
        group.gap_delta_vs_none = gaps[0] - gaps[1]
    gap = f", gap {group.gap_delta_vs_none:+.4f}" if group.gap_delta_vs_none is not None else ""
    head = f"{group.label}: test acc {group.delta_vs_none:+.4f}{gap} vs {base.label}"
    if a.std is None or b.std is None:
        # One seed has no spread estimate, so no difference can be called noise or signal.
        group.note = f"{head}; 1 seed: no noise estimate"
        return
    se = math.sqrt(a.std**2 / len(group.completed) + b.std**2 / len(base.completed))
    group.delta_se = se
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
