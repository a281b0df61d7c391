"""`augrun preview` and a run's preview.png: grid size, determinism, both backends, the dataset grid, bad input.

Most tests call `preview_command` in this process (seconds saved on imports); the error contract is checked once
through a real `python -m augrun` subprocess. Images are made by the tests; the dataset is the synthetic one.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from augrun.augment.ops import parse_train_pipeline
from augrun.drawing import augmented_copies, write_run_preview
from augrun.preview import preview_command
from helpers import run_augrun, snapshot

SYNTHETIC = "dataset=synthetic"


def make_image(path: Path, size: tuple[int, int] = (40, 32)) -> Path:
    """A colour gradient that is not left-right symmetric, so flips and colour changes both show."""
    width, height = size
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :].repeat(height, 0)
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None].repeat(width, 1)
    rgb = np.stack([x, y, 255 - 0.5 * x], axis=-1).round().astype(np.uint8)
    Image.fromarray(rgb).save(path)
    return path


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def size_of(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:
        return image.size


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    make_image(tmp_path / "cat.png")
    return tmp_path


def preview(*overrides: str) -> None:
    preview_command(list(overrides))


@pytest.mark.parametrize("rows, cols, scale, expected", [(2, 4, 1.5, (600, 300)), (3, 2, 1.0, (200, 300)),
                                                         (1, 3, 0.7, (210, 70))])
def test_grid_has_the_documented_pixel_size_and_nothing_else_is_written(in_tmp: Path, rows, cols, scale, expected):
    preview("image=cat.png", f"rows={rows}", f"cols={cols}", f"scale={scale}", "out=grid.png")
    assert size_of(in_tmp / "grid.png") == expected  # (cols * scale * 100, rows * scale * 100)
    assert sorted(p.name for p in in_tmp.iterdir()) == ["cat.png", "grid.png"]  # no outputs/, .hydra/, log, temp file


def test_default_grid_is_the_books_2x4_of_the_first_training_image(in_tmp: Path):
    preview(SYNTHETIC)
    assert size_of(in_tmp / "preview.png") == (600, 300)


def test_different_pipelines_give_different_pictures(in_tmp: Path):
    preview("image=cat.png", "aug=flip_only", "out=flip.png")
    preview("image=cat.png", "aug=color_jitter", "out=jitter.png")
    assert not np.array_equal(pixels(in_tmp / "flip.png"), pixels(in_tmp / "jitter.png"))


def test_same_seed_same_bytes_other_seed_other_picture(in_tmp: Path):
    preview("image=cat.png", "aug=color_jitter", "out=a.png")
    preview("image=cat.png", "aug=color_jitter", "out=b.png")
    preview("image=cat.png", "aug=color_jitter", "seed=1", "out=c.png")
    assert (in_tmp / "a.png").read_bytes() == (in_tmp / "b.png").read_bytes()
    assert not np.array_equal(pixels(in_tmp / "a.png"), pixels(in_tmp / "c.png"))


@pytest.mark.parametrize("backend", ["cpu", "gpu"])
def test_both_backends_draw_a_different_copy_per_cell(in_tmp: Path, backend: str):
    preview("image=cat.png", "aug=flip_color_crop", f"aug.backend={backend}", "out=grid.png")
    assert size_of(in_tmp / "grid.png") == (600, 300)
    specs = parse_train_pipeline({"ColorJitter": {"brightness": 0.5, "hue": 0.5},
                                  "RandomResizedCrop": {"size": 24, "scale": [0.1, 1.0]}})
    image = torch.from_numpy(pixels(in_tmp / "cat.png").copy()).permute(2, 0, 1)
    copies = augmented_copies(image, specs, backend, 8, seed=0)
    assert len(copies) == 8 and all(c.shape == (3, 24, 24) and c.dtype == torch.float32 for c in copies)
    assert all(0 <= c.min() and c.max() <= 1 for c in copies)
    assert len({c.numpy().tobytes() for c in copies}) == 8  # every cell its own draw
    again = augmented_copies(image, specs, backend, 8, seed=0)
    assert all(torch.equal(a, b) for a, b in zip(copies, again))


def test_dataset_grid_is_4x8_by_default(in_tmp: Path):
    preview(SYNTHETIC, "show=dataset", "out=data.png")
    assert size_of(in_tmp / "data.png") == (1200, 600)
    preview(SYNTHETIC, "dataset.channels=1", "show=dataset", "rows=1", "cols=2", "out=gray.png")
    assert size_of(in_tmp / "gray.png") == (300, 150)


def test_missing_image_exits_2_with_one_line_naming_it(tmp_path: Path):
    before = snapshot(tmp_path)
    result = run_augrun("preview", "image=no_such_cat.jpg", cwd=tmp_path, timeout=120)
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "Traceback" not in output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("augrun: error: image: no_such_cat.jpg not found"), output
    assert snapshot(tmp_path) == before


BAD_INPUT = {
    "rows zero": (["rows=0"], "rows: got 0"),
    "cols not a number": (["cols=abc"], "cols: got 'abc'"),
    "unknown key": (["+colz=3"], "colz: unknown key; valid keys here: aug, dataset, image"),
    "unknown show": (["show=cats"], "show: got 'cats'; valid: aug, dataset"),
    "scale zero": (["scale=0"], "scale: got 0"),
    "unknown format": (["out=grid.txt"], "out: unknown picture format '.txt'"),
    "unknown pipeline": (["aug=bogus"], "aug=bogus: unknown option; valid: "),
    "sweep": (["aug=flip_only,color_jitter"], "aug=flip_only,color_jitter: preview draws one grid"),
    "gpu op missing": (["aug=autoaugment", "aug.backend=gpu"], "aug.backend: gpu has no version of AutoAugment"),
    "not an image": (["image=notes.txt"], "image: cannot decode notes.txt"),
    "crop larger than image": (["image=cat.png", "aug=standard", "dataset.image_size=64"], "aug.train: cannot apply"),
    "imagefolder without root": (["dataset=imagefolder"], "dataset.root: required by dataset=imagefolder"),
}


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_is_one_line_and_writes_nothing(in_tmp: Path, capsys, case: str):
    overrides, expected = BAD_INPUT[case]
    (in_tmp / "notes.txt").write_text("not an image")
    before = snapshot(in_tmp)
    with pytest.raises(SystemExit) as stop:
        preview(SYNTHETIC, *overrides)
    assert stop.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("augrun: error: "), lines
    assert expected in lines[0], lines[0]
    assert snapshot(in_tmp) == before


@pytest.mark.parametrize("backend", ["cpu", "gpu"])
def test_write_run_preview_writes_the_2x4_grid_and_leaves_the_rng_alone(tmp_path: Path, backend: str):
    image = torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    specs = parse_train_pipeline({"RandomHorizontalFlip": {"p": 0.5}, "ColorJitter": {"brightness": 0.5}})
    state = torch.get_rng_state()
    path = write_run_preview(image, specs, backend, tmp_path / "run" / "preview.png", seed=3)
    assert torch.equal(torch.get_rng_state(), state)  # the run's own random stream is untouched
    assert path == tmp_path / "run" / "preview.png" and size_of(path) == (600, 300)
    first = path.read_bytes()
    write_run_preview(image, specs, backend, path, seed=3)
    assert path.read_bytes() == first
    assert sorted(p.name for p in path.parent.iterdir()) == ["preview.png"]  # written atomically, no temp file left
