"""A sweep's comparison told to its tracker: the parent run in MLflow (logger=mlflow) ends with the comparison's files,
each group's numbers and how the sweep ended."""
from __future__ import annotations

from pathlib import Path

from augrun.compare.runs import find_runs, load_run
from augrun.compare.stats import build_report
from augrun.errors import UserError
from augrun.report import mlflow_tracking


def finish_sweep_tracking(sweep: mlflow_tracking.SweepTracking, root: Path, ended: str) -> None:
    """Each group's mean and std of the compared numbers and its difference to aug=none, as the parent's metrics
    (`aug_flip_only/test_acc_mean`); the comparison files at the root, written by the sweep's callback, as artifacts."""
    try:
        groups = build_report([load_run(path) for path in find_runs([root])]).groups
    except UserError:  # no job wrote anything
        groups = []
    metrics = {}
    for group in groups:
        numbers = {f"{name}_{part}": value for name, stat in group.stats.items()
                   for part, value in (("mean", stat.mean), ("std", stat.std))}
        numbers["test_acc_delta_vs_none"] = group.delta_vs_none
        label = mlflow_tracking.metric_key(group.label)
        metrics.update({f"{label}/{name}": value for name, value in numbers.items() if value is not None})
    mlflow_tracking.finish_sweep(sweep, root, ended, metrics)
