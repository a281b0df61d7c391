"""The pre-check of `augrun train`: every job of the command composed, checked, rehearsed and given its own directory
before Hydra runs anything, so that bad input costs seconds, exits 2 with one line, and leaves nothing behind.

Order matters: the checks that need no torch come first (a typo answers before torch loads); directories are claimed
last, once everything else has passed, so a refused command creates none.

What it checked is the job's plan: each Job carries its prepared run (data loaded, pipeline parsed, devices resolved),
which the job itself takes over when Hydra runs it in this process instead of preparing again.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from omegaconf import DictConfig, OmegaConf

from augrun import rundir
from augrun.config.command_line import CommandLine, override_key
from augrun.config.compose import compose, expand_jobs, searched_keys, sweep_job_dir, to_train_config
from augrun.config.plugin_settings import check_plugin_settings
from augrun.config.schema import TrainConfig
from augrun.errors import UserError, printable
from augrun.run import launchers

if TYPE_CHECKING:
    from augrun.report.mlflow_tracking import SweepTracking
    from augrun.run.trainer import Prepared


@dataclass
class Job:
    """One job of the command, checked: where it writes, where it stands, and its prepared run."""
    number: int
    composed: TrainConfig       # the config as composed, which Hydra's own composition of the job must equal
    run_dir: Path
    # in a resumed sweep: "completed" (kept), "interrupted" (continued) or "new" (started), or a search's "failed"
    # trial (kept); "" for any other job
    progress: str = ""
    prepared: Prepared | None = None  # None for a completed job, which does not run again
    notes: list[str] = field(default_factory=list)  # warnings, said when the job starts

    @property
    def typed(self) -> TrainConfig:
        """The config the job runs with: a job that never started has nothing to resume, an interrupted one resumes."""
        if self.progress in ("new", "interrupted"):
            return replace(self.composed, resume=self.progress == "interrupted")
        return self.composed


@dataclass
class CheckedCommand:
    """What the pre-check hands to Hydra and to the jobs."""
    hydra_argv: list[str]   # with the claimed directory pinned in it
    claimed: Path           # the run's directory, or the sweep's root
    jobs: list[Job]
    sweep_tracking: SweepTracking | None = None  # a sweep's parent run in MLflow (logger=mlflow)


@dataclass
class Target:
    """The directory a command writes into: a run directory, or a sweep's root."""
    key: str           # hydra.run.dir or hydra.sweep.dir
    kind: str          # "run" or "sweep"
    path: Path
    from_clock: bool   # named by ${now:...}: another run may take the same name in the same second


def precheck_train(command: CommandLine, *, visible_gpus: Callable[[], int]) -> CheckedCommand:
    """Check and prepare every job of `augrun train`, then claim its directory."""
    jobs_overrides = expand_jobs(command)
    configs = [compose(command, overrides) for overrides in jobs_overrides]
    check_plugin_settings(configs[0])  # the sweeper's and launcher's, which Hydra runs after the directory exists
    target = _target(configs[0], command.multirun)
    resume = to_train_config(configs[0]).resume or launchers.requeued()  # a requeued job continues in its directory
    if target.from_clock and not resume:
        target = replace(target, path=rundir.first_unused(target.path))
    rundir.check_writable(target.path, target.key)
    rundir.check_placement(target.path, target.key, kind=target.kind, resume=resume)
    search = command.multirun and OmegaConf.select(configs[0], "hydra.sweeper._target_") != rundir.BASIC_SWEEPER
    jobs = [_job(number, cfg, target, command.multirun, search=search, resume=resume)
            for number, cfg in enumerate(configs)]
    _check_distinct(jobs, target)
    if search and resume:
        jobs += _recorded_trials(command, configs[0], jobs_overrides[0], target)

    # the checks above need no torch; importing it takes seconds, so a typo is reported before that
    loaded: dict = {}  # the datasets this command loaded, by their arguments: a sweep's jobs share one copy
    for job in jobs:
        prepare_job(job, visible_gpus=visible_gpus(), loaded=loaded, rehearse=True, warn=job.notes.append)
    store = _open_tracking_store(jobs)  # last before the claim: it creates the store's database once, for every job
    claimed = rundir.claim(target.path, target.key, kind=target.kind, resume=resume, may_rename=target.from_clock)
    sweep_tracking = None
    if store is not None and command.multirun:
        from augrun.report import mlflow_tracking
        sweep_tracking = mlflow_tracking.start_sweep(claimed, *store, overrides=command.overrides)
    extra = [f"{target.key}={quote_override_value(str(claimed))}", *_plugin_overrides(configs[0], command)]
    return CheckedCommand(command.hydra_argv(extra), claimed, jobs, sweep_tracking)


def _open_tracking_store(jobs: list[Job]) -> tuple[str, str] | None:
    """The MLflow store and experiment of the command's jobs that log to MLflow, created when missing; None when no
    job does. A resumed job's must be the ones its MLflow run is in."""
    tracked = [job for job in jobs if job.composed.logger.mlflow]
    if not tracked:
        return None
    from augrun.report import mlflow_store, mlflow_tracking
    from augrun.run import checkpoint
    _check_one_store(tracked)
    logger = tracked[0].composed.logger
    uri = mlflow_store.resolve_uri(logger.tracking_uri)
    for job in tracked:
        if job.typed.resume and (job.run_dir / rundir.CHECKPOINT).is_file():
            tracking = checkpoint.load(job.run_dir / rundir.CHECKPOINT).get("tracking") or {}
            mlflow_tracking.check_resumed(tracking, job.run_dir, uri, logger.experiment_name)
    return uri, mlflow_store.open_store(uri, logger.experiment_name)


def _check_one_store(tracked: list[Job]) -> None:
    """A sweep's runs are children of one parent run: its jobs share one store and one experiment."""
    for key in ("tracking_uri", "experiment_name"):
        values = list(dict.fromkeys(str(getattr(job.composed.logger, key)) for job in tracked))
        if len(values) > 1:
            raise UserError(f"logger.{key}", f"is swept ({', '.join(values)}), but a sweep's runs are children of "
                            "one parent run, in one store and one experiment; valid: one value per sweep (a sweep "
                            "for each)")


# Hydra's submitit plugin's Slurm launcher runs as augrun's subclass of it (augrun.run.slurm_launcher: checkpoint before
# a requeue, multi-task DDP, bounded waits), with requeues enough for a run longer than its time limit (the plugin's
# max_num_timeout is 0: a job at its limit would end there) unless the command sets them. The Optuna plugin's sweeper
# runs as augrun's too (augrun.run.optuna_search: a stopped search continues with resume=true).
PLUGIN_SLURM_LAUNCHER = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
AUGRUN_SLURM_LAUNCHER = "hydra_plugins.augrun_launchers.AugrunSlurmLauncher"
PLUGIN_OPTUNA_SWEEPER = "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper"
AUGRUN_OPTUNA_SWEEPER = "hydra_plugins.augrun_launchers.AugrunOptunaSweeper"
SLURM_REQUEUES = 20


def _plugin_overrides(cfg: DictConfig, command: CommandLine) -> list[str]:
    extra = []
    if OmegaConf.select(cfg, "hydra.sweeper._target_") == PLUGIN_OPTUNA_SWEEPER:
        extra.append(f"hydra.sweeper._target_={AUGRUN_OPTUNA_SWEEPER}")
    if OmegaConf.select(cfg, "hydra.launcher._target_") == PLUGIN_SLURM_LAUNCHER:
        extra.append(f"hydra.launcher._target_={AUGRUN_SLURM_LAUNCHER}")
        set_here = any(override_key(o) == "hydra.launcher.max_num_timeout" for o in command.overrides)
        if not set_here and OmegaConf.select(cfg, "hydra.launcher.max_num_timeout") == 0:  # the plugin's default
            extra.append(f"hydra.launcher.max_num_timeout={SLURM_REQUEUES}")
    return extra


def new_job(number: int, composed: TrainConfig, run_dir: Path, *, multirun: bool) -> Job:
    """A job and where it stands. In a resumed sweep, and in a Slurm job that Slurm started again (a requeue after a
    time limit or a preemption, which continues by itself), finished jobs are kept, interrupted ones continue from
    their checkpoint exactly as resume=true would, and the others start."""
    job = Job(number, composed, run_dir)
    if (multirun and composed.resume) or launchers.requeued():
        job.progress = rundir.job_progress(run_dir)
    return job


def prepare_job(job: Job, *, visible_gpus: int, loaded: dict | None, rehearse: bool, warn: Callable[[str], None]) -> Job:
    """Everything the job needs to run, checked; a completed job only has to be the same experiment."""
    from augrun.run import trainer
    if job.progress == "completed":
        trainer.check_resume(job.run_dir, job.typed)
    elif job.progress == "failed":  # a search's failed trial, kept as it is: it does not run again
        pass
    else:
        job.prepared = trainer.prepare(job.typed, job.run_dir, visible_gpus=visible_gpus, warn=warn,
                                       job_num=job.number, rehearse=rehearse, loaded=loaded)
    return job


def _target(cfg: DictConfig, multirun: bool) -> Target:
    key, kind = ("hydra.sweep.dir", "sweep") if multirun else ("hydra.run.dir", "run")
    raw = OmegaConf.select(cfg, key, throw_on_resolution_failure=False)
    unresolved = OmegaConf.to_container(cfg.hydra.sweep if multirun else cfg.hydra.run, resolve=False)["dir"]
    if raw is None:
        raise UserError(key, "not set; valid: a directory path")
    return Target(key, kind, Path(str(raw)), "${now:" in str(unresolved))


def _job(number: int, cfg: DictConfig, target: Target, multirun: bool, *, search: bool, resume: bool) -> Job:
    """A job of the command. A search's jobs are samples of what it may pick (compose.sample_jobs): they check its
    range, and have no directory or progress of their own (a resumed search's trials are `_recorded_trials`)."""
    run_dir = sweep_job_dir(cfg, number, target.path) if multirun else target.path
    _check_output_subdir(cfg, run_dir)
    if search:
        return Job(number, to_train_config(cfg), run_dir, progress="new" if resume else "")
    return new_job(number, to_train_config(cfg), run_dir, multirun=multirun)


def _recorded_trials(command: CommandLine, cfg: DictConfig, sample: list[str], target: Target) -> list[Job]:
    """The trials of a stopped search, each as its job recorded it (augrun.run.optuna_search): the command's overrides
    with the trial's own searched values; a completed trial must be the same experiment, an interrupted one continues."""
    from augrun.run import optuna_search
    if OmegaConf.select(cfg, "hydra.sweeper.storage") is not None:
        raise UserError("hydra.sweeper.storage", "resume=true continues a search from its job directories, and "
                        "Optuna's own storage would hold its trials twice; valid: null (the default) when resuming")
    searched = set(searched_keys(command))
    jobs = []
    for trial in optuna_search.recorded_trials(cfg, target.path, optuna_search.total_trials(cfg)).values():
        overrides = [f"{key}={trial.overrides.get(key, value)}" if key in searched else f"{key}={value}"
                     for key, value in (o.split("=", 1) for o in sample)]
        progress = trial.ended or rundir.job_progress(trial.run_dir)
        jobs.append(Job(trial.number, to_train_config(compose(command, overrides)), trial.run_dir, progress))
    return jobs


def _check_output_subdir(cfg: DictConfig, run_dir: Path) -> None:
    """Hydra writes the job's config files to run_dir/hydra.output_subdir: that must stay inside the run's own directory,
    or it replaces another run's config."""
    subdir = OmegaConf.select(cfg, "hydra.output_subdir")
    if subdir is None:
        return
    inside = os.path.normpath(run_dir / str(subdir))
    if Path(str(subdir)).is_absolute() or not (inside + os.sep).startswith(os.path.normpath(run_dir) + os.sep):
        raise UserError("hydra.output_subdir", f"{subdir} is outside the run directory {printable(run_dir)}; valid: "
                        "a relative name inside it, like .hydra (the default), or null")


def _check_distinct(jobs: list[Job], target: Target) -> None:
    """No two jobs of a sweep share a directory, or nest one inside another."""
    seen: dict[str, int] = {}
    for job in jobs:
        path = os.path.normpath(job.run_dir)
        for other_path, other in seen.items():
            if path == other_path or path.startswith(other_path + os.sep) or other_path.startswith(path + os.sep):
                raise UserError("hydra.sweep.subdir", f"jobs {other} and {job.number} would write to "
                                f"{printable(Path(other_path))} and {printable(job.run_dir)}; valid: a subdir "
                                "that differs per job and is not nested, e.g. ${hydra.job.num} (the default)")
        seen[path] = job.number


def quote_override_value(value: str) -> str:
    """A value as a Hydra override can carry it: quoted unless it is plainly safe (paths with spaces, quotes, ...)."""
    if value and all(c.isalnum() or c in "/._-+:@%~" for c in value) and value.isascii():
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
