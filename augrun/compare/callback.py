"""The Hydra callback that writes a sweep's comparison at its root, after every job and when the sweep ends."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from rich.console import Console

from augrun.compare.render import compare_paths, table_console
from augrun.compare.runs import _one_line


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

    # Consoles are made per call: parallel launchers pickle callbacks.

    def _report(self, config: DictConfig, console: Console | None) -> None:
        # Never raise: the jobs' results are already on disk; a broken report must not turn a sweep into a traceback.
        try:
            root = _sweep_root(config)
            compare_paths([root], root, console)
        except Exception as e:  # noqa: BLE001 - any failure is reported as one line
            message = f"augrun: no sweep comparison written: {_one_line(e)}"
            Console(stderr=True).print(message, highlight=False, markup=False, soft_wrap=True)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._report(config, table_console())

    def on_job_end(self, config: DictConfig, job_return: Any = None, **kwargs: Any) -> None:
        if OmegaConf.select(config, "hydra.mode") == RunMode.MULTIRUN:
            self._report(config, None)
