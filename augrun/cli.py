"""augrun's command line: `augrun train|preview|compare ...`.

Hydra owns argv: main() takes the subcommand off sys.argv and hands the rest to the Hydra task for it. This is the one
module that reads the Hydra config; everything below it takes plain arguments.

Bad input is checked before Hydra runs anything: the overrides of every job (all of a sweep's) are composed with
Hydra's compose API and checked, so a typo exits 2 with one line before a directory is created or a file touched.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from augrun.config import ConfigError, TrainConfig, check_ranges, register_schemas

USAGE = """usage: augrun <command> [hydra overrides]

commands:
  train     train one experiment (augrun train aug=flip_only), or sweep with -m (augrun train -m aug=none,flip_only seed=0,1,2)
  preview   write a PNG grid of augmented copies of an image (augrun preview aug=color_jitter [image=cat.jpg])
  compare   rebuild the comparison report of a finished sweep (augrun compare outputs/multirun/<date>/<time>)

`augrun train --help` lists the config groups and their options; `augrun train --cfg job` prints the composed config."""

CONFIG_MODULE = "augrun.conf"
# Hydra flags that take a value: the value is not an override
FLAGS_WITH_VALUE = {"--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name", "-cn", "--config-dir",
                    "-cd", "--info", "-i", "--experimental-rerun", "--shell-completion", "-sc"}
# Hydra flags that print something and run nothing: leave them to Hydra
INFO_FLAGS = {"--help", "-h", "--hydra-help", "--version", "--cfg", "-c", "--info", "-i", "--shell-completion", "-sc"}

register_schemas()


class UserError(Exception):
    """Anything the user can fix: one line on stderr, exit status 2."""


def fail(message: str, status: int = 2) -> None:
    print(f"augrun: error: {message}", file=sys.stderr)
    sys.exit(status)


# --- turning the Hydra config into plain, checked values ---------------------------------------------------------------

def to_train_config(cfg: DictConfig) -> TrainConfig:
    """The composed config as the typed dataclass, range-checked. Hydra already checked keys and types."""
    plain = OmegaConf.to_container(cfg, resolve=False)
    plain.pop("hydra", None)  # Hydra's own node has values (the job number) that exist only inside a running job
    try:
        typed = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(TrainConfig), OmegaConf.create(plain)))
    except Exception as error:  # an interpolation that cannot resolve, a value that does not fit its type
        key = getattr(error, "full_key", "") or ""
        raise ConfigError(key, _explain_omegaconf(error) if key else first_line(error)) from None
    check_ranges(typed)
    return typed


def first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def describe_composition_error(error: BaseException, schema_fields=None) -> str:
    """Hydra's composition errors span several lines; say the same in one, naming the key and what is valid.

    `schema_fields(dotted_section)` lists the valid keys of a section (default: the train schema's).
    """
    from hydra.errors import MissingConfigException
    if isinstance(error, MissingConfigException) and error.options is not None and error.missing_cfg_file:
        group, _, choice = error.missing_cfg_file.rpartition("/")
        return f"{group}={choice}: unknown option; valid: {', '.join(sorted(error.options))}"
    cause = error.__cause__ or error.__context__
    while cause is not None and not hasattr(cause, "full_key") and (cause.__cause__ or cause.__context__):
        cause = cause.__cause__ or cause.__context__
    if cause is not None and getattr(cause, "full_key", None):
        return f"{cause.full_key}: {_explain_omegaconf(cause, schema_fields or _schema_fields)}"
    return " ".join(str(error).split())


def _explain_omegaconf(error: BaseException, schema_fields=None) -> str:
    if type(error).__name__ == "MissingMandatoryValue":
        return f"required, and not set; valid: {error.full_key}=<value> on the command line"
    parent, _, name = error.full_key.rpartition(".")
    valid = (schema_fields or _schema_fields)(parent)
    if valid and name not in valid:
        return f"unknown key; valid keys here: {', '.join(valid)}"
    return first_line(error)


def _schema_fields(dotted: str) -> list[str]:
    """Field names of the schema section at a dotted key ('' = top level), or [] where the schema is free-form."""
    import dataclasses
    import typing
    cls = TrainConfig
    for part in filter(None, dotted.split(".")):
        hints = typing.get_type_hints(cls)
        if part not in hints or not dataclasses.is_dataclass(hints[part]):
            return []
        cls = hints[part]
    return [f.name for f in dataclasses.fields(cls)]


# --- checking every job of a command before Hydra runs it ----------------------------------------------------------

def split_argv(argv: list[str]) -> tuple[list[str], set[str]]:
    """Overrides and flags of a Hydra command line."""
    overrides, flags = [], set()
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg.startswith("-"):
            flags.add(arg)
            skip = arg in FLAGS_WITH_VALUE and arg not in ("--info", "-i")
        else:
            overrides.append(arg)
    return overrides, flags


def expand_jobs(overrides: list[str], multirun: bool) -> list[list[str]]:
    """One override list per job, as Hydra's basic sweeper would launch them."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser
    parsed = OverridesParser.create().parse_overrides(overrides)
    if not multirun:
        sweeps = [o.input_line for o in parsed if o.is_sweep_override()]
        if sweeps:
            raise UserError(f"{sweeps[0]}: a sweep needs -m (augrun train -m {' '.join(overrides)})")
        return [overrides]
    # sweeps can also come from the config (an experiment's hydra.sweeper.params), as Hydra's basic sweeper reads them;
    # it composes them without the sweep values, and the command line wins per key
    fixed = [o.input_line for o in parsed if not o.is_sweep_override()]
    params = compose_job(fixed).hydra.sweeper.get("params") or {}
    parsed = OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in params.items()] + overrides)
    return [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]


def compose_job(overrides: list[str]) -> DictConfig:
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    GlobalHydra.instance().clear()
    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        try:
            return compose(config_name="train", overrides=overrides, return_hydra_config=True)
        except Exception as error:
            raise UserError(describe_composition_error(error)) from None


def check_output_dir(run_dir: Path, *, resume: bool, is_sweep_job: bool) -> None:
    """An output directory must be writable, and a finished run's files are never overwritten by a new one."""
    existing = run_dir
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK):
        key = "hydra.sweep.dir" if is_sweep_job else "hydra.run.dir"
        raise UserError(f"{key}: cannot write under {existing} (not a writable directory); valid: a path in a writable directory")
    if not resume and any((run_dir / name).exists() for name in ("checkpoint.pt", "metrics.jsonl", "summary.json")):
        raise UserError(f"hydra.run.dir: {run_dir} already holds a run; valid: resume=true to continue it, or a new "
                        "hydra.run.dir (the default is a new timestamped directory)")


def precheck_train(argv: list[str]) -> None:
    overrides, flags = split_argv(argv)
    if flags & INFO_FLAGS:
        return
    multirun = bool(flags & {"-m", "--multirun"})
    if not multirun and os.environ.get("RANK", "0") != "0":
        return  # under torchrun, rank 0 checks; the others only join
    jobs = []
    for number, job in enumerate(expand_jobs(overrides, multirun)):
        cfg = compose_job(job)
        typed = to_train_config(cfg)
        # the job's directory as Hydra will name it (the default sweep subdir is the job number)
        run_dir = Path(cfg.hydra.sweep.dir) / str(number) if multirun else Path(cfg.hydra.run.dir)
        check_output_dir(run_dir, resume=typed.resume, is_sweep_job=multirun)
        jobs.append((typed, run_dir))
    # the checks above need no torch; importing it takes seconds, so a typo is reported before that.
    import torch
    from augrun import trainer
    from augrun.checkpoint import CheckpointError
    from augrun.data import DataError
    for number, (typed, run_dir) in enumerate(jobs):
        try:
            # loads (downloads) the data too: load_dataset is memoised, so the run itself reuses this copy
            trainer.prepare(typed, run_dir, visible_gpus=torch.cuda.device_count(), warn=lambda m: None, job_num=number)
        except (ConfigError, DataError, CheckpointError) as error:
            raise UserError(str(error)) from None


# --- the Hydra tasks ---------------------------------------------------------------------------------------------------

def train_task(cfg: DictConfig) -> None:
    import torch
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from augrun import trainer
    from augrun.checkpoint import CheckpointError
    from augrun.data import DataError

    signals = trainer.SignalFlag.installed()
    if signals.signum is not None:  # stopped between two sweep jobs: start no more
        sys.exit(signals.status)
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    typed: TrainConfig | None = None
    try:
        typed = to_train_config(cfg)
        job_num = hydra_cfg.job.num if multirun else 0
        prepared = trainer.prepare(typed, run_dir, visible_gpus=torch.cuda.device_count(), warn=_warn, job_num=job_num)
        trainer.run(prepared)
        return
    except trainer.StopRun as stop:
        sys.exit(stop.status)
    except (ConfigError, DataError, CheckpointError) as error:
        message, status = str(error), 2
    except Exception as error:  # a failure while training: one line here, the details in the rank's output above
        stopped = _signal_exit_status(error)
        if stopped is not None:
            sys.exit(stopped)
        message, status = _describe_failure(error)
    if typed is not None and not typed.resume:
        _write_failure_summary(run_dir, message)
    if not multirun:
        fail(message, status)
    # a failed job does not stop the sweep: the comparison lists it, and `augrun train -m` exits 1 at the end
    print(f"augrun: job {hydra_cfg.job.num} ({' '.join(hydra_cfg.overrides.task)}) failed: {message}", file=sys.stderr)


def _warn(message: str) -> None:
    print(f"augrun: warning: {message}", file=sys.stderr)


def _signal_exit_status(error: BaseException) -> int | None:
    """A rank stopped by SIGINT/SIGTERM exits 130/143 after its checkpoint: report that status, not a failure."""
    from torch.multiprocessing import ProcessExitedException
    if isinstance(error, ProcessExitedException) and error.exit_code in (130, 143):
        return error.exit_code
    return None


# Bad input found inside a rank (a dataset too large for its GPU, say) is still bad input: exit status 2, its message alone
INPUT_ERRORS = ("augrun.config.ConfigError: ", "augrun.data.DataError: ", "augrun.checkpoint.CheckpointError: ")


def _describe_failure(error: BaseException) -> tuple[str, int]:
    """One line and the exit status for a run that failed while training."""
    from torch.multiprocessing import ProcessExitedException, ProcessRaisedException
    if isinstance(error, ProcessRaisedException):
        last = [line for line in str(error).splitlines() if line.strip()][-1].strip()
        for prefix in INPUT_ERRORS:
            if last.startswith(prefix):
                return f"rank {error.error_index}: {last[len(prefix):]}", 2
        return f"rank {error.error_index} failed: {last}", 1
    if isinstance(error, ProcessExitedException):
        return f"rank {error.error_index} died: {first_line(error)}", 1
    return f"{type(error).__name__}: {first_line(error)}", 1


def _write_failure_summary(run_dir: Path, message: str) -> None:
    from augrun.report import MetricsFiles
    from augrun.trainer import summary
    if not run_dir.is_dir():
        return
    files = MetricsFiles(run_dir)
    files.write_summary(summary("failed", files.read(), 0, None, [], 0.0, error=message))


def run_hydra(task, config_name: str, argv: list[str]) -> None:
    import hydra
    sys.argv = [sys.argv[0]] + argv
    hydra.main(config_path=f"pkg://{CONFIG_MODULE}", config_name=config_name, version_base="1.3")(task)()


def train_command(argv: list[str]) -> None:
    try:
        precheck_train(argv)
    except (UserError, ConfigError) as error:
        fail(str(error))
    from augrun.compare import SweepReport
    SweepReport.failed_jobs = []
    run_hydra(train_task, "train", _rank_overrides(argv))
    if SweepReport.failed_jobs:
        fail(f"{len(SweepReport.failed_jobs)} sweep job(s) failed: {', '.join(SweepReport.failed_jobs)}", 1)


def _rank_overrides(argv: list[str]) -> list[str]:
    """Under torchrun, ranks other than 0 write nothing: Hydra gets a throwaway directory for them."""
    if os.environ.get("RANK", "0") == "0":
        return argv
    import tempfile
    return argv + [f"hydra.run.dir={tempfile.mkdtemp(prefix='augrun-rank')}", "hydra.output_subdir=null"]


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return
    command, rest = argv[0], argv[1:]
    commands = {"train": train_command, "preview": _lazy("augrun.preview", "preview_command"),
                "compare": _lazy("augrun.compare", "compare_command")}
    if command not in commands:
        fail(f"unknown command {command!r}; valid: {', '.join(commands)} (augrun --help)")
    commands[command](rest)


def _lazy(module: str, name: str):
    def run(argv: list[str]) -> None:
        import importlib
        getattr(importlib.import_module(module), name)(argv)
    return run


if __name__ == "__main__":
    main()
