"""logger=mlflow against real MLflow: a real SQLite store in the test's directory, read back with MlflowClient, and a
real `mlflow server` on 127.0.0.1 whose REST API finds the runs as its web UI does."""
from __future__ import annotations

import contextlib
import csv
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import torch
from helpers import MARKER_LINE, SMOKE, read_metrics, refusal, run_augrun
from test_signals import Augrun

from augrun import rundir
from augrun.cli import main
from augrun.report import mlflow_store, mlflow_tracking

pytest.importorskip("mlflow", reason="MLflow is not installed (pip install 'augrun[mlflow]')")
from mlflow.tracking import MlflowClient  # noqa: E402

RUN = [*SMOKE, "trainer.workers=0", "logger=mlflow"]
EPOCH_METRICS = ("train_loss", "train_acc", "test_acc", "lr", "examples_per_s")


@pytest.fixture(autouse=True)
def warnings_unsaid(monkeypatch):
    """The store's trouble is said once per process: once per test here."""
    monkeypatch.setattr(mlflow_tracking, "_failure_said", False)


def store(folder: Path) -> str:
    return f"sqlite:///{folder / 'mlflow.db'}"


def runs_of(uri: str, experiment: str = "augrun") -> list:
    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    return client.search_runs([found.experiment_id]) if found else []


def steps(uri: str, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in MlflowClient(uri).get_metric_history(run_id, key))


def artifacts(uri: str, run_id: str) -> list[str]:
    return sorted(a.path for a in MlflowClient(uri).list_artifacts(run_id))


def test_a_run_is_one_mlflow_run_with_its_config_metrics_tags_and_files(in_workdir: Path):
    uri = store(in_workdir)
    main(["train", *SMOKE, "trainer.workers=0", "logger=[tensorboard,mlflow]", "trainer.epochs=2", "optim.lr=0.002",
          f"logger.tracking_uri={uri}", "hydra.run.dir=run"])
    assert any((in_workdir / "run" / "tensorboard").iterdir())  # both trackers at once
    (run,) = runs_of(uri)
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert params["optim.lr"] == "0.002" and params["trainer.epochs"] == "2" and params["model.name"] == "small_cnn"
    assert params["aug.train.RandomHorizontalFlip.p"] == "0.5"  # the whole resolved config, flattened
    tags = run.data.tags
    assert tags["augrun.aug"] == "flip_only" and tags["augrun.dataset"] == "synthetic" and tags["augrun.seed"] == "0"
    assert tags["augrun.model"] == "small_cnn" and tags["augrun.version"] and "augrun.git_commit" in tags
    assert "optim.lr=0.002" in tags["augrun.overrides"].split()
    records = read_metrics(in_workdir / "run")
    for key in EPOCH_METRICS:  # metrics.jsonl's numbers, at step = epoch
        assert steps(uri, run.info.run_id, key) == [(r["epoch"], pytest.approx(r[key])) for r in records]
    assert artifacts(uri, run.info.run_id) == sorted(["curves.png", "metrics.csv", "preview.png", "summary.json"])
    state = torch.load(in_workdir / "run" / rundir.CHECKPOINT, weights_only=True)
    assert state["tracking"] == {"mlflow_run_id": run.info.run_id, "mlflow_tracking_uri": uri,
                                 "mlflow_experiment_name": "augrun"}


def test_the_store_defaults_to_outputs_and_mlflow_tracking_uri_wins(in_workdir: Path, monkeypatch):
    main(["train", *RUN, "trainer.epochs=1", "hydra.run.dir=first"])
    (run,) = runs_of(f"sqlite:///{in_workdir / 'outputs' / 'mlflow.db'}")
    assert Path(MlflowClient(store(in_workdir / "outputs")).get_experiment(run.info.experiment_id)
                .artifact_location) == in_workdir / "outputs" / "mlartifacts"  # artifacts beside the database
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store(in_workdir))
    main(["train", *RUN, "trainer.epochs=1", f"logger.tracking_uri={store(in_workdir / 'elsewhere')}",
          "hydra.run.dir=second"])
    assert len(runs_of(store(in_workdir))) == 1 and not (in_workdir / "elsewhere").exists()


def test_a_sweep_is_a_parent_run_with_a_child_per_job_and_the_comparison(in_workdir: Path):
    uri = store(in_workdir)
    main(["train", "-m", *RUN, "trainer.epochs=1", "aug=none,flip_only", "seed=0,1", f"logger.tracking_uri={uri}",
          "hydra.sweep.dir=sweep"])
    runs = runs_of(uri)
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(runs) == 5 and len(children) == 4
    assert parent.info.status == "FINISHED" and all(r.info.status == "FINISHED" for r in children)
    assert sorted(r.data.tags["augrun.aug"] for r in children) == ["flip_only", "flip_only", "none", "none"]
    assert artifacts(uri, parent.info.run_id) == ["comparison.csv", "comparison.md", "comparison.png"]
    with open(in_workdir / "sweep" / "comparison.csv") as file:
        rows = {row["group"]: row for row in csv.DictReader(file)}
    for label in ("aug=none", "aug=flip_only"):  # each group's numbers, as the comparison has them
        for column in ("test_acc_mean", "test_acc_std", "gap_mean"):
            assert parent.data.metrics[f"{label.replace('=', '_')}/{column}"] == pytest.approx(
                float(rows[label][column]), rel=1e-5)
    assert parent.data.metrics["aug_flip_only/test_acc_delta_vs_none"] == pytest.approx(
        float(rows["aug=flip_only"]["delta_vs_none"]), rel=1e-5)


@pytest.mark.slow
def test_a_stopped_sweep_is_killed_and_its_resume_goes_on_in_the_same_runs(in_workdir: Path, marker_hooks: Path):
    workdir = in_workdir
    uri = store(workdir)
    command = ["train", "-m", *RUN, "trainer.epochs=3", "seed=0", f"logger.tracking_uri={uri}", "hydra.sweep.dir=sweep"]
    run = Augrun(workdir, *command, hooks=marker_hooks)
    run.wait_until(lambda: any(MARKER_LINE in line for line in run.stdout), f"line {MARKER_LINE!r}")
    os.killpg(run.process.pid, signal.SIGINT)  # at epoch 2, step 2
    status, _, stderr = run.finish()
    assert status == 130, stderr
    stopped = {r.info.run_id: r for r in runs_of(uri)}
    assert sorted(r.info.status for r in stopped.values()) == ["KILLED", "KILLED"]  # the job, and the sweep's parent
    (job,) = [r for r in stopped.values() if "mlflow.parentRunId" in r.data.tags]
    assert [step for step, _ in steps(uri, job.info.run_id, "train_loss")] == [1]

    main([*command, "resume=true"])  # in this process: its exit status is not the point here
    finished = {r.info.run_id: r for r in runs_of(uri)}
    assert finished.keys() == stopped.keys()  # the same two runs, not new ones
    assert all(r.info.status == "FINISHED" for r in finished.values())
    records = read_metrics(workdir / "sweep" / "0")
    assert steps(uri, job.info.run_id, "test_acc") == [(r["epoch"], pytest.approx(r["test_acc"])) for r in records]


@pytest.mark.slow
def test_parallel_jobs_create_one_new_store_without_a_race(workdir: Path):
    uri = store(workdir / "new")
    result = run_augrun("train", "-m", *RUN, "trainer.epochs=1", "seed=0,1", "hydra/launcher=joblib",
                        "hydra.launcher.n_jobs=2", f"logger.tracking_uri={uri}", "hydra.sweep.dir=sweep", cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert "warning" not in result.stderr
    assert sorted(r.info.status for r in runs_of(uri)) == ["FINISHED"] * 3


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """`mlflow server` on 127.0.0.1 and a free port, over a SQLite store, serving artifacts; stopped at the end. One
    for the module (it takes seconds to start): the test that kills it comes last."""
    port = free_port()
    folder = tmp_path_factory.mktemp("server")
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
                               "--backend-store-uri", store(folder), "--artifacts-destination", str(folder / "art"),
                               "--workers", "1"], cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        try:
            with urllib.request.urlopen(url + "/health", timeout=2):
                break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"mlflow server did not start: {server.stderr.read().decode()[-2000:]}")
            time.sleep(0.5)
    yield url, server
    if server.poll() is None:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)


def search_rest(url: str, experiment_id: str) -> list[dict]:
    """The runs as the web UI finds them: MLflow's REST API."""
    request = urllib.request.Request(url + "/api/2.0/mlflow/runs/search", method="POST",
                                     data=json.dumps({"experiment_ids": [experiment_id]}).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.loads(answer.read())["runs"]


@pytest.mark.slow
def test_a_sweep_logged_through_a_server_is_found_by_its_rest_api(in_workdir: Path, mlflow_server, capfd):
    url, _ = mlflow_server
    main(["train", "-m", *RUN, "trainer.epochs=1", "seed=0,1", f"logger.tracking_uri={url}", "hydra.sweep.dir=sweep"])
    out, err = capfd.readouterr()
    assert "View run" not in out and "View experiment" not in out  # MLflow's own lines
    assert not mlflow_warnings(err), err
    experiment = MlflowClient(url).get_experiment_by_name("augrun")
    found = search_rest(url, experiment.experiment_id)
    tags = [{t["key"]: t["value"] for t in run["data"].get("tags", [])} for run in found]
    parents = [run["info"]["run_id"] for run, t in zip(found, tags) if "mlflow.parentRunId" not in t]
    assert len(found) == 3 and len(parents) == 1
    assert sorted(t.get("mlflow.parentRunId") for t in tags if "mlflow.parentRunId" in t) == parents * 2
    assert all(run["info"]["status"] == "FINISHED" for run in found)
    child = next(run for run, t in zip(found, tags) if "mlflow.parentRunId" in t)
    assert "summary.json" in artifacts(url, child["info"]["run_id"])  # uploaded through the server


def hung_server_run(workdir: Path, hooks: Path, mlflow_server, *extra: str) -> tuple[Augrun, float]:
    """A run logging to the server, whose processes are stopped (SIGSTOP: connections open, nothing answered) at the
    run's marked step; the moment they were. MLflow's HTTP limits are augrun's own: none set here."""
    url, server = mlflow_server
    run = Augrun(workdir, "train", *RUN, *extra, f"logger.tracking_uri={url}", "hydra.run.dir=run", hooks=hooks)
    run.wait_until(lambda: any(MARKER_LINE in line for line in run.stdout), f"line {MARKER_LINE!r}")
    os.killpg(server.pid, signal.SIGSTOP)
    return run, time.monotonic()


def mlflow_warnings(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "MLflow" in line or "mlflow" in line]


@pytest.mark.slow
@pytest.mark.parametrize("signum", [None, signal.SIGTERM], ids=["completes", "SIGTERM"])
def test_a_store_that_hangs_mid_run_holds_up_neither_training_nor_a_stop(workdir: Path, marker_hooks: Path,
                                                                          mlflow_server, signum):
    _, server = mlflow_server
    run, hung = hung_server_run(workdir, marker_hooks, mlflow_server, "trainer.epochs=3")
    try:
        if signum is not None:
            os.killpg(run.process.pid, signum)
        status, _, stderr = run.finish(timeout=60)  # MLflow's own limits: minutes per call
        took = time.monotonic() - hung
    finally:
        os.killpg(server.pid, signal.SIGCONT)
        if run.process.poll() is None:
            os.killpg(run.process.pid, signal.SIGKILL)
    assert status == (0 if signum is None else 128 + signum), stderr
    assert took < mlflow_tracking.END_WAIT_S + 10, took  # the end waits for the store a bounded time, once
    (warning,) = mlflow_warnings(stderr)
    assert warning.startswith("augrun: warning: MLflow tracking "), stderr
    assert "Traceback" not in stderr
    expected = "completed" if signum is None else "stopped"
    assert json.loads((workdir / "run" / "summary.json").read_text())["status"] == expected


@pytest.mark.slow
def test_a_store_that_fails_mid_run_is_said_once_and_training_goes_on(workdir: Path, marker_hooks: Path,
                                                                      mlflow_server):
    url, server = mlflow_server
    env_retries = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}
    os.environ.update(env_retries)  # read by the run's process: one failed request, not minutes of retries
    try:
        run = Augrun(workdir, "train", *RUN, "trainer.epochs=3", f"logger.tracking_uri={url}", "hydra.run.dir=run",
                     hooks=marker_hooks)
    finally:
        for key in env_retries:
            del os.environ[key]
    run.wait_until(lambda: any(MARKER_LINE in line for line in run.stdout), f"line {MARKER_LINE!r}")
    os.killpg(server.pid, signal.SIGKILL)  # the server goes away in epoch 2
    status, _, stderr = run.finish()
    assert status == 0, stderr
    warnings = [line for line in stderr.splitlines() if "MLflow" in line]
    assert len(warnings) == 1 and warnings[0].startswith("augrun: warning: MLflow tracking stopped"), stderr
    assert [r["epoch"] for r in read_metrics(workdir / "run")] == [1, 2, 3]
    assert json.loads((workdir / "run" / "summary.json").read_text())["status"] == "completed"


@pytest.mark.parametrize("uri, expected", [
    ("http://127.0.0.1:9", "logger.tracking_uri: cannot reach the MLflow server at http://127.0.0.1:9"),
    ("sqlite:///{tmp}/a-file/mlflow.db", "logger.tracking_uri:"),
    ("sqlite:///{tmp}/junk.db", "logger.tracking_uri: sqlite:///{tmp}/junk.db cannot be read as a database"),
    ("sqlite:///{tmp}", "logger.tracking_uri: sqlite:///{tmp} is a directory, not a database file"),
    ("bogus://x", "logger.tracking_uri: bogus://x: MLflow knows no bogus:// store; valid: sqlite:///"),
    ("mlruns", "logger.tracking_uri: {tmp}/mlruns is a folder, MLflow's file store"),
    ("sqlite:///:memory:", "logger.tracking_uri: sqlite:///:memory: keeps the runs in memory"),
    ("sqlite:////proc/augrun-test.db", "logger.tracking_uri: "),  # a directory where no file can be created
    ("sqlite:///{tmp}/other.db", "logger.tracking_uri: sqlite:///{tmp}/other.db is a database of something else "
                                 "(tables notes); valid: an MLflow database, an empty one"),
])
def test_a_store_that_cannot_be_used_is_refused_before_anything_is_created(uri, expected, in_workdir: Path):
    (in_workdir / "a-file").write_text("not a folder")
    (in_workdir / "junk.db").write_text("not a database")
    with contextlib.closing(sqlite3.connect(in_workdir / "other.db")) as other:
        other.execute("CREATE TABLE notes (x)")
    before = sorted(p.name for p in in_workdir.iterdir())
    started = time.monotonic()
    message = refusal(*RUN, f"logger.tracking_uri={uri.format(tmp=in_workdir)}", "hydra.run.dir=run")
    assert time.monotonic() - started < 10  # not MLflow's minutes of retries
    assert message.startswith(expected.format(tmp=in_workdir)), message
    assert sorted(p.name for p in in_workdir.iterdir()) == before
    assert {"notes"} == {row[0] for row in sqlite3.connect(in_workdir / "other.db").execute(
        "SELECT name FROM sqlite_master")}  # nothing added to it


def test_a_sqlite_store_locked_by_another_process_is_refused_as_locked(in_workdir: Path):
    uri = store(in_workdir)
    mlflow_store.open_store(uri, "augrun")
    with contextlib.closing(sqlite3.connect(in_workdir / "mlflow.db", isolation_level=None)) as holder:
        holder.execute("BEGIN EXCLUSIVE")
        message = refusal(*RUN, f"logger.tracking_uri={uri}", "hydra.run.dir=run")
    assert message.startswith(f"logger.tracking_uri: {uri} is locked by another process"), message


def test_a_refused_store_from_the_environment_is_named_as_such(in_workdir: Path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "bogus://x")
    message = refusal(*RUN, "hydra.run.dir=run")
    assert message.startswith("MLFLOW_TRACKING_URI: bogus://x: MLflow knows no bogus:// store"), message


def test_an_empty_experiment_name_is_refused(in_workdir: Path):
    assert refusal(*RUN, "logger.experiment_name=", "hydra.run.dir=run").startswith("logger.experiment_name: is empty")


def test_an_unknown_logger_names_the_options(in_workdir: Path):
    message = refusal(*SMOKE, "logger=mlflw")
    assert "logger" in message and "mlflow" in message and "tensorboard" in message


def test_a_failed_run_is_failed_in_mlflow_with_its_error(in_workdir: Path):
    uri = store(in_workdir)
    with pytest.raises(SystemExit) as exit_:
        main(["train", *RUN, "trainer.epochs=2", "optim.lr=1e30", f"logger.tracking_uri={uri}", "hydra.run.dir=run"])
    assert exit_.value.code == 1
    (run,) = runs_of(uri)
    assert run.info.status == "FAILED" and run.data.tags["augrun.error"].startswith("NonFiniteLoss: ")


def test_a_value_over_mlflows_length_limit_is_cut_with_a_marker_not_dropped(in_workdir: Path):
    from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

    from augrun.report.mlflow_tracking import TRUNCATED, MlflowTracker
    uri = store(in_workdir)
    long = "x" * (MAX_PARAM_VAL_LENGTH + 100)
    tracker = MlflowTracker(in_workdir / "run", configured_uri=uri, experiment_name="augrun",
                            config={"dataset": {"root": long, "name": "folder"}}, tags={"augrun.overrides": long})
    tracker.start(None, [])
    tracker.end("completed")
    (run,) = runs_of(uri)
    root = run.data.params["dataset.root"]
    assert len(root) == MAX_PARAM_VAL_LENGTH and root.endswith(TRUNCATED) and root.startswith("x" * 100)
    assert run.data.params["dataset.name"] == "folder" and run.data.tags["augrun.overrides"].endswith(TRUNCATED)


@pytest.mark.parametrize("label", ["dataset.root=ra/", "dataset.root=/a/../b//c/./", "x=..", "", "é:ü?*" * 80])
def test_any_group_label_makes_a_metric_key_mlflow_accepts(label):
    from mlflow.utils.validation import _validate_metric_name
    _validate_metric_name(f"{mlflow_tracking.metric_key(label)}/test_acc_mean")


def test_a_sweeps_parent_run_ends_even_when_its_metrics_are_refused(in_workdir: Path, capsys):
    uri = store(in_workdir)
    experiment_id = mlflow_store.open_store(uri, "augrun")
    root = in_workdir / "sweep"
    root.mkdir()
    (root / "comparison.md").write_text("# comparison\n")
    sweep = mlflow_tracking.start_sweep(root, uri, experiment_id, overrides=[])
    mlflow_tracking.finish_sweep(sweep, root, "completed", {"a//b": 1.0})  # a key MLflow refuses
    (parent,) = runs_of(uri)
    assert parent.info.status == "FINISHED" and artifacts(uri, parent.info.run_id) == ["comparison.md"]
    (warning,) = capsys.readouterr().err.splitlines()
    assert warning.startswith("augrun: warning: MLflow tracking stopped") and "the sweep's own files" in warning


@pytest.mark.parametrize("key, values", [("logger.experiment_name", "expA,expB"),
                                         ("logger.tracking_uri", "sqlite:///a.db,sqlite:///b.db")])
def test_a_sweep_over_the_store_or_experiment_is_refused(key, values, in_workdir: Path):
    message = refusal("-m", *RUN, f"{key}={values}", "hydra.sweep.dir=sweep")
    assert message.startswith(f"{key}: is swept ({values.replace(',', ', ')}), but a sweep's runs"), message
    assert not (in_workdir / "sweep").exists() and not (in_workdir / "a.db").exists()


def test_a_run_name_leaves_resume_out():
    assert mlflow_tracking.run_name("seed=1 resume=true aug=none") == "seed=1 aug=none"


@pytest.mark.parametrize("key, other", [("logger.tracking_uri", "sqlite:///{tmp}/other.db"),
                                        ("logger.experiment_name", "elsewhere")])
def test_a_resume_in_another_store_or_experiment_is_refused(key, other, in_workdir: Path):
    uri = store(in_workdir)
    main(["train", *RUN, "trainer.epochs=1", f"logger.tracking_uri={uri}", "hydra.run.dir=run"])
    recorded = {"logger.tracking_uri": uri, "logger.experiment_name": "augrun"}
    other = other.format(tmp=in_workdir)
    overrides = {"logger.tracking_uri": uri, key: other}
    message = refusal(*RUN, "trainer.epochs=1", "resume=true", *(f"{k}={v}" for k, v in overrides.items()),
                      "hydra.run.dir=run")
    assert message.startswith(f"{key}: {other} is not where the resumed run") and message.endswith(
        f"valid: {recorded[key]}"), message
    assert not (in_workdir / "other.db").exists()


def test_nothing_of_mlflows_own_logging_is_printed_once_augrun_tracks(in_workdir: Path, capfd):
    import logging
    mlflow_store.open_store(store(in_workdir), "augrun")  # MLflow imported, and its loggers as augrun sets them
    for name in ("mlflow.store.db.utils", "mlflow.utils.databricks_utils", "alembic.runtime.migration"):
        logging.getLogger(name).error("SQLAlchemy database error: database is locked")  # as MLflow logs them
    assert capfd.readouterr().err == ""


def test_a_resumed_sweep_in_another_store_or_experiment_is_refused(in_workdir: Path):
    """Jobs without a checkpoint have no MLflow run to check: the sweep's own record (its root's MLFLOW_FILE) is."""
    from augrun.errors import ConfigError
    root = in_workdir / "sweep"
    root.mkdir()
    uri, other = store(in_workdir), f"sqlite:///{in_workdir / 'other.db'}"
    began = mlflow_tracking.start_sweep(root, uri, mlflow_store.open_store(uri, "augrun"), overrides=[])
    with pytest.raises(ConfigError, match=rf"^logger.tracking_uri: {other} is not the store the sweep .* logs to"):
        mlflow_tracking.start_sweep(root, mlflow_store.resolve_uri(other), mlflow_store.open_store(other, "augrun"),
                                    overrides=[])
    elsewhere = mlflow_store.open_store(uri, "elsewhere")
    with pytest.raises(ConfigError, match=r"^logger.experiment_name: names another experiment"):
        mlflow_tracking.start_sweep(root, uri, elsewhere, overrides=[])
    assert mlflow_tracking.start_sweep(root, uri, began.experiment_id, overrides=[]) == began  # the same: goes on
