"""A private single-node Slurm cluster for tests (tests/slurm/start.sh, stop.sh) and helpers to drive its jobs.

    env = start_cluster(tmp_path)          # {"SLURM_CONF": ...} or a one-line reason why not
    if isinstance(env, str):
        pytest.skip(env)
    try:
        job_id = sbatch(["--time=1", "--wrap", "sleep 5"], env)
        assert wait_for_job(job_id, env, timeout_s=60) == "COMPLETED"
    finally:
        stop_cluster(tmp_path)

There is no slurmdbd, so `sacct` does not work: states come from `scontrol show job` (finished jobs stay there for
MinJobAge=3600 s) and, once a job has left slurmctld, from the cluster's jobcomp file. Facts measured on Slurm 22.05
(Debian 12) are in tests/slurm/README.md.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

from helpers import SMOKE, read_metrics

SLURM_DIR = Path(__file__).resolve().parent / "slurm"

# States after which a job does not run again by itself (a requeued job goes back to PENDING instead).
FINAL_STATES = frozenset(
    {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE", "PREEMPTED"}
)

# Variables of an enclosing Slurm job (a test run inside sbatch) that would confuse sbatch/srun/submitit here.
_OUTER_JOB_VARS = ("SLURM_JOB_ID", "SLURM_JOBID", "SLURM_STEP_ID", "SLURM_STEPID", "SLURM_NODELIST",
                   "SLURM_JOB_NODELIST", "SLURM_NTASKS", "SLURM_NPROCS", "SLURM_PROCID", "SLURM_LOCALID",
                   "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_RESTART_COUNT")


def start_cluster(tmpdir: Path, timeout_s: float = 600) -> dict[str, str] | str:
    """Start (or find running) the cluster whose files live in tmpdir/slurm.

    Returns the variables to set for sbatch/srun/submitit (in a subprocess's env, or with monkeypatch.setenv):
    SLURM_CONF, and PATH with the cluster's bin/ first, whose sacct stand-in lets submitit see that a job ended
    without a result (with the real sacct, job.result() waits forever for a cancelled job). Or a one-line reason
    why Slurm cannot run here, for pytest.skip(). timeout_s covers a first apt-get install (about 10 s).
    """
    cluster_dir = Path(tmpdir) / "slurm"
    try:
        proc = subprocess.run(
            ["bash", str(SLURM_DIR / "start.sh"), str(cluster_dir)],
            capture_output=True, text=True, timeout=timeout_s, env=_base_env(),
        )
    except subprocess.TimeoutExpired:
        return f"tests/slurm/start.sh did not finish in {timeout_s:.0f} s"
    except OSError as exc:
        return f"cannot run tests/slurm/start.sh: {exc}"
    match = re.search(r"^export SLURM_CONF=(.+)$", proc.stdout, re.M)
    if proc.returncode == 0 and match:
        conf = match.group(1).strip()
        # PATH: the cluster's bin/ (a sacct stand-in that answers from scontrol) before the current PATH
        return {"SLURM_CONF": conf, "PATH": f"{Path(conf).parent / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"}
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    reason = lines[-1] if lines else f"tests/slurm/start.sh exited {proc.returncode}"
    return reason if reason.startswith("slurm") else f"slurm: {reason}"


def stop_cluster(tmpdir: Path) -> None:
    """Cancel the cluster's jobs and stop its daemons (only those that start_cluster(tmpdir) started)."""
    cluster_dir = Path(tmpdir) / "slurm"
    if cluster_dir.is_dir():
        subprocess.run(["bash", str(SLURM_DIR / "stop.sh"), str(cluster_dir)], capture_output=True, timeout=120,
                       env=_base_env())


def slurm_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """os.environ without an enclosing job's SLURM_* variables, with env (from start_cluster) on top."""
    full = _base_env()
    full.update(env or {})
    return full


def _base_env() -> dict[str, str]:
    full = {k: v for k, v in os.environ.items() if k not in _OUTER_JOB_VARS}
    full["PATH"] = full.get("PATH", "/usr/bin:/bin") + ":/usr/sbin:/sbin"
    return full


def _run(args: list[str], env: dict[str, str] | None, check: bool = True, timeout: float = 30):
    proc = subprocess.run(args, capture_output=True, text=True, env=slurm_env(env), timeout=timeout)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} exited {proc.returncode}: {proc.stderr.strip()}")
    return proc


def sbatch(args: list[str], env: dict[str, str], cwd: str | Path | None = None) -> str:
    """Submit with `sbatch --parsable ARGS` (options, then a script path or --wrap CMD); return the job id."""
    proc = subprocess.run(["sbatch", "--parsable", *args], capture_output=True, text=True, env=slurm_env(env),
                          timeout=30, cwd=cwd)
    if proc.returncode != 0:
        raise RuntimeError(f"sbatch exited {proc.returncode}: {proc.stderr.strip()}")
    return proc.stdout.strip().split(";")[0]


def job_info(job_id: str | int, env: dict[str, str]) -> dict[str, str] | None:
    """`scontrol show job -o` as a dict (JobState, RestartCnt, StartTime, Reason, ...), or None once slurmctld
    no longer knows the job (then the last record of the jobcomp file, if any)."""
    proc = _run(["scontrol", "show", "job", "-o", str(job_id)], env, check=False)
    line = proc.stdout.strip()
    if proc.returncode == 0 and line.startswith("JobId="):
        return _parse_fields(line.splitlines()[0])
    return _jobcomp_record(job_id, env)


def job_state(job_id: str | int, env: dict[str, str]) -> str | None:
    """The job's state (PENDING, RUNNING, COMPLETING, COMPLETED, TIMEOUT, CANCELLED, FAILED, ...), or None if
    Slurm has no record of it. A requeued job reads PENDING (Reason=BeginTime) until it starts again."""
    info = job_info(job_id, env)
    return None if info is None else info.get("JobState")


def wait_for_state(job_id: str | int, env: dict[str, str], states, timeout_s: float, poll_s: float = 0.25) -> str:
    """Poll until the job's state is one of states; return it. TimeoutError (with the last state) otherwise."""
    wanted = {states} if isinstance(states, str) else set(states)
    deadline = time.monotonic() + timeout_s
    state = None
    while True:
        state = job_state(job_id, env)
        if state in wanted:
            return state
        if time.monotonic() >= deadline:
            raise TimeoutError(f"job {job_id} not in {sorted(wanted)} after {timeout_s:.0f} s (state {state})")
        time.sleep(poll_s)


def wait_for_job(job_id: str | int, env: dict[str, str], timeout_s: float, poll_s: float = 0.25) -> str:
    """Wait until the job has finished for good (one of FINAL_STATES) and return that state."""
    return wait_for_state(job_id, env, FINAL_STATES, timeout_s, poll_s)


def restarts(job_id: str | int, env: dict[str, str]) -> int:
    """How many times the job was requeued (scontrol's Restarts; the job itself sees SLURM_RESTART_COUNT)."""
    info = job_info(job_id, env) or {}
    return int(info.get("Restarts") or 0)


def requeue(job_id: str | int, env: dict[str, str]) -> None:
    """`scontrol requeue`: a running job's processes get SIGCONT+SIGTERM at once, SIGKILL KillWait (10 s) later;
    it goes back to PENDING (Reason=BeginTime) and starts again cred_expire (5 s here) after its processes ended."""
    _run(["scontrol", "requeue", str(job_id)], env)


def start_now(job_id: str | int, env: dict[str, str], timeout_s: float = 60) -> None:
    """Let a requeued job start as soon as it safely can: `scontrol update JobId=N StartTime=now`.

    Waits for the job to be PENDING first (a job still COMPLETING cannot be updated), and for the second after
    its requeue to pass: a job started again within the same second as its requeue is killed for good
    ("Job credential revoked", state FAILED). With cred_expire=5 this saves about 4 s per requeue.
    """
    wait_for_state(job_id, env, "PENDING", timeout_s, poll_s=0.1)
    info = job_info(job_id, env) or {}
    begin = _epoch(info.get("StartTime", ""))
    if begin is not None and int(info.get("Restarts") or 0) > 0:
        safe_at = begin - _cred_expire(env) + 1.5
        time.sleep(max(0.0, safe_at - time.time()))
    _run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], env)


def cancel(job_id: str | int, env: dict[str, str]) -> None:
    _run(["scancel", str(job_id)], env, check=False)


def _epoch(stamp: str) -> float | None:
    try:
        return time.mktime(time.strptime(stamp, "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        return None


def _cred_expire(env: dict[str, str]) -> int:
    try:
        match = re.search(r"cred_expire=(\d+)", Path(env["SLURM_CONF"]).read_text())
    except (KeyError, OSError):
        match = None
    return int(match.group(1)) if match else 120


def _parse_fields(line: str) -> dict[str, str]:
    # "JobId=5 JobName=wrap UserId=root(0) ... Command=(null) WorkDir=/tmp/x" (values may hold spaces, rarely)
    fields: dict[str, str] = {}
    for match in re.finditer(r"(?:^|\s)([A-Za-z][\w:/.-]*)=(.*?)(?=\s[A-Za-z][\w:/.-]*=|$)", line):
        fields.setdefault(match.group(1), match.group(2))
    return fields


def _jobcomp_record(job_id: str | int, env: dict[str, str]) -> dict[str, str] | None:
    conf = env.get("SLURM_CONF")
    if not conf:
        return None
    log = Path(conf).parent / "log" / "jobcomp.log"
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        if line.startswith(f"JobId={job_id} "):
            return _parse_fields(line)
    return None


# --- running augrun on it (tests/test_slurm*.py) ---------------------------------------------------------------------

QUICK = [*SMOKE, "trainer.workers=0", "trainer.threads=1"]  # threads fixed: the same float sums in and out of Slurm
LONG = [*QUICK, "trainer.epochs=120"]                        # ~35 s of training on one core: past the first warning
MEDIUM = [*QUICK, "trainer.epochs=40"]                       # ~12 s: long enough to be interrupted part-way
SLURM = ["hydra/launcher=submitit_slurm", "hydra.launcher.partition=debug"]
TIME_LIMITED = [*SLURM, "hydra.launcher.timeout_min=1", "hydra.launcher.signal_delay_s=50"]


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


def epochs(run_dir: Path) -> list[int]:
    return [record["epoch"] for record in read_metrics(run_dir)]


def when(condition, timeout: float = 300, poll: float = 0.5) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(poll)
