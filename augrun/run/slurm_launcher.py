"""Hydra's submitit launcher as augrun runs a sweep on Slurm (`hydra/launcher=submitit_slurm`, which the pre-check
points at hydra_plugins.augrun_launchers.AugrunSlurmLauncher, whose work is done here). What it adds to the plugin:

- A job warned of its time limit (SIGUSR2, `signal_delay_s` before it) or preempted (SIGTERM) stops as on Ctrl-C:
  the training loop finishes its step and writes a mid-epoch checkpoint first. Then submitit's own handler requeues a
  job at its time limit (until `max_num_timeout` runs out); Slurm requeues a preempted one itself. The requeued job
  continues from its checkpoint (augrun.run.launchers.requeued).
- A job of several tasks (`tasks_per_node`, `nodes`) is one DDP run, each task one rank (augrun.run.launchers); only
  rank 0 writes Hydra's copy of the config, as only rank 0 writes the run's own files.
- The sweep waits for its jobs by their result files and by `squeue`, not by `sacct`, which needs an accounting
  database that many clusters (and a test's Slurm) lack; a job that Slurm no longer knows and that left no result is
  reported failed after a grace period instead of being waited for forever.
- SIGINT/SIGTERM to the sweep itself cancels its jobs (each checkpoints on Slurm's SIGTERM), waits for them to end, and
  stops the command as any stopped sweep does: `resume=true` on the same sweep directory continues it.
"""
from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from omegaconf import OmegaConf

from augrun import signals
from augrun.run import launchers

POLL_S = 2.0               # how often the sweep looks for results and asks squeue
# A job that Slurm lists as ended (or no longer lists) and that has no result file after these many seconds ended
# without one (cancelled, killed, node failure): the grace covers a result file still on its way over a shared file
# system. A requeued job is listed as pending meanwhile, and waited for.
ENDED_GRACE_S = 20.0
GONE_GRACE_S = 30.0
ACTIVE_STATES = {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED",
                 "RESIZING", "SUSPENDED", "STAGE_OUT", "SIGNALING", "STOPPED", "RESV_DEL_HOLD"}
CANCEL_WAIT_S = 180.0      # after cancelling on a signal: how long the jobs get to checkpoint and end
SQUEUE_TIMEOUT_S = 30.0


def run_task(plugin_call: Callable[..., JobReturn], sweep_overrides: list[str], job_dir_key: str, job_num: int,
             job_id: str, singleton_state: dict) -> JobReturn:
    """One task of a job, on a Slurm node: the plugin's run of the Hydra job (`plugin_call`), with rank 0 alone
    writing Hydra's files, and a stop handed to submitit's requeue once the run has checkpointed."""
    requeue = signal.getsignal(signals.TIME_LIMIT_SIGNAL)  # submitit's: checkpoint() this call, then requeue
    member = launchers.group_member()
    if member is not None and not member.writes:
        sweep_overrides = [*sweep_overrides, "hydra.output_subdir=null"]  # rank 0 writes the job's directory
    try:
        return plugin_call(sweep_overrides, job_dir_key, job_num, job_id, singleton_state)
    except signals.Stopped as stop:  # the run has checkpointed; augrun.commands.train said what happened
        if stop.signum == signals.TIME_LIMIT_SIGNAL and callable(requeue):
            requeue(stop.signum, None)  # rank 0 requeues the job and exits; the other ranks return and exit too
        sys.exit(stop.status)  # no result file: a preempted job runs again, a cancelled one is reported gone


def submit_and_wait(launcher, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list[JobReturn]:
    """Submit the jobs as the plugin does (its options, one job array), then wait for them in augrun's way."""
    import submitit
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

    params, cluster = launcher.params, launcher._EXECUTOR
    executor = submitit.AutoExecutor(cluster=cluster, folder=params["submitit_folder"],
                                     **{f"{cluster}_max_num_timeout": params["max_num_timeout"]})
    queue_keys = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(**{key if key in queue_keys else f"{cluster}_{key}": value
                                  for key, value in params.items() if key not in ("submitit_folder", "max_num_timeout")})
    sweep_dir = Path(str(launcher.config.hydra.sweep.dir))
    sweep_dir.mkdir(parents=True, exist_ok=True)
    arguments = []
    for number, overrides in enumerate(job_overrides, start=initial_job_idx):
        print(f"augrun: submitting job {number}: {' '.join(filter_overrides(overrides))}", file=sys.stderr)
        arguments.append((list(overrides), "hydra.sweep.dir", number, f"job_id_for_{number}", Singleton.get_state()))
    jobs = executor.map_array(launcher, *zip(*arguments))
    print(f"augrun: Slurm job(s) {', '.join(job.job_id for job in jobs)}; waiting for them", file=sys.stderr)
    return wait_for(jobs, first_number=initial_job_idx, sweep_dir=sweep_dir)


def wait_for(jobs: list, *, first_number: int, sweep_dir: Path) -> list[JobReturn]:
    """Each job's JobReturn, once every job has a result or has ended without one."""
    flag = signals.SignalFlag.installed()
    returns: dict[int, JobReturn] = {}
    last_active = {index: time.monotonic() for index in range(len(jobs))}
    cancelled_at = None
    while len(returns) < len(jobs):
        states = _squeue_states([job.job_id for index, job in enumerate(jobs) if index not in returns])
        now = time.monotonic()
        for index, job in enumerate(jobs):
            if index in returns:
                continue
            state = None if states is None else states.get(job.job_id, "")
            if job.paths.result_pickle.exists():
                returns[index] = _result(job, first_number + index)
            elif state is None or state in ACTIVE_STATES:  # None: squeue did not answer; ask again
                last_active[index] = now
            elif now - last_active[index] > (ENDED_GRACE_S if state else GONE_GRACE_S):
                returns[index] = _ended(job, first_number + index, state or "no longer known to Slurm")
        if flag.signum is not None and cancelled_at is None:
            cancelled_at = now
            pending = [job.job_id for index, job in enumerate(jobs) if index not in returns]
            print(f"augrun: signal {flag.signum}: cancelling Slurm job(s) {', '.join(pending)}; each checkpoints "
                  "before it ends", file=sys.stderr)
            _scancel(pending)
        if cancelled_at is not None and now - cancelled_at > CANCEL_WAIT_S:
            break
        if len(returns) < len(jobs):
            time.sleep(POLL_S)
    if flag.signum is not None:
        raise signals.Stopped(flag.signum, f"stopped by signal {flag.signum}; the sweep's Slurm jobs were cancelled "
                                           "after their checkpoints. Resume the sweep with the same command plus: "
                                           f"hydra.sweep.dir={sweep_dir} resume=true")
    return [returns[index] for index in range(len(jobs))]


def _result(job, number: int) -> JobReturn:
    """The job's own JobReturn (task 0's); a job that raised is a failed job of the sweep, not the sweep's end."""
    try:
        return job.results()[0]
    except Exception as error:  # submitit's FailedJobError, with the task's traceback in its log
        return _failed_return(number, f"Slurm job {job.job_id} failed: {str(error).splitlines()[0]}")


def _ended(job, number: int, state: str) -> JobReturn:
    return _failed_return(number, f"Slurm job {job.job_id} ended without a result ({state}); its log: "
                                  f"{job.paths.stderr}")


def _failed_return(number: int, message: str) -> JobReturn:
    """As augrun's own failed sweep job returns (no objective: commands.train.FAILED_OBJECTIVE), so that the sweep
    (and a search) goes on and its comparison marks the job from what its directory holds."""
    print(f"augrun: job {number}: {message}", file=sys.stderr)
    returned = JobReturn()
    returned.status, returned.return_value = JobStatus.COMPLETED, None
    return returned


def _squeue_states(job_ids: list[str]) -> dict[str, str] | None:
    """The state of each of `job_ids` (array tasks as 123_4) that slurmctld still holds, ended ones included (for
    MinJobAge); None when squeue did not answer."""
    if not job_ids:
        return {}
    try:
        listed = subprocess.run(["squeue", "--noheader", "--array", "--states=all", "--format=%i %T",
                                 "--jobs", ",".join(job_ids)], capture_output=True, text=True, timeout=SQUEUE_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if listed.returncode != 0:
        # squeue refuses the whole list when one id has left the controller's memory ("Invalid job id")
        return {} if "Invalid job id" in listed.stderr else None
    return dict(line.split(None, 1) for line in listed.stdout.splitlines() if len(line.split()) == 2)


def _scancel(job_ids: list[str]) -> None:
    try:
        subprocess.run(["scancel", *job_ids], capture_output=True, timeout=SQUEUE_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as error:
        print(f"augrun: scancel failed ({error}); cancel them by hand: scancel {' '.join(job_ids)}", file=sys.stderr)

