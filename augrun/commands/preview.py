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
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from omegaconf import DictConfig, OmegaConf

from augrun.commands.preview_options import CONFIG_NAME, DEFAULT_IMAGE, PreviewOptions, preview_options
from augrun.errors import ConfigError, UserError, fail, first_line, printable
from augrun.report.drawing import DPI, augmented_copies, read_image, render_grid

if TYPE_CHECKING:
    import torch


def preview_command(argv: list[str]) -> None:
    from augrun.config.command_line import INFO_FLAGS, run_hydra, split_argv

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
