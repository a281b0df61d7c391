"""The command line as Hydra reads it: Hydra's flags and the values each takes, a command's overrides and flags
(config directories made absolute), the key an override sets, and the call that hands argv to Hydra."""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from augrun.errors import UserError

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
    """Hydra's run of `task` on argv. An error that escapes Hydra (its own writes on a full disk, a plugin's failure)
    is raised to the caller, which says it in one line, instead of being printed by Hydra as a traceback
    (HYDRA_FULL_ERROR, for this call only)."""
    import hydra
    from hydra.core.global_hydra import GlobalHydra
    # Hydra reads sys.argv: the caller's is put back, and Hydra's global state cleared, for a Python caller (Jupyter)
    caller_argv, caller_full_error = sys.argv, os.environ.get("HYDRA_FULL_ERROR")
    sys.argv = [sys.argv[0]] + argv
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        hydra.main(config_path=f"pkg://{CONFIG_MODULE}", config_name=config_name, version_base="1.3")(task)()
    finally:
        sys.argv = caller_argv
        if caller_full_error is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = caller_full_error
        GlobalHydra.instance().clear()


def override_key(override: str) -> str:
    """The key an override sets: `+aug.train.X.p=0.5` and `~aug.train.X` set aug.train.X.p and aug.train.X."""
    return override.split("=", 1)[0].lstrip("+~")
