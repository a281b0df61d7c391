"""A real `augrun train -m` sweep: the comparison at its root, a failed job marked, `augrun compare` reproducing it."""
from __future__ import annotations

import csv
import statistics
from pathlib import Path

import pytest
from helpers import SMOKE, read_metrics, run_augrun

pytestmark = pytest.mark.slow

FAIL_ONE_JOB = '''
# sitecustomize for the test: the job with aug=none and seed=1 fails while training, as a real crash would
import augrun.run.trainer as trainer
original = trainer._worker
def _worker(rank, world, device, prepared):
    if prepared.cfg.seed == 1 and not prepared.cfg.aug.train:
        raise RuntimeError("injected crash")
    return original(rank, world, device, prepared)
trainer._worker = _worker
'''


def read_csv(path: Path) -> dict[str, dict[str, str]]:
    with open(path) as file:
        return {row["group"]: row for row in csv.DictReader(file)}


def test_sweep_writes_a_comparison_that_marks_the_failed_job(workdir: Path):
    hooks = workdir / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(FAIL_ONE_JOB)
    result = run_augrun("train", "-m", *SMOKE, "trainer.workers=0", "aug=none,flip_only", "seed=0,1",
                        "hydra.sweep.dir=sweep", cwd=workdir, env={"PYTHONPATH": str(hooks)})
    sweep = workdir / "sweep"
    # the failed job did not stop the others, and the sweep's status says one failed
    assert result.returncode == 1 and "job 1 (" in result.stderr and "injected crash" in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("augrun: error: 1 sweep job(s) failed:")
    for name in ("comparison.md", "comparison.csv", "comparison.png"):
        assert (sweep / name).is_file()

    rows = read_csv(sweep / "comparison.csv")
    assert set(rows) == {"aug=none", "aug=flip_only"}
    assert (rows["aug=none"]["n_seeds"], rows["aug=none"]["n_failed"]) == ("1", "1")
    assert (rows["aug=flip_only"]["n_seeds"], rows["aug=flip_only"]["n_failed"]) == ("2", "0")
    # jobs run in order aug=none seed 0, 1, then aug=flip_only seed 0, 1: recompute from their metrics.jsonl
    flip = [read_metrics(sweep / job)[-1] for job in ("2", "3")]
    none = read_metrics(sweep / "0")[-1]
    assert float(rows["aug=flip_only"]["test_acc_mean"]) == pytest.approx(statistics.mean(r["test_acc"] for r in flip), rel=1e-5)
    assert float(rows["aug=flip_only"]["test_acc_std"]) == pytest.approx(statistics.stdev(r["test_acc"] for r in flip), rel=1e-4, abs=1e-6)
    assert float(rows["aug=none"]["train_acc_mean"]) == pytest.approx(none["train_acc"], rel=1e-5)
    assert float(rows["aug=flip_only"]["delta_vs_none"]) == pytest.approx(
        statistics.mean(r["test_acc"] for r in flip) - none["test_acc"], rel=1e-4, abs=1e-6)
    assert "injected crash" in (sweep / "comparison.md").read_text()

    rebuilt = run_augrun("compare", str(sweep), "--out", "rebuilt", cwd=workdir)
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert (workdir / "rebuilt" / "comparison.csv").read_text() == (sweep / "comparison.csv").read_text()


def test_compare_on_a_directory_without_runs_exits_2(workdir: Path):
    (workdir / "empty").mkdir()
    result = run_augrun("compare", "empty", cwd=workdir)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("augrun: error: ") and "empty" in line


def test_tensorboard_logger_writes_event_files(workdir: Path):
    pytest.importorskip("tensorboard")
    result = run_augrun("train", *SMOKE, "trainer.workers=0", "logger=tensorboard", "hydra.run.dir=run", cwd=workdir)
    assert result.returncode == 0, result.stderr
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(workdir / "run" / "tensorboard"))
    events.Reload()
    (record,) = read_metrics(workdir / "run")
    assert set(events.Tags()["scalars"]) == {"train_loss", "train_acc", "test_acc", "lr", "seconds", "examples_per_s"}
    (point,) = events.Scalars("test_acc")
    assert point.step == 1 and point.value == pytest.approx(record["test_acc"])
