"""The command line as Hydra will read it (flags, overrides, config search path), composed the way Hydra will compose it,
and Hydra's errors said in one line naming the key, override or flag.

The pre-check composes every job with this module before Hydra runs anything, so both must agree exactly: the same
search path (`--config-path`, `--config-dir`), the same primary config (`--config-name`), the same overrides.
"""
from __future__ import annotations

import dataclasses
import re
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from augrun import rundir
from augrun.config.schema import TrainConfig, check_ranges, register_schemas
from augrun.errors import ConfigError
from augrun.errors import UserError, first_line

CONFIG_MODULE = "augrun.conf"
# Hydra's own flags (`augrun train --help` lists them), with the values each accepts: None = no value, () = any value
HYDRA_FLAGS: dict[str, tuple[str, ...] | None] = {
    "--multirun": None, "-m": None, "--help": None, "-h": None, "--hydra-help": None, "--version": None,
    "--resolve": None, "--run": None, "-r": None,
    "--cfg": ("job", "hydra", "all"), "-c": ("job", "hydra", "all"), "--package": (), "-p": (),
    "--config-path": (), "-cp": (), "--config-name": (), "-cn": (), "--config-dir": (), "-cd": (),
    "--info": ("all", "config", "defaults", "defaults-tree", "plugins", "searchpath"),
    "-i": ("all", "config", "defaults", "defaults-tree", "plugins", "searchpath"),
    "--shell-completion": (), "-sc": (), "--experimental-rerun": (),
}
OPTIONAL_VALUE = {"--info", "-i"}  # `--info` alone means `--info all`
# flags that print something and run nothing: the pre-check leaves them to Hydra
INFO_FLAGS = {"--help", "-h", "--hydra-help", "--version", "--cfg", "-c", "--info", "-i", "--shell-completion", "-sc"}
# what Hydra does with the command: one of these at most (it raises a ValueError traceback for two)
EXCLUSIVE_MODES = {"--run", "--multirun", "--cfg", "--info", "--shell-completion"}
ALIASES = {"-m": "--multirun", "-cp": "--config-path", "-cn": "--config-name", "-cd": "--config-dir", "-r": "--run",
           "-c": "--cfg", "-i": "--info", "-sc": "--shell-completion", "-p": "--package", "-h": "--help"}
# Hydra plugins augrun knows: their options appear once the optional extra is installed
PLUGINS = {"hydra/sweeper": "optuna: pip install 'augrun[optuna]'",
           "hydra/launcher": "joblib, submitit_slurm: pip install 'augrun[joblib]' or 'augrun[slurm]'"}
# config keys that take a mapping, and the form to show when given something else
MAPPING_FORMS = {
    "aug.train": "a mapping of op name to its arguments in application order, e.g. "
                 "aug.train='{RandomHorizontalFlip: {p: 0.5}}' (in an aug YAML: `train:` then `  RandomHorizontalFlip: {p: 0.5}`)",
    "aug.batch": "a mapping of batch op name to its arguments, e.g. aug.batch='{MixUp: {alpha: 0.2}}'",
}


@dataclass
class CommandLine:
    """A Hydra command line: overrides, and flags with their values (config paths made absolute from the cwd)."""
    overrides: list[str]
    flags: dict[str, str | None] = field(default_factory=dict)

    @property
    def multirun(self) -> bool:
        return "--multirun" in self.flags

    @property
    def prints_only(self) -> bool:
        return bool(set(self.flags) & INFO_FLAGS)

    @property
    def config_name(self) -> str:
        return self.flags.get("--config-name") or "train"

    def hydra_argv(self, extra_overrides: list[str] = ()) -> list[str]:
        argv = []
        for flag, value in self.flags.items():
            argv += [flag] if value is None else [flag, value]
        return argv + self.overrides + list(extra_overrides)


def parse_command_line(argv: list[str], flags_allowed: dict[str, tuple[str, ...] | None] = HYDRA_FLAGS) -> CommandLine:
    """Split argv into flags and overrides; an unknown flag or a missing value is one line, not argparse's usage page."""
    command = CommandLine([])
    args = list(argv)
    while args:
        arg = args.pop(0)
        if not arg.startswith("-"):
            command.overrides.append(arg)
            continue
        flag, has_inline, inline = arg.partition("=")
        if flag not in flags_allowed:
            raise UserError(flag, f"unknown flag; valid: {', '.join(f for f in flags_allowed if f.startswith('--'))} "
                            "(augrun train --help)")
        accepted = flags_allowed[flag]
        value = None
        if accepted is not None:
            if has_inline:
                value = inline
            elif args and not args[0].startswith("-") and (flag not in OPTIONAL_VALUE or args[0] in accepted):
                value = args.pop(0)
            elif flag not in OPTIONAL_VALUE:
                shown = f"one of {', '.join(accepted)}" if accepted else "a value"
                raise UserError(flag, f"needs {shown}, e.g. {flag} {accepted[0] if accepted else '<value>'}")
            if value is not None and accepted and value not in accepted:
                raise UserError(flag, f"got {value!r}; valid: {', '.join(accepted)}")
        command.flags[ALIASES.get(flag, flag)] = _absolute_dir(flag, value)
    modes = [flag for flag in command.flags if flag in EXCLUSIVE_MODES]
    if len(modes) > 1:
        raise UserError(modes[1], f"cannot go with {modes[0]}; valid: one of {', '.join(sorted(EXCLUSIVE_MODES))}")
    return command


def _absolute_dir(flag: str, value: str | None) -> str | None:
    """Config directories, made absolute from where augrun was started: Hydra would read a relative --config-path
    from augrun's installed package, and the pre-check must look where Hydra looks."""
    if flag not in ("--config-path", "-cp", "--config-dir", "-cd") or value is None or value.startswith("pkg://"):
        return value
    path = Path(value).expanduser().absolute()
    if not path.is_dir():
        raise UserError(flag, f"{value} is not a directory; valid: a folder of Hydra configs")
    return str(path)


def split_argv(argv: list[str]) -> tuple[list[str], set[str]]:
    """Overrides and flags of a Hydra command line (augrun preview's; train parses with compose.parse_command_line)."""
    overrides, flags = [], set()
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg.startswith("-"):
            flags.add(arg)
            skip = HYDRA_FLAGS.get(arg) is not None and arg not in OPTIONAL_VALUE
        else:
            overrides.append(arg)
    return overrides, flags


def run_hydra(task, config_name: str, argv: list[str]) -> None:
    import hydra
    from hydra.core.global_hydra import GlobalHydra
    # Hydra reads sys.argv: the caller's is put back, and Hydra's global state cleared, for a Python caller (Jupyter)
    caller_argv = sys.argv
    sys.argv = [sys.argv[0]] + argv
    try:
        hydra.main(config_path=f"pkg://{CONFIG_MODULE}", config_name=config_name, version_base="1.3")(task)()
    finally:
        sys.argv = caller_argv
        GlobalHydra.instance().clear()


# --- composing as Hydra will ------------------------------------------------------------------------------------------

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
                OverridesParser.create().parse_overrides([override])
            except OverrideParseException as error:
                raise UserError(override, describe_parse_error(error)) from None
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
        form = _mapping_form(dotted)
        if form and not isinstance(value, dict):
            return f"{dotted} (in {name}.yaml): must be {form}"
    return None


def describe_parse_error(error: BaseException) -> str:
    return (f"not a valid override ({' '.join(first_line(error).split())}); valid: key=value, with values "
            "that hold spaces, commas, brackets or non-ASCII characters quoted: key='a value'")


def _culprit(command: CommandLine, overrides: list[str]) -> str | None:
    """The first override that makes composition fail, for errors that do not name a key (slow: error path only)."""
    for count in range(len(overrides) + 1):
        try:
            compose(command, overrides[:count], blame=False)
        except UserError:
            return overrides[count - 1] if count else None
    return None


def expand_jobs(command: CommandLine) -> list[list[str]]:
    """The override lists to check: every job, as Hydra's basic sweeper will launch them; or, for a sweeper that picks
    values as it goes (Optuna), the fixed part with each searched parameter at each end of its range (`sample_jobs`)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException
    overrides = command.overrides
    parser = OverridesParser.create()
    try:
        parsed = parser.parse_overrides(overrides)
    except OverrideParseException:
        compose(command, overrides)  # names the override that does not parse
        raise
    if not command.multirun:
        sweeps = [o.input_line for o in parsed if o.is_sweep_override()]
        if sweeps:
            raise UserError(sweeps[0], f"a sweep needs -m (augrun train -m {' '.join(overrides)})")
        return [overrides]
    # sweeps can also come from the config (an experiment's hydra.sweeper.params), as Hydra's sweepers read them;
    # they compose them without the sweep values, and the command line wins per key
    fixed = [o.input_line for o in parsed if not o.is_sweep_override()]
    sweeper = compose(command, fixed).hydra.sweeper
    params = sweeper.get("params") or {}
    try:
        parsed = parser.parse_overrides([f"{k}={v}" for k, v in params.items()] + overrides)
        if sweeper.get("_target_") != rundir.BASIC_SWEEPER:
            return sample_jobs(parsed)
        return [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]
    except (OverrideParseException, ValueError) as error:  # a sweep range that cannot expand, say
        raise UserError("", f"hydra.sweeper.params or a sweep override: {first_line(error)}") from None


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


# --- the composed config as plain, checked values -------------------------------------------------------------------

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


def describe_composition_error(error: BaseException, schema_fields=None, culprit=None) -> str:
    """Hydra's composition errors span several lines; say the same in one, naming the key and what is valid.

    `schema_fields(dotted_section)` lists the valid keys of a section (default: the train schema's); `culprit()` finds
    the override to blame when the error names no key.
    """
    from hydra.errors import MissingConfigException
    if isinstance(error, MissingConfigException):
        if error.options is not None and error.missing_cfg_file:
            group, _, choice = error.missing_cfg_file.rpartition("/")
            extra = f" ({PLUGINS[group]})" if group in PLUGINS else ""
            return f"{group}={choice}: unknown option; valid: {', '.join(sorted(error.options))}{extra}"
        if "primary config" in str(error):
            return (f"--config-name: {first_line(error)}; valid: train (augrun's), or the name of a YAML in "
                    "--config-path or --config-dir")
    cause = error.__cause__ or error.__context__
    while cause is not None and not hasattr(cause, "full_key") and (cause.__cause__ or cause.__context__):
        cause = cause.__cause__ or cause.__context__
    if cause is not None and getattr(cause, "full_key", None):
        return f"{cause.full_key}: {_explain_omegaconf(cause, schema_fields or _schema_fields)}"
    text = " ".join(str(error).split())
    override = culprit() if culprit is not None else None
    return f"{override}: {text}" if override else text


def _explain_omegaconf(error: BaseException, schema_fields=None) -> str:
    if type(error).__name__ == "MissingMandatoryValue":
        return f"required, and not set; valid: {error.full_key}=<value> on the command line"
    key = error.full_key
    parent, _, name = key.rpartition(".")
    valid = (schema_fields or _schema_fields)(parent)
    if valid and name not in valid:
        return f"unknown key; valid keys here: {', '.join(valid)}"
    form = _mapping_form(key)
    if form and any(s in str(error) for s in ("ListConfig", "Cannot assign", "object_type", "Cannot merge")):
        return f"must be {form}"
    return first_line(error)


def _mapping_form(dotted: str) -> str | None:
    """How to write the schema section or mapping field at a dotted key, or None if it is neither."""
    if dotted in MAPPING_FORMS:
        return MAPPING_FORMS[dotted]
    fields = _schema_fields(dotted)
    return f"a mapping with the keys {', '.join(fields)}" if fields else None


def _schema_fields(dotted: str) -> list[str]:
    """Field names of the schema section at a dotted key ('' = top level), or [] where the schema is free-form."""
    cls = TrainConfig
    for part in filter(None, dotted.split(".")):
        hints = typing.get_type_hints(cls)
        if part not in hints or not dataclasses.is_dataclass(hints[part]):
            return []
        cls = hints[part]
    return [f.name for f in dataclasses.fields(cls)]
