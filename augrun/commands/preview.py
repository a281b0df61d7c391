"""`augrun preview`: pictures of what a pipeline does, and of a dataset.

    augrun preview aug=color_jitter [image=cat.jpg] [out=grid.png] [rows=2 cols=4] [seed=0] [scale=1.5]
    augrun preview show=dataset [dataset=fashion_mnist]

show=aug is the d2l book's ``apply(img, aug, num_rows=2, num_cols=4, scale=1.5)``: one image augmented rows*cols times,
each copy with its own random draw, in a grid. The image is ``image=`` or else the cat photo shipped in augrun/assets/
(the book's example is a cat too; see NOTICE), so the default preview needs no dataset and no network. aug.backend
picks how: cpu (and auto: a preview runs on the CPU, where auto means cpu) is the torchvision pipeline of
augrun.augment.cpu applied per copy; gpu is augrun.augment.gpu's batched ops on a batch of rows*cols copies,
on the CPU device. Neither normalises. Only aug.train is drawn: aug.batch (MixUp, CutMix) mixes images of a batch and is
checked but not shown. The image is used at its own size, and pipelines whose size follows the dataset
(``size: ${dataset.image_size}``) crop to the image's shorter side unless dataset.image_size is given: the shipped cat
(300x200) gets the book's 200x200 crops, not CIFAR's 32 px ones.
show=dataset is the book's ``show_images`` of rows*cols training images, titled with their class names: a seeded,
class-balanced sample (the first images of an image folder would all be one class).

The picture has a fixed pixel size: the figure is (cols * scale, rows * scale) inches, saved at DPI = 100 without a
tight bounding box, so it is round(cols * scale * 100) x round(rows * scale * 100) pixels (a 2x4 grid at scale 1.5 is
600x300). Every draw is seeded from ``seed`` (augrun.seeding.derive_seed), and PNGs carry no version text, so the same
command writes the same bytes. preview writes nothing but that file (no outputs/, no .hydra/, no log).

Bad input exits 2 with one line naming the key or path, before torch is imported where the check needs no torch.
"""
from __future__ import annotations

import dataclasses
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf

from augrun.config.schema import AugConfig, DatasetConfig, check_at_least, check_choice
from augrun.errors import ConfigError
from augrun.report.drawing import DPI, augmented_copies, read_image, render_grid
from augrun.errors import UserError, fail, first_line, printable

if TYPE_CHECKING:
    import torch

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


# --- the command -----------------------------------------------------------------------------------------------------

def preview_command(argv: list[str]) -> None:
    from augrun.config.compose import INFO_FLAGS, run_hydra, split_argv

    overrides, flags = split_argv(argv)
    if flags & INFO_FLAGS:  # --help, --cfg job, ...: Hydra prints and runs nothing
        run_hydra(lambda cfg: None, CONFIG_NAME, argv)
        return
    try:
        options, path = draw_preview(overrides, flags)
    except UserError as error:
        fail(str(error))
    width, height = _pixels(options)
    print(f"wrote {path} ({options.rows}x{options.cols} grid, {width}x{height} pixels)")


def draw_preview(overrides: list[str], flags: set[str], *, out: Path | None = None) -> tuple[PreviewOptions, Path]:
    """`augrun preview` below its argument handling, shared with augrun.preview(): check, say that aug.batch is not
    drawn, draw. `out` replaces the config's out (the Python API draws into a temporary file unless out= is given)."""
    if flags:
        raise UserError(sorted(flags)[0], "not an option of augrun preview, which draws one grid; valid: "
                        "key=value overrides, --help, --cfg job (run preview once per pipeline to compare)")
    options = preview_options(overrides)
    if out is not None:
        options = dataclasses.replace(options, out=out)
    if options.batch_ops:
        print(f"augrun: warning: aug.batch ({', '.join(options.batch_ops)}) mixes the images of a training batch; "
              "the preview shows aug.train only", file=sys.stderr)
    return options, write_preview(options)


def preview_options(overrides: list[str]) -> PreviewOptions:
    """The checked options of `augrun preview <overrides>`; show=aug sizes `${dataset.image_size}` to the image."""
    cfg = compose_preview(overrides)
    if cfg.show == "aug" and not any(_key(o) == "dataset.image_size" for o in overrides):
        cfg.dataset.image_size = _shorter_side(cfg.image) or cfg.dataset.image_size
    return check_options(cfg)


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


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

    from augrun.config.compose import CONFIG_MODULE, describe_composition_error

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


def _pixels(options: PreviewOptions) -> tuple[int, int]:
    return round(options.cols * options.scale * DPI), round(options.rows * options.scale * DPI)


def _training_images(dataset: DictConfig):
    """The configured dataset's training split (loaded as train loads it: download, subset, cache)."""
    from augrun.data.datasets import load_dataset

    for key in dataset:
        if OmegaConf.is_missing(dataset, key):  # imagefolder's root: ???
            raise ConfigError(f"dataset.{key}", f"required by dataset={dataset.name} but not set; valid: "
                              f"dataset.{key}=..., or show=aug to preview an image instead")
    d = OmegaConf.to_object(dataset)
    return load_dataset(d.name, d.root, download=d.download, image_size=d.image_size, channels=d.channels,
                        num_classes=d.num_classes, train_size=d.train_size, test_size=d.test_size).train


def write_preview(options: PreviewOptions) -> Path:
    """Draw the picture a checked preview command asks for; returns the path written."""
    count = options.rows * options.cols
    if options.show == "dataset":
        train = _training_images(options.dataset)
        chosen = class_balanced_sample(train.labels, count, options.seed)
        images = [train.images[i].float().div(255) for i in chosen]
        titles = [train.classes[int(train.labels[i])] for i in chosen]
        return _render(images, options, titles)
    image = read_image(options.image) if options.image is not None else _read_default_image()
    copies = augmented_copies(image, options.train_ops, options.backend, count, options.seed)
    return _render(copies, options, None)


def _read_default_image() -> torch.Tensor:
    """The cat shipped as package data, read through importlib.resources so that an installed augrun finds it too."""
    from importlib.resources import as_file, files

    with as_file(files("augrun") / "assets" / DEFAULT_IMAGE) as path:
        return read_image(path)


def class_balanced_sample(labels: torch.Tensor, count: int, seed: int) -> list[int]:
    """Indices of ``count`` images, classes taking turns (data.classes_taking_turns, as a subset takes them), in a
    random order seeded from (seed, "preview", "dataset"): the picture shows the whole dataset rather than its first
    class, and the same seed shows the same images."""
    import torch

    from augrun.data.datasets import classes_taking_turns
    from augrun.seeding import derive_seed

    generator = torch.Generator().manual_seed(derive_seed(seed, "preview", "dataset"))
    return classes_taking_turns(labels, generator)[:count].tolist()


def _render(images, options: PreviewOptions, titles) -> Path:
    try:
        return render_grid(images, options.out, rows=options.rows, cols=options.cols, scale=options.scale,
                           titles=titles)
    except OSError as error:
        raise ConfigError("out", f"cannot write {printable(options.out)} ({error.strerror or first_line(error)}); "
                          "valid: a path in a writable directory") from None
