"""The MLflow tracking store (`logger.tracking_uri`): where it is, checked before anything is created (a SQLite
database that is MLflow's or can be made, a server that answers, a scheme MLflow knows), then opened once with its
experiment, and the client augrun's calls go through (tight HTTP limits, MLflow's own logging silenced).

The store: $MLFLOW_TRACKING_URI wins, as MLflow's users expect, then `logger.tracking_uri`, then a SQLite database in
the launch directory's outputs/ (absolute, so every job of a sweep writes to one store); with SQLite, artifacts go
beside the database. The pre-check checks the store without creating anything that stays, then creates the database
and the experiment once, before any job starts (parallel jobs would race on SQLite's schema creation).
"""
from __future__ import annotations

import contextlib
import logging
import os
import urllib.error
import urllib.request
from pathlib import Path

from augrun import rundir
from augrun.errors import ConfigError, first_line

KEY = "logger.tracking_uri"
ENV_KEY = "MLFLOW_TRACKING_URI"  # which wins over KEY
DEFAULT_DB = Path("outputs") / "mlflow.db"
REACH_TIMEOUT_S = 5.0
# MLflow's HTTP client retries 7 times with backoff over a 120 s timeout: minutes per call on a hung server. Tight
# limits for augrun's calls, unless the user set their own. And no "View run ... at:" lines on stdout.
MLFLOW_ENV_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                       "MLFLOW_HTTP_REQUEST_TIMEOUT": "5", "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true"}
BUSY_TIMEOUT_S = 3.0  # a SQLite store locked by another process this long is refused; a briefly locked one waits


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


def open_client(uri: str):
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
        client = open_client(uri)
        experiment = client.get_experiment_by_name(experiment_name)
    except Exception as error:  # noqa: BLE001 - a store's failure (a missing database driver, say) is any type
        raise ConfigError(key_of(uri), f"{uri}: MLflow cannot open it ({reason(error)}); {VALID}") from None
    if experiment is None:
        try:
            return client.create_experiment(experiment_name, artifact_location=_artifact_root(uri))
        except MlflowException as error:  # created meanwhile by another command, or a name the store refuses
            experiment = client.get_experiment_by_name(experiment_name)
            if experiment is None:
                raise ConfigError("logger.experiment_name", f"{experiment_name!r}: {reason(error)}; valid: a "
                                  "name the store accepts, e.g. augrun (the default)") from None
    if experiment.lifecycle_stage != "active":
        raise ConfigError("logger.experiment_name", f"the experiment {experiment_name!r} is deleted in {uri}; valid: "
                          "another name, or `mlflow experiments restore` it")
    return experiment.experiment_id


def reason(error: BaseException) -> str:
    """MLflow's messages run to paragraphs on one line: their first sentence, at most 200 characters."""
    text = first_line(error)
    sentence = text.split(". ")[0]
    return (sentence[:197] + "...") if len(sentence) > 200 else sentence


def _artifact_root(uri: str) -> str | None:
    """With SQLite, the runs' files beside the database; a server keeps them where it was told to."""
    if uri.startswith("sqlite:///"):
        return str(Path(uri[len("sqlite:///"):]).parent / "mlartifacts")
    return None
