"""augrun on a real single-node Slurm (tests/slurm/start.sh: slurm-wlm and munge, installed with apt-get when missing
and started as root; skipped with a one-line reason where that cannot be): sweeps through Hydra's submitit launcher,
a job longer than its time limit requeued and finished by itself, a preempted job continuing by itself, a cancelled
sweep resumed, and a job of two tasks trained as one DDP run, with metrics equal to a run never interrupted.

Time limits are checked by slurmctld every 30 s, so a job with `timeout_min=1 signal_delay_s=20` is warned (SIGUSR2)
10-40 s after it starts; the long runs here train for longer than that.
"""
from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import SMOKE, read_metrics, without_timing
from slurm_cluster import cancel, job_info, requeue, sbatch, slurm_env, start_cluster, stop_cluster, wait_for_job

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

QUICK = [*SMOKE, "trainer.workers=0", "trainer.threads=1"]  # threads fixed: the same float sums in and out of Slurm
LONG = [*QUICK, "trainer.epochs=150"]                        # ~45 s of training on one core: past the first warning
MEDIUM = [*QUICK, "trainer.epochs=40"]                       # ~12 s: long enough to be interrupted part-way
SLURM = ["hydra/launcher=submitit_slurm", "hydra.launcher.partition=debug"]
TIME_LIMITED = [*SLURM, "hydra.launcher.timeout_min=1", "hydra.launcher.signal_delay_s=20"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("slurm")
    env = start_cluster(folder)
    if isinstance(env, str):
        pytest.skip(env)
    full = slurm_env(env)
    full["PATH"] = full["PATH"].replace(str(folder), "/nonexistent")  # no sacct stand-in: augrun must not need sacct
    yield full
    stop_cluster(folder)


def augrun(*args: str, cwd: Path, env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "augrun", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def start_reference(*overrides: str, cwd: Path, env: dict[str, str]) -> subprocess.Popen:
    """The same run outside Slurm, never interrupted, started alongside the Slurm job."""
    local = {k: v for k, v in env.items() if not k.startswith("SLURM_")}
    return subprocess.Popen([sys.executable, "-m", "augrun", "train", *overrides, "hydra.run.dir=reference"],
                            cwd=cwd, env=local, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def finished(process: subprocess.Popen, timeout: float = 600) -> None:
    _, stderr = process.communicate(timeout=timeout)
    assert process.returncode == 0, stderr


def slurm_job_ids(stderr: str) -> list[str]:
    line = next(line for line in stderr.splitlines() if line.startswith("augrun: Slurm job(s) "))
    return line.removeprefix("augrun: Slurm job(s) ").split("; ")[0].split(", ")


def running_jobs(env: dict[str, str]) -> list[str]:
    listed = subprocess.run(["squeue", "--noheader", "--array", "--states=RUNNING", "--format=%i"], env=env,
                            capture_output=True, text=True, timeout=30, check=True)
    return listed.stdout.split()


def restarts(job_id: str, env: dict[str, str]) -> int:
    return int((job_info(job_id, env) or {}).get("Restarts") or 0)


def epochs(run_dir: Path) -> list[int]:
    return [record["epoch"] for record in read_metrics(run_dir)]


def when(condition, timeout: float = 300, poll: float = 0.5) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(poll)


def test_a_sweep_longer_than_its_time_limit_finishes_by_itself_with_exact_metrics(cluster, tmp_path: Path):
    reference = start_reference(*LONG, cwd=tmp_path, env=cluster)
    sweep = augrun("train", "-m", *TIME_LIMITED, *LONG, "trainer.epochs=150,2", "hydra.sweep.dir=sweep",
                   cwd=tmp_path, env=cluster)
    assert sweep.returncode == 0, sweep.stderr
    finished(reference)
    long_job, short_job = slurm_job_ids(sweep.stderr)
    assert restarts(long_job, cluster) >= 1 and restarts(short_job, cluster) == 0  # requeued at its limit, by itself
    assert epochs(tmp_path / "sweep" / "0") == list(range(1, 151)) and epochs(tmp_path / "sweep" / "1") == [1, 2]
    assert without_timing(read_metrics(tmp_path / "sweep" / "0")) == without_timing(read_metrics(tmp_path / "reference"))
    assert (tmp_path / "sweep" / "comparison.md").is_file()


def test_a_preempted_job_continues_by_itself_with_exact_metrics(cluster, tmp_path: Path):
    """`scontrol requeue` of a running job (a preemption): SIGTERM, a checkpoint, and the job runs again from it. The
    job is a plain sbatch script running augrun with srun, no submitit."""
    reference = start_reference(*MEDIUM, cwd=tmp_path, env=cluster)
    script = tmp_path / "job.sh"
    script.write_text(f"#!/bin/bash\nsrun {sys.executable} -m augrun train {' '.join(MEDIUM)} hydra.run.dir=run\n")
    job = sbatch(["--requeue", "--partition=debug", f"--output={tmp_path}/job-%j.out", "--open-mode=append",
                  str(script)], cluster, cwd=tmp_path)
    when(lambda: (tmp_path / "run" / "metrics.jsonl").is_file() and len(epochs(tmp_path / "run")) >= 3)
    requeue(job, cluster)
    assert wait_for_job(job, cluster, timeout_s=300) == "COMPLETED"
    finished(reference)
    assert restarts(job, cluster) == 1
    log = (tmp_path / f"job-{job}.out").read_text()
    assert "stopped by signal 15" in log and "checkpoint saved" in log
    assert epochs(tmp_path / "run") == list(range(1, 41))
    assert without_timing(read_metrics(tmp_path / "run")) == without_timing(read_metrics(tmp_path / "reference"))


def test_a_cancelled_sweep_job_is_marked_stopped_and_resume_continues_it(cluster, tmp_path: Path):
    reference = start_reference(*MEDIUM, cwd=tmp_path, env=cluster)
    command = ["train", "-m", *SLURM, *MEDIUM, "seed=0", "hydra.sweep.dir=sweep"]
    sweep = subprocess.Popen([sys.executable, "-m", "augrun", *command], cwd=tmp_path, env=cluster,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run_dir = tmp_path / "sweep" / "0"
    when(lambda: (run_dir / "metrics.jsonl").is_file() and len(epochs(run_dir)) >= 3)
    (job,) = running_jobs(cluster)
    cancel(job, cluster)
    _, stderr = sweep.communicate(timeout=300)
    # the job checkpointed on Slurm's SIGTERM and says so; the sweep does not wait for a job that left Slurm
    assert f"Slurm job {job}" in stderr and "ended without a result (CANCELLED)" in stderr, stderr
    assert '"status": "stopped"' in (run_dir / "summary.json").read_text()
    stopped_at = len(epochs(run_dir))

    resumed = augrun(*command, "resume=true", cwd=tmp_path, env=cluster)
    assert resumed.returncode == 0, resumed.stderr
    finished(reference)
    assert 3 <= stopped_at < 40 and epochs(run_dir) == list(range(1, 41))
    assert without_timing(read_metrics(run_dir)) == without_timing(read_metrics(tmp_path / "reference"))


@pytest.fixture(scope="module")
def two_process_reference(tmp_path_factory, cluster) -> list[dict]:
    """augrun's own two-process DDP run (gloo, CPU): what a job of two Slurm tasks must equal."""
    folder = tmp_path_factory.mktemp("nprocs2")
    result = augrun("train", *QUICK, "trainer.epochs=2", "trainer.nprocs=2", "hydra.run.dir=run", cwd=folder,
                    env={k: v for k, v in cluster.items() if not k.startswith("SLURM_")})
    assert result.returncode == 0, result.stderr
    return without_timing(read_metrics(folder / "run"))


def test_a_job_of_two_tasks_is_one_ddp_run(cluster, tmp_path: Path, two_process_reference):
    sweep = augrun("train", "-m", *SLURM, "hydra.launcher.tasks_per_node=2", *QUICK, "trainer.epochs=2",
                   "hydra.sweep.dir=sweep", cwd=tmp_path, env=cluster)
    assert sweep.returncode == 0, sweep.stderr
    run_dir = tmp_path / "sweep" / "0"
    assert without_timing(read_metrics(run_dir)) == two_process_reference  # one run, each epoch once
    assert '"devices": [\n    "cpu",\n    "cpu"\n  ]' in (run_dir / "summary.json").read_text()


def test_srun_with_two_tasks_in_an_sbatch_script_is_one_ddp_run(cluster, tmp_path: Path, two_process_reference):
    script = tmp_path / "job.sh"
    script.write_text(f"#!/bin/bash\nsrun {sys.executable} -m augrun train {' '.join(QUICK)} trainer.epochs=2 "
                      "hydra.run.dir=run\n")
    job = sbatch(["--ntasks=2", "--partition=debug", f"--output={tmp_path}/job.out", str(script)], cluster,
                 cwd=tmp_path)
    assert wait_for_job(job, cluster, timeout_s=300) == "COMPLETED", (tmp_path / "job.out").read_text()
    assert without_timing(read_metrics(tmp_path / "run")) == two_process_reference
    assert (tmp_path / "job.out").read_text().count("examples/sec on ['cpu', 'cpu']") == 1  # rank 0 alone speaks



def test_ctrl_c_to_a_sweep_cancels_its_jobs_after_their_checkpoints(cluster, tmp_path: Path):
    sweep = subprocess.Popen([sys.executable, "-m", "augrun", "train", "-m", *SLURM, *MEDIUM, "seed=0",
                              "hydra.sweep.dir=sweep"], cwd=tmp_path, env=cluster, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    run_dir = tmp_path / "sweep" / "0"
    when(lambda: (run_dir / "metrics.jsonl").is_file() and len(epochs(run_dir)) >= 3)
    sweep.send_signal(signal.SIGINT)
    _, stderr = sweep.communicate(timeout=300)
    assert sweep.returncode == 130, stderr
    assert "cancelling Slurm job(s)" in stderr and "resume=true" in stderr.splitlines()[-1]
    assert '"status": "stopped"' in (run_dir / "summary.json").read_text()  # its checkpoint came first
    assert running_jobs(cluster) == []
