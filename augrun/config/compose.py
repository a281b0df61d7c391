"""Each job's config composed the way Hydra will compose it (the same search path, primary config and overrides), the
jobs a sweep will run, and the composed config typed and range-checked.

The pre-check composes every job with this module before Hydra runs anything, so both must agree exactly.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from augrun import rundir
from augrun.config.command_line import CONFIG_MODULE, CommandLine
from augrun.config.hydra_errors import (
    describe_composition_error,
    describe_parse_error,
    explain_omegaconf,
    field_type,
    mapping_form,
)
from augrun.config.plugin_settings import check_sweep
from augrun.config.schema import TrainConfig, check_ranges, register_schemas
from augrun.errors import ConfigError, UserError, first_line, printable


def compose(command: CommandLine, overrides: list[str], *, blame: bool = True) -> DictConfig:
    """The config of one job, with its `hydra` node, from the command's search path and primary config.

    `blame`: when an error names no key, find the override that causes it (composes again, once per override)."""
    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import create_automatic_config_search_path
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException
    from hydra.types import RunMode

    register_schemas()
    search_path = create_automatic_config_search_path(None, None, command.flags.get("--config-path")
                                                      or f"pkg://{CONFIG_MODULE}")
    if command.flags.get("--config-dir"):  # as Hydra adds it: before the schema provider
        from hydra.core.config_search_path import SearchPathQuery
        search_path.prepend("command-line", f"file://{command.flags['--config-dir']}", SearchPathQuery(provider="schema"))
    GlobalHydra.instance().clear()
    hydra = Hydra.create_main_hydra2(task_name="train", config_search_path=search_path)
    try:
        for override in overrides:  # one at a time, so that a parse error names its override
            try:
                parsed = OverridesParser.create().parse_overrides([override])[0]
            except OverrideParseException as error:
                raise UserError(override, describe_parse_error(error)) from None
            _refuse_number_for_bool(parsed)
        return hydra.compose_config(config_name=command.config_name, overrides=overrides, run_mode=RunMode.RUN,
                                    from_shell=True, with_log_configuration=False)
    except UserError:
        raise
    except Exception as error:
        culprit = (lambda: _culprit(command, overrides)) if blame else None
        message = _misshapen_section(hydra, error) or describe_composition_error(error, culprit=culprit)
        raise UserError("", message) from None
    finally:
        GlobalHydra.instance().clear()


def _misshapen_section(hydra, error: BaseException) -> str | None:
    """A config file that gives a list or a value where the schema wants a mapping (an aug YAML whose `train:` is a
    list) fails with a merge error that names neither the key nor the file: read the file to say which."""
    found = re.search(r"In '([^']+)'", str(error))
    if not found or "Cannot merge" not in str(error) and "object_type" not in str(error):
        return None
    name = found.group(1)
    loaded = hydra.config_loader.repository.load_config(name)
    if loaded is None or not isinstance(loaded.config, DictConfig):
        return None
    group = name.rpartition("/")[0].replace("/", ".") if loaded.header.get("package") != "_global_" else ""
    for key, value in OmegaConf.to_container(loaded.config, resolve=False).items():
        dotted = f"{group}.{key}" if group else str(key)
        form = mapping_form(dotted)
        if form and not isinstance(value, dict):
            return f"{dotted} (in {name}.yaml): must be {form}"
    return None


def _culprit(command: CommandLine, overrides: list[str]) -> str | None:
    """The first override that makes composition fail, for errors that do not name a key (slow: error path only)."""
    for count in range(len(overrides) + 1):
        try:
            compose(command, overrides[:count], blame=False)
        except UserError:
            return overrides[count - 1] if count else None
    return None


def _refuse_number_for_bool(override) -> None:
    """OmegaConf turns any integer into a bool (trainer.ema.warmup=5 -> true): whoever wrote a number meant something
    else (a count of warmup steps, say), so it is refused rather than read as true."""
    if override.is_delete() or override.is_sweep_override():
        return
    value = override.value()
    if isinstance(value, (int, float)) and not isinstance(value, bool) and field_type(override.key_or_group) is bool:
        raise UserError(override.key_or_group, f"got {value}; valid: true or false")


def expand_jobs(command: CommandLine) -> list[list[str]]:
    """The override lists to check: every job, as Hydra's basic sweeper will launch them; or, for a sweeper that picks
    values as it goes (Optuna), the fixed part with each searched parameter at each end of its range (`sample_jobs`)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    if not command.multirun:
        sweeps = [o.input_line for o in _parsed(command, command.overrides) if o.is_sweep_override()]
        if sweeps:
            raise UserError(sweeps[0], f"a sweep needs -m (augrun train -m {' '.join(command.overrides)})")
        return [command.overrides]
    parsed, sweeper_target = _sweep(command)
    try:
        if sweeper_target != rundir.BASIC_SWEEPER:
            return sample_jobs(parsed)
        return [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]
    except ValueError as error:  # a sweep range that cannot expand, say
        raise _bad_sweep(error) from None


def searched_keys(command: CommandLine) -> list[str]:
    """The keys a sweep varies (from the command line or the config's hydra.sweeper.params), in their order."""
    return list(dict.fromkeys(o.get_key_element() for o in _sweep(command)[0] if o.is_sweep_override()))


def _parsed(command: CommandLine, overrides: list[str]) -> list:
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException
    try:
        return OverridesParser.create().parse_overrides(overrides)
    except OverrideParseException:
        compose(command, overrides)  # names the override that does not parse
        raise


def _sweep(command: CommandLine) -> tuple[list, str | None]:
    """A multirun's overrides, parsed and range-checked, and its sweeper's _target_. Sweeps can also come from the
    config (an experiment's hydra.sweeper.params), as Hydra's sweepers read them: they compose them without the
    sweep values, and the command line wins per key."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException
    fixed = [o.input_line for o in _parsed(command, command.overrides) if not o.is_sweep_override()]
    sweeper = compose(command, fixed).hydra.sweeper
    params = sweeper.get("params") or {}
    try:
        parsed = OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in params.items()] + command.overrides)
        for override in parsed:
            if override.is_sweep_override():
                check_sweep(override)
    except UserError:  # a sweep range named by its key (check_sweep)
        raise
    except (OverrideParseException, ValueError) as error:
        raise _bad_sweep(error) from None
    return parsed, sweeper.get("_target_")


def _bad_sweep(error: Exception) -> UserError:
    return UserError("", f"hydra.sweeper.params or a sweep override: {first_line(error)}")


def sweep_job_dir(cfg: DictConfig, number: int, root: Path) -> Path:
    """A sweep job's directory, as Hydra's launcher will name it (hydra.sweep.subdir may use the job number)."""
    OmegaConf.update(cfg, "hydra.job.num", number, force_add=True)
    OmegaConf.update(cfg, "hydra.job.id", str(number), force_add=True)
    subdir = Path(str(cfg.hydra.sweep.subdir))
    job_dir = root / subdir
    if subdir.is_absolute() or ".." in subdir.parts or os.path.normpath(job_dir) == os.path.normpath(root):
        raise UserError("hydra.sweep.subdir", f"{subdir} puts job {number} outside its own directory of the sweep "
                        f"{printable(root)}; valid: a relative path that differs per job, e.g. "
                        "${hydra.job.num} (the default)")
    return job_dir


def sample_jobs(parsed) -> list[list[str]]:
    """Jobs that put each searched parameter at the ends of its range (every option of a choice), the others at their
    first value: what a search may pick, checked before it starts. The values it picks in between are checked again
    as each trial starts (train_task's own checks)."""
    from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep
    samples: dict[str, list[str]] = {}
    for override in parsed:
        value = override.value() if override.is_sweep_override() else None
        if isinstance(value, IntervalSweep):
            values = [value.start, value.end]
        elif isinstance(value, ChoiceSweep):
            values = list(value.list)
        elif isinstance(value, RangeSweep):
            values = [value.start, list(override.sweep_iterator())[-1]]
        else:  # a fixed value, or a sweep kind Hydra adds later: its text as written
            samples[override.get_key_element()] = [override.get_value_element_as_str()]
            continue
        # Hydra's own spelling of each value (quoted strings, lists), as an override would carry it; a key given again
        # (on the command line after the config's params) replaces the earlier values, as in Hydra
        samples[override.get_key_element()] = [Override._get_value_element_as_str(v) for v in values]
    base = {key: values[0] for key, values in samples.items()}
    jobs = [[f"{k}={v}" for k, v in base.items()]]
    for key, values in samples.items():
        jobs += [[f"{k}={v if k != key else value}" for k, v in base.items()] for value in dict.fromkeys(values[1:])]
    return jobs


def to_train_config(cfg: DictConfig) -> TrainConfig:
    """The composed config as the typed dataclass, range-checked. Hydra already checked keys and types."""
    plain = OmegaConf.to_container(cfg, resolve=False)
    plain.pop("hydra", None)  # Hydra's own node has values (the job number) that exist only inside a running job
    try:
        typed = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(TrainConfig), OmegaConf.create(plain)))
    except Exception as error:  # an interpolation that cannot resolve, a value that does not fit its type
        key = getattr(error, "full_key", "") or ""
        raise ConfigError(key, explain_omegaconf(error) if key else first_line(error)) from None
    check_ranges(typed)
    return typed
