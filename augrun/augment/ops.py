"""The augmentation vocabulary: which torchvision ops a config may name, and the checks on their arguments.

A pipeline in a config is a mapping `ClassName: {argument: value}` in application order. Only the names below are
accepted (a config never imports arbitrary code), and each argument is checked here so that a typo or an impossible
value stops the run before any work with a message naming `aug.train.<Op>.<argument>`.
"""
from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torchvision.transforms.v2 as T

from augrun.config import ConfigError

# Ops that work on PIL images in the workers, before ToTensor: the book's per-image semantics.
IMAGE_OPS = (
    "RandomHorizontalFlip", "RandomVerticalFlip", "RandomResizedCrop", "RandomCrop", "ColorJitter", "RandomGrayscale",
    "RandomRotation", "RandomAffine", "GaussianBlur", "AutoAugment", "RandAugment", "TrivialAugmentWide", "AugMix",
)
# Ops torchvision applies to tensors only, so the cpu backend runs them after ToTensor.
TENSOR_OPS = ("RandomErasing",)
# Batch-level ops that also mix labels (`aug.batch`); they run on the training device for both backends.
BATCH_OPS = ("MixUp", "CutMix")


@dataclass(frozen=True)
class OpSpec:
    name: str
    kwargs: dict[str, Any]
    key: str  # where it was configured, e.g. aug.train.ColorJitter, for error messages


def _pair(key: str, value: Any) -> tuple[float, float]:
    if not isinstance(value, (list, tuple)) or len(value) != 2 or not all(isinstance(v, (int, float)) for v in value):
        raise ConfigError(key, f"got {value!r}; valid: a pair [min, max]")
    return float(value[0]), float(value[1])


def _check_probability(key: str, value: Any) -> None:
    if not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ConfigError(key, f"got {value!r}; valid: a probability in [0, 1]")


def _check_jitter(key: str, value: Any, *, is_hue: bool) -> None:
    bound = "[-0.5, 0.5]" if is_hue else ">= 0"
    if isinstance(value, (int, float)):
        if value < 0 or (is_hue and value > 0.5):
            raise ConfigError(key, f"got {value!r}; valid: a number in [0, 0.5] or a pair within {bound}" if is_hue
                              else f"got {value!r}; valid: a number >= 0 (0 = off) or a pair [min, max] with 0 <= min <= max")
        return
    low, high = _pair(key, value)
    if low > high or (is_hue and (low < -0.5 or high > 0.5)) or (not is_hue and low < 0):
        raise ConfigError(key, f"got {list(value)}; valid: [min, max] with min <= max, both {bound}")


def _check_increasing_positive(key: str, value: Any, *, at_most_one: bool) -> None:
    low, high = _pair(key, value)
    if not 0 < low <= high or (at_most_one and high > 1):
        limit = "0 < min <= max <= 1" if at_most_one else "0 < min <= max"
        raise ConfigError(key, f"got {list(value)}; valid: [min, max] with {limit}")


def _check_size(key: str, value: Any) -> None:
    sides = value if isinstance(value, (list, tuple)) else [value]
    if not sides or len(sides) > 2 or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in sides):
        raise ConfigError(key, f"got {value!r}; valid: a positive integer or [height, width]")


def _check_non_negative(key: str, value: Any) -> None:
    values = value if isinstance(value, (list, tuple)) else [value]
    if not all(isinstance(v, (int, float)) and v >= 0 for v in values):
        raise ConfigError(key, f"got {value!r}; valid: numbers >= 0")


def _check_argument(op: str, arg: str, key: str, value: Any) -> None:
    if arg == "p":
        _check_probability(key, value)
    elif arg in ("brightness", "contrast", "saturation", "hue"):
        _check_jitter(key, value, is_hue=arg == "hue")
    elif arg == "scale":
        _check_increasing_positive(key, value, at_most_one=True)
    elif arg == "ratio":
        _check_increasing_positive(key, value, at_most_one=False)
    elif arg == "size":
        _check_size(key, value)
    elif arg in ("padding", "alpha", "magnitude", "num_ops", "num_magnitude_bins", "severity", "mixture_width"):
        _check_non_negative(key, value)


def _check_bins(key: str, kwargs: dict[str, Any]) -> None:
    """RandAugment's magnitude indexes a table of num_magnitude_bins strengths (torchvision's default: 31)."""
    if "magnitude" in kwargs and isinstance(kwargs["magnitude"], int):
        bins = kwargs.get("num_magnitude_bins", 31)
        if isinstance(bins, int) and not kwargs["magnitude"] < bins:
            raise ConfigError(f"{key}.magnitude", f"got {kwargs['magnitude']}; valid: 0 <= magnitude < num_magnitude_bins "
                              f"({bins})")


def _convert_enums(kwargs: dict[str, Any]) -> dict[str, Any]:
    """YAML has strings; torchvision wants its enums for these arguments."""
    converted = dict(kwargs)
    if isinstance(converted.get("interpolation"), str):
        converted["interpolation"] = T.InterpolationMode(converted["interpolation"].lower())
    if isinstance(converted.get("policy"), str):
        converted["policy"] = T.AutoAugmentPolicy(converted["policy"].lower())
    return converted


def _argument_names(op: str) -> list[str]:
    return [n for n in inspect.signature(getattr(T, op)).parameters if n not in ("self", "args", "kwargs")]


def build_torchvision_op(spec: OpSpec) -> T.Transform:
    """The torchvision op for a spec; torchvision's own argument checks become ConfigErrors naming the key."""
    try:
        return getattr(T, spec.name)(**_convert_enums(spec.kwargs))
    except (TypeError, ValueError) as error:
        raise ConfigError(spec.key, f"{str(error).splitlines()[0]} (arguments of {spec.name}: "
                          f"{', '.join(_argument_names(spec.name))})") from None


def parse_pipeline(ops: Mapping[str, Any] | None, *, prefix: str, allowed: tuple[str, ...]) -> list[OpSpec]:
    """Check a configured pipeline and return it as specs in application order."""
    specs = []
    for name, kwargs in (ops or {}).items():
        key = f"{prefix}.{name}"
        if name not in allowed:
            raise ConfigError(key, f"unknown augmentation op {name!r}; valid: {', '.join(sorted(allowed))}")
        if kwargs is not None and not isinstance(kwargs, Mapping):
            raise ConfigError(key, f"got {kwargs!r}; valid: a mapping of {name}'s arguments, e.g. "
                              f"{key}={{{_argument_names(name)[0]}: ...}} (in YAML: `{name}: {{arg: value}}`; "
                              f"`{name}: {{}}` for its defaults)")
        kwargs = dict(kwargs or {})
        accepted = _argument_names(name)
        for arg, value in kwargs.items():
            if arg not in accepted:
                raise ConfigError(f"{key}.{arg}", f"unknown argument of {name}; valid: {', '.join(accepted)}")
            _check_argument(name, arg, f"{key}.{arg}", value)
        _check_bins(key, kwargs)
        spec = OpSpec(name, kwargs, key)
        build_torchvision_op(spec)  # torchvision rejects what our checks do not know about (unknown arguments, types)
        specs.append(spec)
    return specs


def parse_train_pipeline(ops: Mapping[str, Any] | None) -> list[OpSpec]:
    return parse_pipeline(ops, prefix="aug.train", allowed=IMAGE_OPS + TENSOR_OPS)


def parse_batch_pipeline(ops: Mapping[str, Any] | None) -> list[OpSpec]:
    return parse_pipeline(ops, prefix="aug.batch", allowed=BATCH_OPS)


def resolve_backend(backend: str, specs: list[OpSpec], *, device_kind: str) -> tuple[str, str | None]:
    """auto -> gpu when training on CUDA, else cpu. Returns (backend, a warning to show once or None)."""
    from augrun.augment.gpu import GPU_OPS
    missing = [s.name for s in specs if s.name not in GPU_OPS]
    if backend == "gpu" and missing:
        raise ConfigError("aug.backend", f"gpu has no version of {', '.join(missing)}; valid: aug.backend=cpu or auto "
                          f"(gpu ops: {', '.join(sorted(GPU_OPS))})")
    if backend != "auto":
        return backend, None
    if device_kind != "cuda":
        return "cpu", None
    if missing:
        return "cpu", f"aug.backend=auto: {', '.join(missing)} has no gpu version, so augmentation runs on the cpu backend"
    return "gpu", None

