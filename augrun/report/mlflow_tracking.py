"""MLflow tracking (`logger=mlflow`): each run as an MLflow run beside its own files, a sweep as a parent run with one
child per job. MLflow's autologging knows no plain torch loop, so what goes in is explicit:

- a run: the resolved config as params (flattened; a value over MLflow's length limit is cut with a marker, never
  dropped), tags (the augmentation pipeline, dataset, model, seed, the overrides as typed, augrun's version, the git
  commit), the per-epoch numbers of metrics.jsonl with step = epoch (rank 0 only), the run's files as artifacts at its
  end, and its status: FINISHED, FAILED, or KILLED for a stopped run. Its id is kept in the checkpoint, so a resumed
  run (resume=true, a requeued Slurm job) goes on in the same MLflow run, logging only epochs it does not hold yet;
- a sweep: a parent run created before any job starts (its id in the sweep root's MLFLOW_FILE, which every job reads,
  whichever process runs it), ended with the comparison's files and each group's mean and std.

The store (where, checked, opened): augrun.report.mlflow_store. A store that fails mid-run is said once, and the run
goes on with its own files complete. A run's store calls run on a thread of their own, so that a slow or hung store
never holds up training or a signal's stop; the run's end waits for them a bounded time.
"""
from __future__ import annotations

import json
import os
import queue
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from augrun import rundir
from augrun.errors import ConfigError
from augrun.files import write_text_atomic
from augrun.report.mlflow_store import key_of, open_client, open_store, reason, resolve_uri
from augrun.report.tracker import Tracker

MLFLOW_FILE = ".augrun-mlflow.json"  # in a sweep root: the store, experiment and parent run of its jobs
ARTIFACTS = (rundir.CURVES, rundir.PREVIEW, rundir.SUMMARY, rundir.METRICS_CSV)
SWEEP_ARTIFACTS = ("comparison.md", "comparison.csv", "comparison.png", "search.png")
TRUNCATED = "...[truncated]"
END_WAIT_S = 10.0    # at a run's or sweep's end, the most it waits for the store's calls still queued
START_WAIT_S = 5.0   # at a run's start, the most it waits for its MLflow run's id, which the checkpoint keeps
STATUS = {"completed": "FINISHED", "failed": "FAILED", "stopped": "KILLED"}


@dataclass
class SweepTracking:
    """A sweep's place in MLflow, as its root's MLFLOW_FILE records it."""
    uri: str
    experiment_id: str
    parent_run_id: str


def start_sweep(root: Path, uri: str, experiment_id: str, *, overrides: list[str]) -> SweepTracking:
    """The sweep's parent run: created, or when the sweep resumes, the one it had, running again. A resumed sweep
    logs where it began: another store or experiment would split its jobs over two parents."""
    recorded = read_sweep(root)
    if recorded is not None and recorded.uri != str(uri):
        raise ConfigError(key_of(uri), f"{uri} is not the store the sweep {root} logs to ({recorded.uri}); valid: "
                          f"{recorded.uri}")
    if recorded is not None and recorded.experiment_id != experiment_id:
        raise ConfigError("logger.experiment_name", f"names another experiment (id {experiment_id}) than the one the "
                          f"sweep {root} logs to (id {recorded.experiment_id}); valid: the experiment it began with")
    client = open_client(uri)
    if recorded is not None and _exists(client, recorded.parent_run_id):
        client.update_run(recorded.parent_run_id, status="RUNNING")
        return recorded
    run = client.create_run(experiment_id, run_name=root.name, tags={
        "augrun.sweep_dir": str(root.absolute()), "augrun.overrides": _cut(" ".join(overrides))})
    sweep = SweepTracking(uri, experiment_id, run.info.run_id)
    write_text_atomic(root / MLFLOW_FILE, json.dumps(sweep.__dict__, indent=2) + "\n")
    return sweep


def read_sweep(root: Path) -> SweepTracking | None:
    try:
        return SweepTracking(**json.loads((root / MLFLOW_FILE).read_text()))
    except (OSError, ValueError, TypeError):
        return None


def finish_sweep(sweep: SweepTracking, root: Path, status: str, group_metrics: dict[str, float]) -> None:
    """The parent run's end: each group's numbers, the comparison's files, and the sweep's status, each tried even when
    one before failed (a parent left RUNNING reads as a sweep still going). On a thread, waited for a bounded time: the
    sweep's own files are written already."""
    calls = _Calls()
    calls.put(_finish_sweep, sweep, root, status, group_metrics)
    calls.wait_or_say(f"the sweep's parent run, at {sweep.uri}")


def _finish_sweep(sweep: SweepTracking, root: Path, status: str, group_metrics: dict[str, float]) -> None:
    try:
        client = open_client(sweep.uri)
    except Exception as error:  # noqa: BLE001 - as below
        _say_failed(error, goes_on=SWEEP_GOES_ON)
        return
    metrics = [_metric(key, value, step=0) for key, value in group_metrics.items()]
    steps = [lambda start=start: client.log_batch(sweep.parent_run_id, metrics=metrics[start:start + 1000])
             for start in range(0, len(metrics), 1000)]  # MLflow's log_batch takes at most 1000 metrics
    steps += [lambda name=name: client.log_artifact(sweep.parent_run_id, str(root / name))
              for name in SWEEP_ARTIFACTS if (root / name).is_file()]
    steps.append(lambda: client.set_terminated(sweep.parent_run_id, status=STATUS[status]))
    for step in steps:
        try:
            step()
        except Exception as error:  # noqa: BLE001 - a tracker's failure must not turn the sweep's end into a traceback
            _say_failed(error, goes_on=SWEEP_GOES_ON)


def metric_key(text: str) -> str:
    """A name MLflow accepts as a metric key, whatever the label: letters, digits and _-./ and spaces (anything else
    becomes _), and MLflow reads it as a path, so no empty, `.` or `..` part (a group `dataset.root=ra/` would give
    `ra//test_acc_mean`). At most 200 characters, leaving room for the number's name after it."""
    safe = "".join(c if c.isalnum() or c in "_-./ " else "_" for c in text)[:200]
    return "/".join("_" if part in (".", "..") else part for part in safe.split("/") if part) or "_"


def _metric(key: str, value: float, *, step: int):
    from mlflow.entities import Metric
    return Metric(key, float(value), int(time.time() * 1000), step)


def _exists(client, run_id: str) -> bool:
    from mlflow.exceptions import MlflowException
    try:
        return client.get_run(run_id).info.lifecycle_stage == "active"
    except MlflowException:
        return False


def _cut(value: str, limit: int | None = None) -> str:
    """A value within MLflow's length limit, cut with a marker rather than refused or dropped."""
    if limit is None:
        from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH
        limit = MAX_PARAM_VAL_LENGTH
    return value if len(value) <= limit else value[:limit - len(TRUNCATED)] + TRUNCATED


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """A nested config as dotted keys (the spelling of an override) and text values."""
    flat = {}
    for key, value in config.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, dotted + "."))
        else:
            flat[dotted] = json.dumps(value) if isinstance(value, (dict, list)) else str(value)
    return flat


RUN_GOES_ON = "the run goes on, and its own files in the run directory are complete"
SWEEP_GOES_ON = "the sweep's own files (comparison.md, its runs' directories) are complete"
_failure_said = False


def _say_failed(error: BaseException, goes_on: str = RUN_GOES_ON) -> None:
    """The store failed; what augrun writes itself is not affected."""
    _warn_once(f"MLflow tracking stopped ({type(error).__name__}: {reason(error)}); {goes_on}")


def _warn_once(text: str) -> None:
    """Once per process: one store's trouble is one line, however many calls it fails afterwards."""
    global _failure_said
    if not _failure_said:
        _failure_said = True
        print(f"augrun: warning: {text}", file=sys.stderr)


class _Calls:
    """The store's calls, run in order on a daemon thread of their own: the caller never waits on a store that is slow
    or hangs (a signal's stop included), and the process can end while a call still hangs."""

    def __init__(self):
        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        threading.Thread(target=self._serve, name="augrun-mlflow", daemon=True).start()

    def _serve(self) -> None:
        while True:
            action, args = self.queue.get()
            action(*args)

    def put(self, action, *args) -> None:
        self.queue.put((action, args))

    def wait(self, seconds: float) -> bool:
        """Whether the calls queued so far are done within `seconds`."""
        done = threading.Event()
        self.put(done.set)
        return done.wait(seconds)

    def wait_or_say(self, what: str) -> None:
        if not self.wait(END_WAIT_S):
            _warn_once(f"MLflow tracking did not finish in {END_WAIT_S:g} s ({what} does not answer); resume=true "
                       "records the rest")


class MlflowTracker(Tracker):
    """One run in MLflow, fed by RunOutputs on rank 0. Its store calls run on a thread of their own (_Calls), every one
    guarded: the first failure is said once and the tracker goes quiet, training goes on."""

    def __init__(self, run_dir: Path, *, configured_uri: str | None, experiment_name: str, config: dict[str, Any],
                 tags: dict[str, str]):
        self.run_dir, self.config, self.tags = run_dir, config, tags
        sweep = _sweep_of(run_dir)
        self.sweep = sweep
        self.uri = sweep.uri if sweep else str(resolve_uri(configured_uri))
        self.experiment_name = experiment_name
        self.run_id: str | None = None
        self.client = None
        self.quiet = False  # after a failure
        self.calls = _Calls()

    def _guarded(self, action, *args) -> None:
        """On the calls' thread."""
        if self.quiet:
            return
        try:
            action(*args)
        except Exception as error:  # noqa: BLE001 - whatever the store raises, the run goes on
            _say_failed(error)
            self.quiet = True

    def start(self, tracking: dict[str, Any] | None, records: list[dict[str, Any]]) -> None:
        self.calls.put(self._guarded, self._start, tracking or {}, records)

    def _start(self, tracking: dict[str, Any], records: list[dict[str, Any]]) -> None:
        self.client = open_client(self.uri)
        previous = tracking.get("mlflow_run_id")
        if previous and _exists(self.client, previous):
            self.run_id = previous
            self.client.update_run(previous, status="RUNNING")
            logged = self.client.get_metric_history(previous, "train_loss")
            last = max((m.step for m in logged), default=0)
            for record in records:  # epochs the checkpoint holds that never reached MLflow (a kill in between)
                if record["epoch"] > last:
                    self._log_epoch(record)
            return
        experiment_id = self.sweep.experiment_id if self.sweep else open_store(self.uri, self.experiment_name)
        tags = dict(self.tags)
        if self.sweep is not None:
            tags["mlflow.parentRunId"] = self.sweep.parent_run_id
        name = run_name(tags.get("augrun.overrides")) or self.run_dir.name
        run = self.client.create_run(experiment_id, run_name=name, tags={k: _cut(v) for k, v in tags.items()})
        self.run_id = run.info.run_id
        from mlflow.entities import Param
        params = [Param(key[:250], _cut(value)) for key, value in flatten(self.config).items()]
        for start in range(0, len(params), 100):  # MLflow's log_batch takes at most 100 params
            self.client.log_batch(self.run_id, params=params[start:start + 100])
        for record in records:
            self._log_epoch(record)

    def log_epoch(self, record: dict[str, Any]) -> None:
        self.calls.put(self._guarded, self._log_epoch, record)

    def _log_epoch(self, record: dict[str, Any]) -> None:
        if self.run_id is None:  # never started
            return
        step = record["epoch"]
        metrics = [_metric(key, value, step=step) for key, value in record.items()
                   if key not in ("epoch", "seconds") and isinstance(value, (int, float))]
        self.client.log_batch(self.run_id, metrics=metrics)

    def end(self, status: str, error: str | None = None) -> None:
        self.calls.put(self._guarded, self._end, status, error)
        self.calls.wait_or_say(f"the store at {self.uri}")

    def _end(self, status: str, error: str | None) -> None:
        if self.run_id is None:
            return
        for name in ARTIFACTS:
            if (self.run_dir / name).is_file():
                self.client.log_artifact(self.run_id, str(self.run_dir / name))
        if error:
            self.client.set_tag(self.run_id, "augrun.error", _cut(error))
        self.client.set_terminated(self.run_id, status=STATUS[status])

    def state(self) -> dict[str, Any]:
        """What the checkpoint keeps, so that a resumed run goes on in the same MLflow run. Asked once, right after
        start: it waits for the run's id a bounded time (a store that does not answer by then gets no id kept)."""
        self.calls.wait(START_WAIT_S)
        if not self.run_id:
            return {}
        return {"mlflow_run_id": self.run_id, "mlflow_tracking_uri": self.uri,
                "mlflow_experiment_name": self.experiment_name}


def check_resumed(tracking: dict[str, Any], run_dir: Path, uri: str, experiment_name: str) -> None:
    """A resumed run goes on in the MLflow run its checkpoint's `tracking` names: in the store and experiment it was
    started in, not silently in a new run elsewhere. (A checkpoint from before augrun recorded them passes.)"""
    for key, now, recorded in ((key_of(uri), str(uri), tracking.get("mlflow_tracking_uri")),
                               ("logger.experiment_name", experiment_name, tracking.get("mlflow_experiment_name"))):
        if recorded is not None and recorded != now:
            raise ConfigError(key, f"{now} is not where the resumed run {run_dir} has its MLflow run "
                              f"({recorded}); valid: {recorded}")


def run_name(overrides: str | None) -> str:
    """The run's overrides as its name, without resume=..., which says how a job was started, not what it is."""
    return " ".join(o for o in (overrides or "").split() if o.split("=")[0].lstrip("+~") != "resume")


def _sweep_of(run_dir: Path) -> SweepTracking | None:
    """The sweep a job belongs to: the nearest sweep root above its directory, with its MLFLOW_FILE."""
    for folder in Path(os.path.abspath(run_dir)).parents:
        if rundir.is_sweep_root(folder):
            return read_sweep(folder)
    return None
