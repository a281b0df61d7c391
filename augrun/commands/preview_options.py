"""The options of `augrun preview`: its config composed from preview.yaml and the command's overrides, and checked
into plain values (types, ranges, files, the pipeline's ops), each error one line naming its key."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf

from augrun import rundir
from augrun.config.command_line import override_key
from augrun.config.schema import AugConfig, DatasetConfig, check_at_least, check_choice
from augrun.errors import ConfigError, UserError, first_line, printable
from augrun.report.drawing import DPI

if TYPE_CHECKING:
    from augrun.augment.ops import OpSpec

CONFIG_NAME = "preview"
DEFAULT_GRID = {"aug": (2, 4), "dataset": (4, 8)}  # rows, cols when left null: the book's apply, and a dataset overview
SHOW = tuple(DEFAULT_GRID)
KEYS = ("aug", "dataset", "image", "out", "rows", "cols", "show", "seed", "scale")
DEFAULT_IMAGE = "cat.jpg"  # in augrun/assets/: the image of image=null; source and licence in NOTICE
MAX_SIDE_PX = 16384  # Agg refuses pictures of 2**16 pixels a side; far below that a grid is already unreadable



@dataclass
class PreviewOptions:
    """A checked preview command, as plain values."""
    show: str
    image: Path | None            # None: the shipped cat (DEFAULT_IMAGE)
    out: Path
    rows: int
    cols: int
    seed: int
    scale: float
    backend: str                  # cpu | gpu, resolved
    train_ops: list[OpSpec]
    batch_ops: list[str]          # names of aug.batch's ops: checked, not drawn
    dataset: DictConfig           # the dataset section, typed by DatasetConfig; read only when the dataset is used


def preview_options(overrides: list[str]) -> PreviewOptions:
    """The checked options of `augrun preview <overrides>`; show=aug sizes `${dataset.image_size}` to the image."""
    cfg = compose_preview(overrides)
    if cfg.show == "aug" and not any(override_key(o) == "dataset.image_size" for o in overrides):
        cfg.dataset.image_size = _shorter_side(cfg.image) or cfg.dataset.image_size
    return check_options(cfg)


def _shorter_side(image: Any) -> int | None:
    """The shorter side of the image to preview (the shipped cat's for null); None when it cannot be read, which
    check_options then reports in one line."""
    from importlib.resources import as_file, files

    from PIL import Image
    try:
        with as_file(files("augrun") / "assets" / DEFAULT_IMAGE) as cat, Image.open(image or cat) as opened:
            return min(opened.size)
    except Exception:  # noqa: BLE001 - whatever the file is, check_options and read_image say what is wrong
        return None


def compose_preview(overrides: list[str]) -> DictConfig:
    """The composed preview config; composition errors as one-line UserErrors."""
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from augrun.config.command_line import CONFIG_MODULE
    from augrun.config.hydra_errors import describe_composition_error

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception as error:  # Hydra's OverrideParseException: a line of grammar, then a link
        raise UserError("", f"cannot parse the overrides: {first_line(error)}") from None
    for override in parsed:
        if override.is_sweep_override():
            raise UserError(override.input_line, "preview draws one grid; valid: one value per key "
                            "(run augrun preview once per choice)")
    GlobalHydra.instance().clear()
    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        try:
            return compose(config_name=CONFIG_NAME, overrides=overrides)
        except Exception as error:
            raise UserError("", describe_composition_error(error, _valid_keys)) from None


def _valid_keys(parent: str) -> list[str]:
    """The preview config's keys by section, for cli's one-line composition errors."""
    import dataclasses
    sections = {"": list(KEYS), "aug": [f.name for f in dataclasses.fields(AugConfig)],
                "dataset": [f.name for f in dataclasses.fields(DatasetConfig)]}
    return sections.get(parent, [])


# --- checking the config -----------------------------------------------------------------------------------------

def check_options(cfg: DictConfig) -> PreviewOptions:
    """The composed config as checked plain values: types, ranges, files, and the pipeline's ops and arguments."""
    try:
        plain = OmegaConf.to_container(cfg, resolve=True)
    except Exception as error:  # an interpolation that cannot resolve
        key = getattr(error, "full_key", "") or ""
        raise UserError(key, first_line(error)) from None
    plain.pop("hydra", None)
    for key in plain:
        if key not in KEYS:
            raise ConfigError(key, f"unknown key; valid keys here: {', '.join(KEYS)}")

    show = plain["show"]
    if show not in SHOW:
        raise ConfigError("show", f"got {show!r}; valid: {', '.join(SHOW)}")
    default_rows, default_cols = DEFAULT_GRID[show]
    rows = _integer("rows", plain["rows"], default_rows)
    cols = _integer("cols", plain["cols"], default_cols)
    seed = _integer("seed", plain["seed"], None, minimum=None)
    scale = plain["scale"]
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale <= 0:
        raise ConfigError("scale", f"got {scale!r}; valid: inches per cell, a number > 0 (the book uses 1.5)")
    width, height = round(cols * scale * DPI), round(rows * scale * DPI)
    if max(width, height) > MAX_SIDE_PX or min(width, height) < 1:
        raise ConfigError("scale", f"a {rows}x{cols} grid at scale {scale} is {width}x{height} pixels; valid: "
                          f"1 to {MAX_SIDE_PX} pixels a side (fewer rows or cols, or a smaller scale)")
    out = _out_path(plain["out"])
    image = None if plain["image"] is None or show == "dataset" else _image_path(plain["image"])

    aug = _typed_section("aug", plain["aug"], AugConfig)
    check_choice("aug.backend", aug.backend)
    from augrun.augment.ops import parse_batch_pipeline, parse_train_pipeline, resolve_backend
    train_ops = parse_train_pipeline(OmegaConf.to_container(aug.train))
    batch_ops = parse_batch_pipeline(OmegaConf.to_container(aug.batch))  # checked as train does; not drawn here
    backend, _ = resolve_backend(aug.backend, train_ops, device_kind="cpu")
    dataset = _typed_section("dataset", plain["dataset"], DatasetConfig)
    return PreviewOptions(show, image, out, rows, cols, seed, float(scale), backend, train_ops,
                          [spec.name for spec in batch_ops], dataset)


def _integer(key: str, value: Any, default: int | None, *, minimum: int | None = 1) -> int:
    if value is None and default is not None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        valid = f"an integer >= {minimum}" if minimum is not None else "an integer"
        raise ConfigError(key, f"got {value!r}; valid: {valid}" + (" or null (the default)" if default else ""))
    if minimum is not None:
        check_at_least(key, value, minimum)
    return value


def _out_path(value: Any) -> Path:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError("out", f"got {value!r}; valid: a file name such as preview.png")
    path = Path(value).expanduser()
    formats = _figure_formats()
    suffix = path.suffix.lstrip(".").lower()
    if suffix and suffix not in formats:
        raise ConfigError("out", f"unknown picture format {path.suffix!r}; valid suffixes: {', '.join(formats)}")
    if path.is_dir():
        raise ConfigError("out", f"{printable(path)} is a directory; valid: a file name such as "
                          f"{printable(path / 'preview.png')}")
    rundir.check_output_place(path.parent, "out")  # a run's preview.png is its own
    return path


def _figure_formats() -> list[str]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    return sorted(FigureCanvasAgg.get_supported_filetypes())


def _image_path(value: Any) -> Path:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)) or not str(value).strip():
        raise ConfigError("image", f"got {value!r}; valid: the path of an image file, or null for the shipped cat "
                          "photo")
    path = Path(str(value)).expanduser()
    if not path.exists():
        raise ConfigError("image", f"{printable(path)} not found; valid: the path of an image file (PNG, JPEG, ...), "
                          "or null for the shipped cat photo")
    if not path.is_file():
        raise ConfigError("image", f"{printable(path)} is not a file; valid: the path of an image file (PNG, JPEG, ...)")
    return path


def _typed_section(name: str, section: Any, schema: type) -> DictConfig:
    """A config section merged into its train schema, so that unknown keys and wrong types are caught as in train."""
    try:
        typed = OmegaConf.merge(OmegaConf.structured(schema), OmegaConf.create(section))
        for key, value in section.items():
            if value == "???":  # merging a missing value keeps the schema's default: keep it missing instead
                typed[key] = "???"
        return typed
    except Exception as error:
        key = getattr(error, "full_key", "") or ""  # relative to the section
        valid = _valid_keys(name)
        if key and "." not in key and key not in valid:
            raise ConfigError(f"{name}.{key}", f"unknown key; valid keys here: {', '.join(valid)}") from None
        raise ConfigError(f"{name}.{key}" if key else name, first_line(error)) from None
