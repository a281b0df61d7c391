"""MLflow tracking (`logger=mlflow`): each run as an MLflow run beside its own files, a sweep as a parent run with one
child per job. MLflow's autologging knows no plain torch loop, so what goes in is explicit:

- a run: the resolved config as params (flattened; a value over MLflow's length limit is cut with a marker, never
  dropped), tags (the augmentation pipeline, dataset, model, seed, the overrides as typed, augrun's version, the git
  commit), the per-epoch numbers of metrics.jsonl with step = epoch (rank 0 only), the run's files as artifacts at its
  end, and its status: FINISHED, FAILED, or KILLED for a stopped run. Its id is kept in the checkpoint, so a resumed
  run (resume=true, a requeued Slurm job) goes on in the same MLflow run, logging only epochs it does not hold yet;
- a sweep: a parent run created before any job starts (its id in the sweep root's MLFLOW_FILE, which every job reads,
  whichever process runs it), ended with the comparison's files and each group's mean and std.

The store: $MLFLOW_TRACKING_URI wins, as MLflow's users expect, then `logger.tracking_uri`, then a SQLite database in
the launch directory's outputs/ (absolute, so every job of a sweep writes to one store); with SQLite, artifacts go
beside the database. The pre-check checks the store without creating anything that stays, then creates the database
and the experiment once, before any job starts (parallel jobs would race on SQLite's schema creation). A store that
fails mid-run is said once, and the run goes on with its own files complete. A run's store calls run on a thread of
their own, so that a slow or hung store never holds up training or a signal's stop; the run's end waits for them a
bounded time.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from augrun import rundir
from augrun.errors import ConfigError, first_line
from augrun.files import write_text_atomic
from augrun.report.tracker import Tracker

KEY = "logger.tracking_uri"
ENV_KEY = "MLFLOW_TRACKING_URI"  # which wins over KEY
DEFAULT_DB = Path("outputs") / "mlflow.db"
MLFLOW_FILE = ".augrun-mlflow.json"  # in a sweep root: the store, experiment and parent run of its jobs
ARTIFACTS = (rundir.CURVES, rundir.PREVIEW, rundir.SUMMARY, rundir.METRICS_CSV)
SWEEP_ARTIFACTS = ("comparison.md", "comparison.csv", "comparison.png", "search.png")
REACH_TIMEOUT_S = 5.0
TRUNCATED = "...[truncated]"
END_WAIT_S = 10.0    # at a run's or sweep's end, the most it waits for the store's calls still queued
START_WAIT_S = 5.0   # at a run's start, the most it waits for its MLflow run's id, which the checkpoint keeps
# MLflow's HTTP client retries 7 times with backoff over a 120 s timeout: minutes per call on a hung server. Tight
# limits for augrun's calls, unless the user set their own. And no "View run ... at:" lines on stdout.
MLFLOW_ENV_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                       "MLFLOW_HTTP_REQUEST_TIMEOUT": "5", "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true"}
BUSY_TIMEOUT_S = 3.0  # a SQLite store locked by another process this long is refused; a briefly locked one waits
STATUS = {"completed": "FINISHED", "failed": "FAILED", "stopped": "KILLED"}


# the stores MLflow's tracking client opens, by URI scheme (a bare "databricks" names a workspace profile)
SCHEMES = ("sqlite", "http", "https", "postgresql", "mysql", "mssql", "databricks", "databricks-uc", "uc", "file")
VALID = "valid: sqlite:///<path>.db, the http(s):// URI of an `mlflow server`, another database URI MLflow opens, " \
        "or unset for outputs/mlflow.db"


class StoreUri(str):
    """A tracking store's URI, and the setting it came from, which its refusals name."""
    key: str = KEY


def resolve_uri(configured: str | None, *, launch_dir: Path | None = None) -> StoreUri:
    """The tracking store's URI. A relative SQLite or file path is made absolute (every job, whatever its process's
    directory, must find the same store)."""
    from_env = os.environ.get(ENV_KEY)
    uri = StoreUri(_absolute(from_env or configured, launch_dir or Path.cwd()))
    uri.key = ENV_KEY if from_env else KEY
    return uri


def _absolute(uri: str | None, base: Path) -> str:
    if not uri:
        return f"sqlite:///{(base / DEFAULT_DB).absolute()}"
    if uri.startswith("sqlite:///"):
        path = uri[len("sqlite:///"):]
        return uri if path.startswith("/") or path == ":memory:" else f"sqlite:///{(base / path).absolute()}"
    if "://" not in uri and uri.split(":")[0] not in SCHEMES:  # a folder: MLflow's file store
        return str((base / uri).absolute())
    return uri


def key_of(uri: str) -> str:
    """The setting a URI came from: resolve_uri's, or logger.tracking_uri for one read back from a sweep."""
    return getattr(uri, "key", KEY)


def check_store(uri: str, experiment_name: str) -> None:
    """The store can be used, found without creating anything that stays: a SQLite database that is MLflow's (or
    empty, or can be made), a server that answers, a scheme MLflow knows. The rest is tried when the store opens
    (open_store)."""
    _check_installed()
    if not experiment_name.strip():
        raise ConfigError("logger.experiment_name", "is empty; valid: a name, e.g. augrun (the default)")
    key = key_of(uri)
    scheme = uri.split("://")[0] if "://" in uri else uri.split(":")[0] if uri.split(":")[0] in SCHEMES else ""
    if scheme.split("+")[0] not in SCHEMES and scheme:  # postgresql+psycopg2: a driver after the scheme
        raise ConfigError(key, f"{uri}: MLflow knows no {scheme}:// store; {VALID}")
    if uri.startswith("sqlite:///"):
        _check_sqlite(Path(uri[len("sqlite:///"):]), key)
    elif scheme in ("http", "https"):
        _check_server(uri, key)
    elif scheme in ("", "file") and os.environ.get("MLFLOW_ALLOW_FILE_STORE", "").lower() != "true":
        raise ConfigError(key, f"{uri} is a folder, MLflow's file store, which MLflow 3 no longer opens; {VALID} "
                          "(or MLFLOW_ALLOW_FILE_STORE=true for the file store)")


def _check_installed() -> None:
    import importlib.util
    if importlib.util.find_spec("mlflow") is None:
        raise ConfigError("logger", "mlflow is not installed; valid: pip install 'augrun[mlflow]', or logger=none")


def _check_sqlite(path: Path, key: str) -> None:
    if str(path) == ":memory:":  # one database per process: the runs would vanish with it, and a sweep's jobs differ
        raise ConfigError(key, f"sqlite:///:memory: keeps the runs in memory, lost when augrun ends; {VALID}")
    if path.is_dir():
        raise ConfigError(key, f"sqlite:///{path} is a directory, not a database file; valid: a .db file path")
    if not path.exists():
        rundir.check_writable(path, key)
        if path.parent.is_dir():
            _check_creatable(path, key)
        return
    tables = _tables(path, key)
    if tables and not {"alembic_version", "experiments"} <= tables:  # MLflow would add its ~65 tables to it
        names = ", ".join(sorted(tables)[:3]) + (", ..." if len(tables) > 3 else "")
        raise ConfigError(key, f"sqlite:///{path} is a database of something else (tables {names}); valid: an MLflow "
                          "database, an empty one, or a new path")
    if not os.access(path, os.W_OK):
        raise ConfigError(key, f"sqlite:///{path} is not writable; valid: a database this user can write")


def _check_creatable(path: Path, key: str) -> None:
    """A writable-looking directory may still refuse a database (/proc, a read-only mount), which MLflow finds only
    after minutes of retries: one is created beside the path, under a name of this process's (another command may be
    creating the store itself meanwhile), and removed again."""
    import sqlite3
    trial = path.with_name(f".{path.name}.augrun-check-{os.getpid()}")
    try:
        with contextlib.closing(sqlite3.connect(trial)) as db:
            db.execute("CREATE TABLE augrun_check (x)")
    except sqlite3.Error as error:
        raise ConfigError(key, f"sqlite:///{path}: no database can be created there ({error}); valid: a path in a "
                          "directory where files can be created") from None
    finally:
        for leftover in (trial, trial.with_name(trial.name + "-journal")):
            with contextlib.suppress(OSError):
                leftover.unlink()


def _tables(path: Path, key: str) -> set[str]:
    import sqlite3
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_S)) as db:
            return {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.OperationalError as error:
        if "locked" in str(error):
            raise ConfigError(key, f"sqlite:///{path} is locked by another process (still after {BUSY_TIMEOUT_S:g} "
                              "s); valid: a database no other process holds locked: wait for it, or another path") \
                from None
        raise _unreadable(path, key, error) from None
    except sqlite3.Error as error:
        raise _unreadable(path, key, error) from None


def _unreadable(path: Path, key: str, error: Exception) -> ConfigError:
    return ConfigError(key, f"sqlite:///{path} cannot be read as a database ({error}); valid: an MLflow SQLite "
                       "database, or a path where one can be created")


def _check_server(uri: str, key: str) -> None:
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=REACH_TIMEOUT_S) as answer:
            if answer.status != 200:
                raise OSError(f"HTTP {answer.status}")
    except (OSError, urllib.error.URLError, ValueError) as error:
        reason = getattr(error, "reason", None) or error
        raise ConfigError(key, f"cannot reach the MLflow server at {uri} ({reason}); valid: the URI of a running "
                          "`mlflow server`, a sqlite:/// database path, or unset for outputs/mlflow.db") from None


def _client(uri: str):
    for name, value in MLFLOW_ENV_DEFAULTS.items():
        os.environ.setdefault(name, value)
    from mlflow.tracking import MlflowClient
    _quiet_mlflow()  # after MLflow's import, which sets its loggers' levels
    return MlflowClient(tracking_uri=str(uri))


def _quiet_mlflow() -> None:
    """Nothing of MLflow's own logging: its INFO lines ("Creating initial MLflow database tables...", "View run ...
    at:") say nothing a user acts on, and its ERROR lines come with tracebacks (a locked database) where augrun says a
    failure once, in one line, itself."""
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.CRITICAL + 1)


def open_store(uri: str, experiment_name: str) -> str:
    """Create the store (a SQLite database's tables) and the experiment when missing; the experiment's id."""
    from mlflow.exceptions import MlflowException
    try:
        client = _client(uri)
        experiment = client.get_experiment_by_name(experiment_name)
    except Exception as error:  # noqa: BLE001 - a store's failure (a missing database driver, say) is any type
        raise ConfigError(key_of(uri), f"{uri}: MLflow cannot open it ({_reason(error)}); {VALID}") from None
    if experiment is None:
        try:
            return client.create_experiment(experiment_name, artifact_location=_artifact_root(uri))
        except MlflowException as error:  # created meanwhile by another command, or a name the store refuses
            experiment = client.get_experiment_by_name(experiment_name)
            if experiment is None:
                raise ConfigError("logger.experiment_name", f"{experiment_name!r}: {_reason(error)}; valid: a "
                                  "name the store accepts, e.g. augrun (the default)") from None
    if experiment.lifecycle_stage != "active":
        raise ConfigError("logger.experiment_name", f"the experiment {experiment_name!r} is deleted in {uri}; valid: "
                          "another name, or `mlflow experiments restore` it")
    return experiment.experiment_id


def _reason(error: BaseException) -> str:
    """MLflow's messages run to paragraphs on one line: their first sentence, at most 200 characters."""
    text = first_line(error)
    sentence = text.split(". ")[0]
    return (sentence[:197] + "...") if len(sentence) > 200 else sentence


def _artifact_root(uri: str) -> str | None:
    """With SQLite, the runs' files beside the database; a server keeps them where it was told to."""
    if uri.startswith("sqlite:///"):
        return str(Path(uri[len("sqlite:///"):]).parent / "mlartifacts")
    return None


@dataclass
class SweepTracking:
    """A sweep's place in MLflow, as its root's MLFLOW_FILE records it."""
    uri: str
    experiment_id: str
    parent_run_id: str


def start_sweep(root: Path, uri: str, experiment_id: str, *, overrides: list[str]) -> SweepTracking:
    """The sweep's parent run: created, or when the sweep resumes in the same store, the one it had, running again."""
    client = _client(uri)
    recorded = read_sweep(root)
    if recorded is not None and recorded.uri == uri and _exists(client, recorded.parent_run_id):
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
        client = _client(sweep.uri)
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
    _warn_once(f"MLflow tracking stopped ({type(error).__name__}: {_reason(error)}); {goes_on}")


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
        self.client = _client(self.uri)
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
