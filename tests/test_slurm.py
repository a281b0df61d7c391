"""augrun on a real single-node Slurm (tests/slurm/start.sh: slurm-wlm and munge, installed with apt-get when missing
and started as root; skipped with a one-line reason where that cannot be): sweeps through Hydra's submitit launcher,
a job longer than its time limit requeued and finished by itself, a preempted job continuing by itself, a cancelled
sweep resumed, and a job of two tasks trained as one DDP run, with metrics equal to a run never interrupted.

Time limits are checked by slurmctld every 30 s, so a job with `timeout_min=1 signal_delay_s=50` is warned (SIGUSR2)
at the first check after it starts, 0-30 s later; the long run here trains for longer than that.
"""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import read_metrics, without_timing
from slurm_cluster import (
    LONG,
    MEDIUM,
    SLURM,
    TIME_LIMITED,
    augrun,
    cancel,
    epochs,
    finished,
    requeue,
    restarts,
    running_jobs,
    sbatch,
    slurm_job_ids,
    start_reference,
    wait_for_job,
    when,
)

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

def test_a_sweep_longer_than_its_time_limit_finishes_by_itself_with_exact_metrics(slurm, tmp_path: Path):
    reference = start_reference(*LONG, cwd=tmp_path, env=slurm)
    sweep = augrun("train", "-m", *TIME_LIMITED, *LONG, "trainer.epochs=120,2", "hydra.sweep.dir=sweep",
                   cwd=tmp_path, env=slurm)
    assert sweep.returncode == 0, sweep.stderr
    finished(reference)
    long_job, short_job = slurm_job_ids(sweep.stderr)
    assert restarts(long_job, slurm) >= 1 and restarts(short_job, slurm) == 0  # requeued at its limit, by itself
    assert epochs(tmp_path / "sweep" / "0") == list(range(1, 121)) and epochs(tmp_path / "sweep" / "1") == [1, 2]
    assert without_timing(read_metrics(tmp_path / "sweep" / "0")) == without_timing(read_metrics(tmp_path / "reference"))
    assert (tmp_path / "sweep" / "comparison.md").is_file()


def test_a_preempted_job_continues_by_itself_with_exact_metrics(slurm, tmp_path: Path):
    """`scontrol requeue` of a running job (a preemption): SIGTERM, a checkpoint, and the job runs again from it. The
    job is a plain sbatch script running augrun with srun, no submitit. It logs to MLflow: the requeued job goes on in
    the same MLflow run, which ends FINISHED with every epoch once."""
    reference = start_reference(*MEDIUM, cwd=tmp_path, env=slurm)
    script = tmp_path / "job.sh"
    store = f"sqlite:///{tmp_path}/mlflow.db"
    tracked = f"logger=mlflow logger.tracking_uri={store}" if importlib.util.find_spec("mlflow") else ""
    script.write_text(f"#!/bin/bash\nsrun {sys.executable} -m augrun train {' '.join(MEDIUM)} {tracked} "
                      "hydra.run.dir=run\n")
    job = sbatch(["--requeue", "--partition=debug", f"--output={tmp_path}/job-%j.out", "--open-mode=append",
                  str(script)], slurm, cwd=tmp_path)
    when(lambda: (tmp_path / "run" / "metrics.jsonl").is_file() and len(epochs(tmp_path / "run")) >= 3)
    requeue(job, slurm)
    assert wait_for_job(job, slurm, timeout_s=300) == "COMPLETED"
    finished(reference)
    assert restarts(job, slurm) == 1
    log = (tmp_path / f"job-{job}.out").read_text()
    assert "stopped by signal 15" in log and "checkpoint saved" in log
    assert epochs(tmp_path / "run") == list(range(1, 41))
    assert without_timing(read_metrics(tmp_path / "run")) == without_timing(read_metrics(tmp_path / "reference"))
    if tracked:
        from mlflow.tracking import MlflowClient
        client = MlflowClient(tracking_uri=store)
        [run] = client.search_runs([client.get_experiment_by_name("augrun").experiment_id])
        assert run.info.status == "FINISHED"
        history = client.get_metric_history(run.info.run_id, "test_acc")
        assert sorted(m.step for m in history) == list(range(1, 41))
        assert [m.value for m in sorted(history, key=lambda m: m.step)] == pytest.approx(
            [r["test_acc"] for r in read_metrics(tmp_path / "run")])


def test_a_cancelled_sweep_job_is_marked_stopped_and_resume_continues_it(slurm, tmp_path: Path):
    reference = start_reference(*MEDIUM, cwd=tmp_path, env=slurm)
    command = ["train", "-m", *SLURM, *MEDIUM, "seed=0", "hydra.sweep.dir=sweep"]
    sweep = subprocess.Popen([sys.executable, "-m", "augrun", *command], cwd=tmp_path, env=slurm,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run_dir = tmp_path / "sweep" / "0"
    when(lambda: (run_dir / "metrics.jsonl").is_file() and len(epochs(run_dir)) >= 3)
    (job,) = running_jobs(slurm)
    cancel(job, slurm)
    _, stderr = sweep.communicate(timeout=300)
    # the job checkpointed on Slurm's SIGTERM and says so; the sweep does not wait for a job that left Slurm
    assert f"Slurm job {job}" in stderr and "ended without a result (CANCELLED)" in stderr, stderr
    assert '"status": "stopped"' in (run_dir / "summary.json").read_text()
    stopped_at = len(epochs(run_dir))

    resumed = augrun(*command, "resume=true", cwd=tmp_path, env=slurm)
    assert resumed.returncode == 0, resumed.stderr
    finished(reference)
    assert 3 <= stopped_at < 40 and epochs(run_dir) == list(range(1, 41))
    assert without_timing(read_metrics(run_dir)) == without_timing(read_metrics(tmp_path / "reference"))
