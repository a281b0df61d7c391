"""The augmentation vocabulary: which ops a config may name, and the checks on their arguments.

A pipeline in a config is a mapping `ClassName: {argument: value}` in application order. Only the names in REGISTRY are
accepted (a config never imports arbitrary code), and each argument is checked here so that a typo or an impossible
value stops the run before any work with a message naming `aug.train.<Op>.<argument>`.

REGISTRY is the one list of names: the parser accepts exactly its names and `augrun ops` lists exactly them. Besides
torchvision's classes it holds the Gluon (MXNet) names that the d2l book's MXNet code uses, as aliases that parse into
the torchvision op with the same meaning, so the book's MXNet pipelines run as written on both backends.
"""
from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torchvision.transforms.v2 as T

from augrun.errors import ConfigError

PER_IMAGE, TENSOR, BATCH = "per-image", "tensor", "batch"
REQUIRED = inspect.Parameter.empty  # an alias argument without a default, as in Gluon's signature


@dataclass(frozen=True)
class Alias:
    """A Gluon transform, run as the torchvision op `target` with the same arguments (Gluon's and torchvision's names
    coincide for every alias below); `arguments` is Gluon's signature, REQUIRED where Gluon has no default."""
    target: str
    arguments: Mapping[str, Any]
    summary: str       # Gluon's docstring, first line
    differences: str   # where Gluon's semantics differ from the torchvision op's, from MXNet's source


@dataclass(frozen=True)
class RegisteredOp:
    name: str
    kind: str  # PER_IMAGE (aug.train, PIL in the cpu workers), TENSOR (aug.train, after ToTensor), BATCH (aug.batch)
    alias: Alias | None = None
    note: str = ""               # shown by `augrun ops NAME`

    @property
    def runs_as(self) -> str:
        return self.alias.target if self.alias else self.name

    @property
    def backends(self) -> tuple[str, ...]:
        from augrun.augment.gpu import BATCH_OP_CLASSES, GPU_OPS  # torch-heavy; only `augrun ops` asks
        return ("cpu", "gpu") if self.runs_as in GPU_OPS or self.runs_as in BATCH_OP_CLASSES else ("cpu",)


# Sources for the Gluon notes: apache/mxnet python/mxnet/gluon/data/vision/transforms.py (1.x) and
# .../transforms/image.py (2.x), and the kernels they call in src/operator/image/image_random-inl.h.
_GLUON_FACTOR = ("same distribution: the factor is uniform in [max(0, 1 - {arg}), 1 + {arg}], as torchvision's; Gluon "
                 "applies it to the HWC uint8 array, torchvision to the PIL image")
_GLUON_HUE = ("same shift: Gluon draws alpha in [max(0, 1 - hue), 1 + hue] and adds alpha*360 degrees to the HLS hue, "
              "a rotation by -hue..+hue turns, which is torchvision's HSV hue shift of hue_factor in [-hue, hue] turns "
              "(HLS and HSV share the hue angle). Gluon accepts hue up to 1; torchvision only up to 0.5 (half a turn "
              "either way already reaches every hue), so larger values are refused. Not mx.image.HueJitterAug "
              "(ImageIter), which rotates in YIQ space by alpha*pi, half the angle")
_ALIASES = {
    "RandomFlipLeftRight": Alias("RandomHorizontalFlip", {"p": 0.5},
                                 "Randomly flip the input image left to right with a probability of p (0.5).",
                                 "same: MXNet 1.x takes no argument (always 0.5); 2.x's p is accepted"),
    "RandomFlipTopBottom": Alias("RandomVerticalFlip", {"p": 0.5},
                                 "Randomly flip the input image top to bottom with a probability of p (0.5).",
                                 "same: MXNet 1.x takes no argument (always 0.5); 2.x's p is accepted"),
    "RandomBrightness": Alias("ColorJitter", {"brightness": REQUIRED},
                              "Randomly jitters image brightness with a factor chosen from [max(0, 1 - brightness), "
                              "1 + brightness].", _GLUON_FACTOR.format(arg="brightness")),
    "RandomContrast": Alias("ColorJitter", {"contrast": REQUIRED},
                            "Randomly jitters image contrast with a factor chosen from [max(0, 1 - contrast), "
                            "1 + contrast].", _GLUON_FACTOR.format(arg="contrast") + "; both blend with the mean of "
                            "the grayscale image (weights 0.299, 0.587, 0.114)"),
    "RandomSaturation": Alias("ColorJitter", {"saturation": REQUIRED},
                              "Randomly jitters image saturation with a factor chosen from [max(0, 1 - saturation), "
                              "1 + saturation].", _GLUON_FACTOR.format(arg="saturation") + "; both blend with the "
                              "grayscale image"),
    "RandomHue": Alias("ColorJitter", {"hue": REQUIRED},
                       "Randomly jitters image hue with a factor chosen from [max(0, 1 - hue), 1 + hue].", _GLUON_HUE),
    "RandomColorJitter": Alias("ColorJitter", {"brightness": 0, "contrast": 0, "saturation": 0, "hue": 0},
                               "Randomly jitters the brightness, contrast, saturation, and hue of an image.",
                               "in a random order, as torchvision's. Gluon draws the brightness, contrast and "
                               "saturation factors as 1 + U(-x, x), not clamped at 0 as torchvision's max(0, 1 - x): "
                               "the same for x <= 1 (larger x: Gluon can draw negative factors). Hue: as RandomHue "
                               "(a shift of U(-hue, hue) turns of the HLS hue)"),
}
_TORCHVISION_OPS = {
    **dict.fromkeys(("RandomHorizontalFlip", "RandomVerticalFlip", "RandomResizedCrop", "RandomCrop", "ColorJitter",
                     "RandomGrayscale", "RandomRotation", "RandomAffine", "GaussianBlur", "AutoAugment", "RandAugment",
                     "TrivialAugmentWide", "AugMix", "Resize"), PER_IMAGE),
    "RandomErasing": TENSOR,  # torchvision applies it to tensors only, so the cpu backend runs it after ToTensor
    "MixUp": BATCH, "CutMix": BATCH,  # mix labels too (`aug.batch`); on the training device for both backends
    "MixUpCutMix": BATCH,  # augrun's own (OWN_OPS): one of MixUp and CutMix per batch, as DeiT
}
# ops that are augrun's, not torchvision's: their class, in augrun.augment.gpu, gives their arguments and checks them
OWN_OPS = ("MixUpCutMix",)
# op arguments that augrun sets itself, and from what: a value in the config could only disagree with it
SET_BY_AUGRUN = {"num_classes": "the dataset's classes, dataset.num_classes"}


def op_class(name: str) -> type:
    """The class an op's arguments and checks come from: torchvision's v2 class, or augrun's own."""
    if name in OWN_OPS:
        from augrun.augment import gpu
        return getattr(gpu, name)
    return getattr(T, name)
_NOTES = {
    "Resize": "size: one number resizes the shorter side to it (the aspect ratio kept), [height, width] both sides; "
              "streamed photos (dataset.storage=stream) need a crop after it, e.g. RandomCrop of dataset.image_size",
    "RandomResizedCrop": "Gluon's RandomResizedCrop(size, scale=(0.08, 1.0), ratio=(3/4, 4/3)) has the same defaults, "
                         "but its size is (width, height) and torchvision's [height, width]: swap a non-square Gluon "
                         "size; Gluon's scale may be one number (the least area), which is [number, 1.0] here",
}
REGISTRY: dict[str, RegisteredOp] = {
    **{name: RegisteredOp(name, kind, note=_NOTES.get(name, "")) for name, kind in _TORCHVISION_OPS.items()},
    **{name: RegisteredOp(name, _TORCHVISION_OPS[alias.target], alias) for name, alias in _ALIASES.items()},
}


def registered_names(*kinds: str, aliases: bool = True) -> tuple[str, ...]:
    return tuple(n for n, op in REGISTRY.items() if op.kind in kinds and (aliases or op.alias is None))


# ops that take a tensor, not a PIL image: the cpu backend runs them after ToTensor (aliases are torchvision's by then)
TENSOR_OPS = registered_names(TENSOR, aliases=False)
TRAIN_NAMES = registered_names(PER_IMAGE, TENSOR)  # what aug.train accepts
BATCH_NAMES = registered_names(BATCH)              # what aug.batch accepts


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
    """RandAugment's magnitude indexes a table of num_magnitude_bins strengths (torchvision's default: 31): the table
    needs a strength, and the magnitude must be in it."""
    bins = kwargs.get("num_magnitude_bins", 31)
    if isinstance(bins, int) and not isinstance(bins, bool) and bins < 1:
        raise ConfigError(f"{key}.num_magnitude_bins", f"got {bins}; valid: an integer >= 1 (the number of strengths "
                          "magnitude picks from; torchvision's default: 31)")
    if "magnitude" in kwargs and isinstance(kwargs["magnitude"], int) and isinstance(bins, int):
        magnitude = kwargs["magnitude"]
        if not magnitude < bins:  # either argument may be the one set: the op names both
            raise ConfigError(key, f"magnitude {magnitude} is not below num_magnitude_bins {bins}; valid: "
                              f"{key}.magnitude < {key}.num_magnitude_bins")


def torchvision_arguments(kwargs: dict[str, Any]) -> dict[str, Any]:
    """A spec's arguments as torchvision's classes (v1 and v2 alike) take them: YAML has strings for their enums."""
    converted = dict(kwargs)
    if isinstance(converted.get("interpolation"), str):
        converted["interpolation"] = T.InterpolationMode(converted["interpolation"].lower())
    if isinstance(converted.get("policy"), str):
        converted["policy"] = T.AutoAugmentPolicy(converted["policy"].lower())
    return converted


def argument_defaults(name: str) -> dict[str, Any]:
    """A registered op's arguments and their defaults (REQUIRED: none): torchvision's signature, Gluon's for an
    alias."""
    alias = REGISTRY[name].alias if name in REGISTRY else None
    if alias is not None:
        return dict(alias.arguments)
    return {n: default for n, default in _class_arguments(name).items() if n not in SET_BY_AUGRUN}


def _class_arguments(name: str) -> dict[str, Any]:
    return {n: p.default for n, p in inspect.signature(op_class(name)).parameters.items()
            if n not in ("self", "args", "kwargs")}


def _set_by_augrun(name: str) -> set[str]:
    """The arguments of op `name` that augrun sets itself (MixUp's num_classes): its class takes them, a config
    does not."""
    return set() if REGISTRY[name].alias is not None else SET_BY_AUGRUN.keys() & _class_arguments(name).keys()


def _argument_names(op: str) -> list[str]:
    return list(argument_defaults(op))


def build_torchvision_op(spec: OpSpec, cls: type | None = None) -> Callable:
    """The torchvision op for a spec: the v2 class of its name, or `cls`, a class with the same arguments (the cpu
    backend's choice); torchvision's own argument checks become ConfigErrors naming the key."""
    return _build(spec, written=spec.name, cls=cls)


def _build(spec: OpSpec, *, written: str, cls: type | None = None) -> Callable:
    # `written`: the name in the config (a Gluon alias, or spec.name), whose arguments the message lists
    try:
        return (cls or op_class(spec.name))(**torchvision_arguments(spec.kwargs))
    except (TypeError, ValueError) as error:
        raise ConfigError(spec.key, f"{str(error).splitlines()[0]} (arguments of {written}: "
                          f"{', '.join(_argument_names(written))})") from None


def _check_required(name: str, key: str, kwargs: Mapping[str, Any]) -> None:
    """Gluon's RandomBrightness(brightness) & co. have no default: `{}` would be a silent no-op ColorJitter here.
    (torchvision's own required arguments are reported by torchvision, in _build.)"""
    if REGISTRY[name].alias is None:
        return
    missing = [arg for arg, default in argument_defaults(name).items() if default is REQUIRED and arg not in kwargs]
    if missing:
        raise ConfigError(f"{key}.{missing[0]}", f"missing; {name} has no default for it; valid: e.g. "
                          f"+{key}.{missing[0]}=0.5")


def parse_pipeline(ops: Mapping[str, Any] | None, *, prefix: str, allowed: tuple[str, ...]) -> list[OpSpec]:
    """Check a configured pipeline and return it as specs in application order, aliases become their torchvision op
    (the spec's key keeps the name as written, so later messages name what the user wrote)."""
    specs = []
    for name, kwargs in (ops or {}).items():
        key = f"{prefix}.{name}"
        if name not in allowed:
            raise ConfigError(key, f"unknown augmentation op {name!r}; valid: {', '.join(sorted(allowed))} "
                              "(augrun ops lists them)")
        if kwargs is not None and not isinstance(kwargs, Mapping):
            raise ConfigError(key, f"got {kwargs!r}; valid: a mapping of {name}'s arguments, e.g. "
                              f"{key}={{{_argument_names(name)[0]}: ...}} (in YAML: `{name}: {{arg: value}}`; "
                              f"`{name}: {{}}` for its defaults)")
        kwargs = dict(kwargs or {})
        accepted = _argument_names(name)
        for arg, value in kwargs.items():
            if arg in _set_by_augrun(name):
                raise ConfigError(f"{key}.{arg}", f"is set by augrun ({SET_BY_AUGRUN[arg]}); valid: leave it out "
                                  f"of {key}")
            if arg not in accepted:
                raise ConfigError(f"{key}.{arg}", f"unknown argument of {name}; valid: {', '.join(accepted)}")
            _check_argument(name, arg, f"{key}.{arg}", value)
        _check_required(name, key, kwargs)
        _check_bins(key, kwargs)
        spec = OpSpec(REGISTRY[name].runs_as, kwargs, key)
        _build(spec, written=name)  # torchvision rejects what our checks do not know about (unknown arguments, types)
        specs.append(spec)
    return specs


def parse_train_pipeline(ops: Mapping[str, Any] | None) -> list[OpSpec]:
    return parse_pipeline(ops, prefix="aug.train", allowed=TRAIN_NAMES)


def parse_batch_pipeline(ops: Mapping[str, Any] | None) -> list[OpSpec]:
    return parse_pipeline(ops, prefix="aug.batch", allowed=BATCH_NAMES)


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

