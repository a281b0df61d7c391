"""The pre-check of `augrun train`: every job of the command composed, checked, rehearsed and given its own directory
before Hydra runs anything, so that bad input costs seconds, exits 2 with one line, and leaves nothing behind.

Order matters: the checks that need no torch come first (a typo answers before torch loads); directories are claimed
last, once everything else has passed, so a refused command creates none.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from augrun import rundir
from augrun.config.command_line import CommandLine
from augrun.config.compose import compose, expand_jobs, to_train_config
from augrun.config.schema import TrainConfig
from augrun.errors import UserError, printable

# torchrun's variables: augrun joins a group only when all of the first four are there
TORCHRUN_REQUIRED = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
TORCHRUN_MARKERS = TORCHRUN_REQUIRED + ("LOCAL_RANK", "LOCAL_WORLD_SIZE", "TORCHELASTIC_RUN_ID", "GROUP_RANK")


@dataclass
class Job:
    number: int
    typed: TrainConfig
    run_dir: Path
    progress: str = "new"  # rundir.job_progress, for a resumed sweep


@dataclass
class Target:
    """The directory a command writes into: a run directory, or a sweep's root."""
    key: str           # hydra.run.dir or hydra.sweep.dir
    kind: str          # "run" or "sweep"
    path: Path
    from_clock: bool   # named by ${now:...}: another run may take the same name in the same second


def check_torchrun_environment(env=os.environ) -> bool:
    """True when this process is a rank of a torchrun group; an incomplete or malformed set of torchrun's variables
    (a stray RANK inherited from a shell) is refused instead of silently training as a rank."""
    present = [name for name in TORCHRUN_MARKERS if name in env]
    if not present:
        return False
    missing = [name for name in TORCHRUN_REQUIRED if name not in env]
    if missing:
        raise UserError(present[0], f"set in the environment, but {', '.join(missing)} {'is' if len(missing) == 1 else 'are'}"
                        f" not; augrun joins a torchrun group only with all of {', '.join(TORCHRUN_REQUIRED)}; valid: "
                        f"start it with torchrun, or unset {', '.join(present)}")
    numbers = {}
    for name in ("RANK", "WORLD_SIZE", "MASTER_PORT") + (("LOCAL_RANK",) if "LOCAL_RANK" in env else ()):
        value = env[name]
        if not value.strip().isdigit():
            raise UserError(name, f"got {value!r}; valid: a non-negative integer (as torchrun sets it)")
        numbers[name] = int(value)
    if not numbers["RANK"] < numbers["WORLD_SIZE"]:
        raise UserError("RANK", f"got {numbers['RANK']} with WORLD_SIZE={numbers['WORLD_SIZE']}; valid: 0 <= RANK < "
                        "WORLD_SIZE")
    if not 0 < numbers["MASTER_PORT"] < 65536:
        raise UserError("MASTER_PORT", f"got {numbers['MASTER_PORT']}; valid: a port 1..65535")
    return True


def precheck_train(command: CommandLine, *, visible_gpus, warn) -> tuple[list[str], Path]:
    """Check every job of `augrun train`; return the argv for Hydra, with the claimed directory pinned in it, and that
    directory (the run's, or the sweep's root)."""
    jobs_overrides = expand_jobs(command)
    configs = [compose(command, overrides) for overrides in jobs_overrides]
    target = _target(configs[0], command.multirun)
    resume = to_train_config(configs[0]).resume
    if target.from_clock and not resume:
        target = replace(target, path=rundir.first_unused(target.path))
    rundir.check_writable(target.path, target.key)
    rundir.check_placement(target.path, target.key, kind=target.kind, resume=resume)
    jobs = [_job(number, cfg, target, command.multirun) for number, cfg in enumerate(configs)]
    _check_distinct(jobs, target)

    # the checks above need no torch; importing it takes seconds, so a typo is reported before that
    from augrun.run import trainer
    for job in jobs:
        if job.progress == "completed":  # kept as it is; it must still be the same experiment
            trainer.load_resume_state(job.run_dir, trainer.comparable_config(job.typed))
            continue
        # loads (downloads) the data too: load_dataset is memoised, so the run itself reuses this copy
        trainer.prepare(job.typed, job.run_dir, visible_gpus=visible_gpus(), warn=warn, job_num=job.number,
                        rehearse=True)
    claimed = rundir.claim(target.path, target.key, kind=target.kind, resume=resume, may_rename=target.from_clock)
    return command.hydra_argv([f"{target.key}={quote_override_value(str(claimed))}"]), claimed


def _target(cfg: DictConfig, multirun: bool) -> Target:
    key, kind = ("hydra.sweep.dir", "sweep") if multirun else ("hydra.run.dir", "run")
    raw = OmegaConf.select(cfg, key, throw_on_resolution_failure=False)
    unresolved = OmegaConf.to_container(cfg.hydra.sweep if multirun else cfg.hydra.run, resolve=False)["dir"]
    if raw is None:
        raise UserError(key, "not set; valid: a directory path")
    return Target(key, kind, Path(str(raw)), "${now:" in str(unresolved))


def _job(number: int, cfg: DictConfig, target: Target, multirun: bool) -> Job:
    typed = to_train_config(cfg)
    run_dir = _job_dir(cfg, number, target) if multirun else target.path
    _check_output_subdir(cfg, run_dir)
    job = Job(number, typed, run_dir)
    if multirun and typed.resume:
        # a resumed sweep: finished jobs are kept, interrupted ones continue, the others start
        job.progress = rundir.job_progress(run_dir)
        if job.progress == "new":
            job.typed = replace(typed, resume=False)
    return job


def _job_dir(cfg: DictConfig, number: int, target: Target) -> Path:
    """A sweep job's directory, as Hydra's launcher will name it (hydra.sweep.subdir may use the job number)."""
    OmegaConf.update(cfg, "hydra.job.num", number, force_add=True)
    OmegaConf.update(cfg, "hydra.job.id", str(number), force_add=True)
    subdir = Path(str(cfg.hydra.sweep.subdir))
    job_dir = target.path / subdir
    if subdir.is_absolute() or ".." in subdir.parts or os.path.normpath(job_dir) == os.path.normpath(target.path):
        raise UserError("hydra.sweep.subdir", f"{subdir} puts job {number} outside its own directory of the sweep "
                        f"{printable(target.path)}; valid: a relative path that differs per job, e.g. "
                        "${hydra.job.num} (the default)")
    return job_dir


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
