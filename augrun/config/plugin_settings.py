"""The settings of Hydra's sweeper and launcher plugins (`hydra.sweeper.*`, `hydra.launcher.*`), checked as augrun's own
keys are: the plugins check few of them, and a bad one would surface as a traceback once the sweep had started and
made its directory. And the searched ranges of a sweep (range, interval, choice), which the sweepers read as they go.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig, OmegaConf

from augrun.errors import ConfigError


def _integer(minimum: int, *, allow_none: bool = False) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if value is None and allow_none:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            return f"an integer >= {minimum}" + (" or null" if allow_none else "")
        return None
    return check


def _one_of(*choices: str) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        values = value if isinstance(value, (list, tuple)) else [value]
        names = [getattr(v, "name", v) for v in values]  # Optuna's Direction enum, or its name
        return None if values and all(name in choices for name in names) else f"{', '.join(choices)} (or a list of them)"
    return check


def _joblib_jobs(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int) or value == 0 or value < -64:
        return "a number of parallel jobs >= 1, or -1 for every core (joblib's count; 0 runs nothing)"
    return None


# per plugin (a word of its _target_), its settings and what each accepts
SETTINGS: dict[str, dict[str, Callable[[Any], str | None]]] = {
    "optuna": {"n_trials": _integer(1), "n_jobs": _integer(1), "direction": _one_of("minimize", "maximize")},
    "joblib": {"n_jobs": _joblib_jobs},
    "submitit": {"timeout_min": _integer(1), "nodes": _integer(1), "tasks_per_node": _integer(1),
                 "cpus_per_task": _integer(1, allow_none=True), "gpus_per_node": _integer(0, allow_none=True),
                 "mem_gb": _integer(1, allow_none=True), "signal_delay_s": _integer(0),
                 "max_num_timeout": _integer(0), "array_parallelism": _integer(1)},
}


def check_plugin_settings(cfg: DictConfig) -> None:
    """Each setting of the chosen sweeper and launcher that augrun knows a rule for; a ConfigError names the first
    that breaks it."""
    for section in ("sweeper", "launcher"):
        node = OmegaConf.select(cfg, f"hydra.{section}")
        if node is None:
            continue
        settings = OmegaConf.to_container(node, resolve=True)
        for plugin, rules in SETTINGS.items():
            if plugin not in str(settings.get("_target_", "")):
                continue
            for key, rule in rules.items():
                valid = rule(settings[key]) if key in settings else None
                if valid:
                    raise ConfigError(f"hydra.{section}.{key}", f"got {settings[key]!r}; valid: {valid}")


def check_sweep(override) -> None:
    """A searched or swept range that gives no value, or that a sampler cannot draw from, named by its key (Hydra's
    Override, already parsed)."""
    from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep
    key, text = override.get_key_element(), override.input_line.partition("=")[2]
    sweep = override.value()
    if isinstance(sweep, RangeSweep):
        if sweep.step == 0:
            raise ConfigError(key, f"{text}: a step of 0 never reaches the stop; valid: range(start, stop, step) "
                              "with a step that moves toward stop, e.g. range(0,3)")
        if not list(override.sweep_iterator()):
            raise ConfigError(key, f"{text} gives no values; valid: a range whose step moves from start toward stop")
    elif isinstance(sweep, IntervalSweep):
        if not sweep.start < sweep.end:
            raise ConfigError(key, f"{text}: the start must be below the end; valid: interval(low, high), low < high")
        if "log" in (sweep.tags or set()) and sweep.start <= 0:
            raise ConfigError(key, f"{text}: a log scale needs a start above 0; valid: tag(log, interval(low, high)) "
                              "with 0 < low < high")
    elif isinstance(sweep, ChoiceSweep) and not sweep.list:
        raise ConfigError(key, f"{text} offers nothing to choose; valid: choice(a, b, ...)")
