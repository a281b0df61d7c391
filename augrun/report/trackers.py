"""Trackers a run logs to beside its own files (`logger=`, several at once as a list): TensorBoard's event files, and
MLflow (augrun.report.mlflow_tracking). Each is optional: its package is an extra, checked before any work."""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from augrun.config.schema import LoggerConfig
from augrun.errors import ConfigError
from augrun.report.metrics_files import metric_fields
from augrun.report.tracker import Tracker


class TensorBoardLog(Tracker):
    """logger=tensorboard: the per-epoch scalars as event files in the run directory (`tensorboard --logdir outputs/`)."""

    def __init__(self, run_dir: Path):
        from torch.utils.tensorboard import SummaryWriter
        self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))

    def log_epoch(self, record: dict[str, Any]) -> None:
        for name in metric_fields(record)[1:]:
            if record[name] is not None:  # test metrics of an epoch without evaluation (trainer.eval_every)
                self.writer.add_scalar(name, record[name], global_step=record["epoch"])
        self.writer.flush()


def check_logger(logger: LoggerConfig) -> None:
    """Fail before any work when a chosen tracker's package is missing, or installed but broken (it is imported here,
    as the run would import it once its directory exists), or its store cannot be used."""
    if logger.tensorboard:
        _check_tensorboard()
    if logger.mlflow:
        from augrun.report import mlflow_store
        mlflow_store.check_store(mlflow_store.resolve_uri(logger.tracking_uri), logger.experiment_name)


def _check_tensorboard() -> None:
    if importlib.util.find_spec("tensorboard") is None:
        raise ConfigError("logger", "tensorboard is not installed; valid: pip install 'augrun[tensorboard]', "
                          "or logger=none")
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401 - imported to see that it can be
    except Exception as error:  # a broken install raises anything from ImportError to AttributeError
        reason = " ".join(str(error).split())[:200] or type(error).__name__
        raise ConfigError("logger", f"tensorboard is installed but cannot be imported ({type(error).__name__}: "
                          f"{reason}); valid: pip install --force-reinstall tensorboard, or logger=none") from None
