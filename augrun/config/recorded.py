"""A run's recorded config (`<run>/.hydra/config.yaml`, which Hydra wrote when the run started) as the primary config of
a new composition: overrides apply on top of what the run ran with, by Hydra's own rules and with augrun's one-line
errors, as on the command line of `augrun train`.

Composing from the recorded config rather than from the run's overrides keeps what the run ran with even after the
YAML files in conf/ change, and covers runs composed from other config directories.
"""
from __future__ import annotations

from collections.abc import Collection, Mapping
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from augrun.config.command_line import CommandLine, override_key
from augrun.config.compose import compose
from augrun.errors import ConfigError, first_line, printable

PRIMARY = "augrun_recorded_run"  # the name the recorded config is stored under in Hydra's ConfigStore


def compose_recorded(config_file: Path, overrides: list[str], *, groups: Mapping[str, Collection[str]]) -> DictConfig:
    """The recorded config with `overrides` applied, its `hydra` node included.

    `groups`: the config groups whose option an override may choose anew (`dataset=imagefolder`), each with the keys
    the run's recorded values keep when it does. The recorded file holds no defaults list, only the composed values, so
    a group chosen anew replaces the run's whole section, but for those kept keys: merged over the run's section
    instead, the new option's required keys (`root: ???`) would silently keep the run's values."""
    from hydra.core.config_store import ConfigStore

    recorded = read_recorded(config_file)
    for group, kept in groups.items():
        if any(override_key(o) == group for o in overrides) and isinstance(recorded.get(group), dict):
            recorded[group] = {key: value for key, value in recorded[group].items() if key in kept}
    # the schema types the recorded values (and names unknown keys); an optional group entry before _self_ lets an
    # override choose the group's option, and the recorded values, merged after it, win for the keys kept
    defaults = ["train_schema", *({group: None} for group in groups), "_self_"]
    ConfigStore.instance().store(name=PRIMARY, node={"defaults": defaults, **recorded})
    return compose(CommandLine([], {"--config-name": PRIMARY}), overrides)


def read_recorded(config_file: Path) -> dict:
    """The recorded config as plain containers, interpolations kept as written (they resolve once composed)."""
    try:
        loaded = OmegaConf.load(config_file)
    except Exception as error:  # a YAML error, or a file that cannot be read
        raise ConfigError(printable(config_file), f"cannot be read as a config ({first_line(error)}); valid: the "
                          "config.yaml that augrun train recorded in the run directory") from None
    if not isinstance(loaded, DictConfig):
        raise ConfigError(printable(config_file), "holds a list, not a config; valid: the config.yaml that augrun "
                          "train recorded in the run directory")
    return OmegaConf.to_container(loaded, resolve=False)
