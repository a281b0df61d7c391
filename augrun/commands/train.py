"""One `augrun train` below its argument handling, shared by the command line (augrun.cli) and the Python API
(augrun.api): the pre-check, Hydra's run of every job, and how each job ends.

`execute(command)` returns where the run or sweep went and which sweep jobs failed, or raises: UserError (bad input, found
by the pre-check), JobFailed (a single run that failed once started), signals.Stopped (SIGINT/SIGTERM). The callers say
it their way: the command line as one line and an exit status, the API as Python exceptions.

No torch import at module level: the command line reports a typo before torch loads, which takes seconds.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig

from augrun import rundir, signals
from augrun.commands import precheck
from augrun.config.command_line import CommandLine, run_hydra
from augrun.config.compose import to_train_config
from augrun.config.schema import TrainConfig
from augrun.errors import INPUT_ERROR_STATUS, UserError, first_line
from augrun.run import launchers

# The pre-check's jobs, by number, while Hydra runs them: a job Hydra runs in this process (the basic launcher) takes
# its plan over instead of preparing again. Jobs in other processes (joblib, submitit) prepare themselves.
_PLANNED: dict[int, precheck.Job] = {}


class JobFailed(BaseException):
    """A single run that failed once Hydra started it: its one line and exit status (2: bad input found in the run, as
    `user_error`; 1: a failure while training). A BaseException, as the SystemExit the command line once raised here
    was, because Hydra's job runner turns any Exception into a printed traceback and exit status 1."""

    def __init__(self, message: str, status: int, user_error: UserError | None = None):
        super().__init__(message, status)
        self.message, self.status, self.user_error = message, status, user_error


@dataclass
class TrainOutcome:
    """Where a finished `augrun train` went."""
    target: Path | None             # the run's directory or the sweep's root; None when Hydra only printed (--cfg job)
    multirun: bool
    failed: list[str] = field(default_factory=list)  # the sweep's failed jobs (their directories)


def execute(command: CommandLine) -> TrainOutcome:
    """Check every job, then run them with Hydra. A signal that stops the run carries its directory (Stopped.target)."""
    claimed = sweep_tracking = None
    member = launchers.group_member()
    if command.prints_only:
        hydra_argv = command.hydra_argv()
    elif member is not None and not member.writes and not command.multirun:
        hydra_argv = _joining_rank_argv(command)  # rank 0 checks and writes; the others only join
    else:
        checked = precheck.precheck_train(command, visible_gpus=_visible_gpus)
        hydra_argv, claimed, sweep_tracking = checked.hydra_argv, checked.claimed, checked.sweep_tracking
        _PLANNED.update({job.number: job for job in checked.jobs})
    if any(arg.endswith((precheck.AUGRUN_SLURM_LAUNCHER, precheck.AUGRUN_OPTUNA_SWEEPER)) for arg in hydra_argv):
        _register_augrun_plugins()
    passed_on: list[int] = []  # the parallel workers a signal was passed on to
    ended = "failed"  # how the sweep ended, for its parent run in MLflow
    try:
        with _signals_reach_parallel_jobs(passed_on):
            run_hydra(train_task, "train", hydra_argv)
        if passed_on:  # a parallel sweep whose jobs stopped on the signal (their notes said how to resume)
            raise signals.Stopped(signals.SignalFlag.installed().signum, None)
    except signals.Stopped as stop:
        ended = "stopped"
        stop.target = claimed  # for the caller's note on how to resume
        if stop.signum == signals.TIME_LIMIT_SIGNAL:
            _requeue_at_time_limit(stop)
        raise
    except UserError:  # found by a plugin of augrun's as the sweep ran (a resumed search that is not the same search)
        raise
    except Exception as error:  # escaped Hydra itself: its own writes (a full disk), a launcher plugin's failure
        raise JobFailed(_describe_hydra_failure(error), 1) from None
    else:
        failed = _failed_jobs(claimed) if claimed is not None and command.multirun else []
        ended = "failed" if failed else "completed"
    finally:
        _PLANNED.clear()
        if sweep_tracking is not None:
            from augrun.compare.tracking import finish_sweep_tracking
            finish_sweep_tracking(sweep_tracking, claimed, ended)
    return TrainOutcome(claimed, command.multirun, failed)


@contextlib.contextmanager
def _signals_reach_parallel_jobs(passed_on: list[int]) -> Iterator[None]:
    """A parallel launcher (joblib) runs the jobs in worker processes that a signal sent to this process alone (a
    scheduler's, `kill PID`) never reaches: while Hydra runs, a watcher passes on the first one this process receives,
    so that each running job stops as it would here, after its checkpoint, and the sweep stops with it. The workers
    it reached are added to `passed_on`."""
    flag = signals.SignalFlag.installed()
    if not flag.handles:  # a call from a thread: this process's signals are its main thread's, not ours
        yield
        return
    done = threading.Event()

    def pass_on() -> None:
        while not done.wait(0.2):
            if flag.signum is not None:
                for pid in _parallel_workers():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, flag.signum)
                        passed_on.append(pid)
                return

    watcher = threading.Thread(target=pass_on, name="augrun-pass-on-signals", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        done.set()
        watcher.join()


def _parallel_workers() -> list[int]:
    """This process's children that run sweep jobs: joblib's loky workers (not its resource trackers)."""
    workers = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            if int((entry / "stat").read_text().rpartition(")")[2].split()[1]) == os.getpid() and \
                    b"LokyProcess" in (entry / "cmdline").read_bytes():
                workers.append(int(entry.name))
        except (OSError, ValueError, IndexError):  # gone meanwhile, or not ours to read
            continue
    return workers


def _register_augrun_plugins() -> None:
    """Hydra instantiates plugins from its plugin registry, filled by a scan of the hydra_plugins folders on disk,
    which misses augrun's own under an editable install (`pip install -e`): register them by hand, as Hydra allows."""
    from hydra.core.plugins import Plugins

    import hydra_plugins.augrun_launchers as augrun_plugins
    for name in ("AugrunSlurmLauncher", "AugrunOptunaSweeper"):
        if hasattr(augrun_plugins, name):  # defined where its plugin's optional extra is installed
            Plugins.instance().register(getattr(augrun_plugins, name))


def _requeue_at_time_limit(stop: signals.Stopped) -> None:
    """A Slurm job warned of its time limit (sbatch --signal=USR2@<seconds>) has checkpointed: rank 0 requeues it, as
    Lightning does, and the job runs again and continues by itself (launchers.requeued). Jobs of submitit's launcher
    are requeued by submitit (augrun.run.slurm_launcher) and never come here."""
    import subprocess
    job = launchers.slurm_job_id()
    if job is None or not launchers.writes_run_dir():
        return
    try:
        done = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, timeout=60)
        failure = done.stderr.strip() if done.returncode else ""
    except (OSError, subprocess.TimeoutExpired) as error:
        failure = str(error)
    stop.note = (f"{stop.note} " if stop.note else "") + (
        f"Slurm job {job} requeued: it continues from its checkpoint when it runs again" if not failure else
        f"Slurm job {job} could not be requeued ({failure}); run it again to continue from its checkpoint")


def before_hydra_runs(frame) -> bool:
    """Whether a signal interrupts the command before it handed over to Hydra. Inside Hydra it must not raise
    wherever Hydra happens to be: Hydra writes a job's config without an atomic rename, and a parallel launcher
    (joblib) has to wait for its jobs, which stop on the same signal by themselves. It is recorded instead, and the
    job's train_task acts on it."""
    while frame is not None:
        if frame.f_code is run_hydra.__code__:
            return False
        frame = frame.f_back
    return True


# --- the Hydra task ----------------------------------------------------------------------------------------------------

# What a failed sweep job returns to its sweeper: not a number, so that a searching sweeper (Optuna) marks the trial
# failed and goes on (NaN would be told to Optuna as a value, which it refuses with a traceback that ends the search)
FAILED_OBJECTIVE = None
PARALLEL_LAUNCHER = "hydra_joblib_launcher"  # runs the jobs in its worker processes: see _signals_reach_parallel_jobs


def train_task(cfg: DictConfig) -> float | None:
    """One job. Returns its final test accuracy, the objective a searching sweeper (Optuna) maximises; None for a
    failed sweep job (FAILED_OBJECTIVE)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from augrun.run import trainer

    flag = signals.SignalFlag.installed()
    flag.stop_at_once = None  # from here on a signal is the training loop's to act on, after its checkpoint
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    typed: TrainConfig | None = None
    number = hydra_cfg.job.num if multirun else 0
    stopped = user_error = None
    try:
        if flag.signum is not None:  # received while Hydra set this job up, or between two sweep jobs: start no more
            raise signals.Stopped(flag.signum, f"stopped by signal {flag.signum} before job {number} started. "
                                               f"{signals.resume_hint(run_dir)}" if number > 0
                                  else signals.before_training_note(flag.signum))
        job = _job(number, to_train_config(cfg), run_dir, multirun)
        typed = job.typed
        if job.progress == "completed":
            print(f"augrun: job {job.number} completed before; kept as it is", file=sys.stderr)
            return rundir.final_test_acc(run_dir)
        for note in job.notes:
            _warn(note)
        trainer.run(dataclasses.replace(job.prepared, run_dir=run_dir))
        return rundir.final_test_acc(run_dir)
    except signals.Stopped as stop:
        stopped = stop
    except UserError as error:  # bad input found once the run started (in any of its ranks)
        message, status = str(error), INPUT_ERROR_STATUS
        user_error = type(error)(error.key, error.message)  # a copy without the traceback, which holds the run's frames
    except Exception as error:  # a failure while training: one line here, the details in the rank's output above
        message, status = _describe_failure(error)
        if flag.signum is not None:
            stopped = _stopped_by_failure(flag.signum, message, run_dir, typed)
    writes = launchers.writes_run_dir()  # in a launcher's group, rank 0 alone
    if stopped is not None:  # raised here, not in the except block: the error's frames (and workers) are let go first
        if writes:
            _release_unstarted_run(run_dir)
        if PARALLEL_LAUNCHER in str(hydra_cfg.launcher.get("_target_", "")):
            # in joblib's worker: raised, it would make joblib end the other jobs' workers before their checkpoints;
            # the sweep's own process, which passed the signal on, stops the sweep once every job has stopped
            return FAILED_OBJECTIVE
        raise stopped
    if typed is not None and not typed.resume and writes:
        _write_ended_summary(run_dir, "failed", message, typed)
    if not multirun:
        raise JobFailed(message, status, user_error)
    # a failed job does not stop the sweep: the comparison lists it, and `augrun train -m` exits 1 at the end
    print(f"augrun: job {number} ({' '.join(hydra_cfg.overrides.task)}) failed: {message}", file=sys.stderr)
    return FAILED_OBJECTIVE


def _job(number: int, composed: TrainConfig, run_dir: Path, multirun: bool) -> precheck.Job:
    """The pre-check's plan of this job, when it made one in this process for this very config; otherwise (a job in
    another process, a search's trial between the values the pre-check tried, a joining rank) its checks run here."""
    planned = _PLANNED.pop(number, None)
    if planned is not None and planned.composed == composed:
        return planned
    job = precheck.new_job(number, composed, run_dir, multirun=multirun)
    return precheck.prepare_job(job, visible_gpus=_visible_gpus(), loaded=None, rehearse=False, warn=_warn)


def _warn(message: str) -> None:
    print(f"augrun: warning: {message}", file=sys.stderr)


def _release_unstarted_run(run_dir: Path) -> None:
    """A run stopped before its first checkpoint has nothing to resume: give its directory back (the claim marker,
    Hydra's copy of the config, the preview), so that the same command can simply be run again. A directory holding
    anything else is left as it is."""
    import shutil
    leftovers = {rundir.RUN_MARKER, rundir.CONFIG_DIR, rundir.PREVIEW}
    if run_dir.is_dir() and all(path.name in leftovers for path in run_dir.iterdir()):
        shutil.rmtree(run_dir, ignore_errors=True)


def _stopped_by_failure(signum: int, message: str, run_dir: Path, typed: TrainConfig | None):
    """A failure while a SIGINT/SIGTERM is flagged is that signal's doing (a DataLoader or torch.compile worker that
    died of the signal sent to the whole group, a rank that ended before the others agreed on a step): a stop, though
    one that could not checkpoint. The run continues from its last checkpoint, if it has one."""
    from augrun.run import checkpoint
    if not (run_dir / checkpoint.CHECKPOINT).is_file():
        return signals.Stopped(signum, f"stopped by signal {signum} ({message}); nothing to resume")
    _write_ended_summary(run_dir, "stopped", message, typed)
    return signals.Stopped(signum, f"stopped by signal {signum} ({message}); the last checkpoint is kept. "
                                   f"{signals.resume_hint(run_dir)}")


def _describe_hydra_failure(error: Exception) -> str:
    if isinstance(error, OSError) and error.filename:
        return f"cannot write {error.filename} ({error.strerror or error}); valid: a place with room and permission " \
               "to write (hydra.run.dir, hydra.sweep.dir)"
    return f"Hydra failed: {type(error).__name__}: {first_line(error)}"


def _describe_failure(error: BaseException) -> tuple[str, int]:
    """One line and the exit status for a run that failed while training."""
    from torch.multiprocessing import ProcessExitedException, ProcessRaisedException
    if isinstance(error, ProcessRaisedException):
        last = [line for line in str(error).splitlines() if line.strip()][-1].strip()
        return f"rank {error.error_index} failed: {last}", 1
    if isinstance(error, ProcessExitedException):
        return f"rank {error.error_index} died: {first_line(error)}", 1
    return f"{type(error).__name__}: {first_line(error)}", 1


def _write_ended_summary(run_dir: Path, status: str, message: str, typed: TrainConfig | None) -> None:
    """summary.json of a run that ended outside its training loop's own bookkeeping: what failed, the epochs it did,
    and what the run itself recorded of where it ran (devices, environment); what nobody measured is null, not 0."""
    import json

    from augrun.report.metrics_files import MetricsFiles
    from augrun.report.run_outputs import summary
    if not run_dir.is_dir():
        return
    files = MetricsFiles(run_dir)
    try:
        recorded = json.loads(files.summary.read_text())
    except (OSError, ValueError):
        recorded = {}
    recorded = recorded if isinstance(recorded, dict) else {}
    try:
        written = summary(status, files.read(), typed.trainer.epochs if typed is not None else None, None,
                          recorded.get("devices"), recorded.get("total_seconds"), error=message)
        files.write_summary(written | ({"environment": recorded["environment"]} if "environment" in recorded else {}))
    except (OSError, ValueError) as error:  # a full disk, or metrics.jsonl cut short by it: the line above says all
        _warn(f"could not write {files.summary} ({getattr(error, 'strerror', None) or error})")


# --- around the run ----------------------------------------------------------------------------------------------------

def _failed_jobs(sweep_root: Path) -> list[str]:
    """The sweep's failed jobs, read from their directories (whichever launcher ran them, in whichever process)."""
    from augrun.compare import find_runs, load_run
    try:
        runs = [load_run(path) for path in find_runs([sweep_root])]
    except UserError:  # no job wrote anything: Hydra has reported why
        return []
    return [str(run.path) for run in runs if not run.ok and run.status != "stopped"]


def _visible_gpus() -> int:
    import torch
    return torch.cuda.device_count()


def _joining_rank_argv(command: CommandLine) -> list[str]:
    """Under torchrun, ranks other than 0 write nothing: Hydra gets a throwaway directory for them."""
    import tempfile
    return command.hydra_argv([f"hydra.run.dir={tempfile.mkdtemp(prefix='augrun-rank')}", "hydra.output_subdir=null"])
