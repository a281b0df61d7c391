"""`augrun preview` and a run's preview.png: grid size, determinism, both backends, the dataset grid, bad input.

Most tests call `preview_command` in this process (seconds saved on imports); the error contract is checked once
through a real `python -m augrun` subprocess. Images are made by the tests (but for the shipped cat); the dataset is the
synthetic one or a tiny image folder. Also here: integer epoch ticks of curves.png and comparison.png.
"""
from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import make_image_folder, run_augrun, snapshot
from PIL import Image

import augrun.commands.preview
from augrun.augment.ops import parse_train_pipeline
from augrun.commands.preview import preview_command, preview_options
from augrun.compare import render
from augrun.compare.runs import RunResult
from augrun.compare.stats import build_report
from augrun.report.curves import curves_figure
from augrun.report.drawing import DPI, augmented_copies, picture_inches, write_run_preview

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


def test_the_picture_is_a_whole_number_of_pixels_whether_matplotlib_rounds_or_truncates():
    for cells in range(1, 7):
        for scale in [i / 20 for i in range(2, 61)]:  # 0.1 to 3.0: 3 * 0.7 inches is 2.0999... in floats
            pixels = round(cells * scale * DPI)
            assert int(picture_inches(cells, scale) * DPI) == round(picture_inches(cells, scale) * DPI) == pixels


CAT = Path(augrun.__file__).parent / "assets" / augrun.commands.preview.DEFAULT_IMAGE


def test_default_image_is_the_shipped_cat_with_no_data_and_no_network(tmp_path: Path, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("augrun preview went to the network")
    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.chdir(tmp_path)
    preview("aug=color_jitter", "dataset.download=false")  # cifar10 without its files: loading it would fail
    assert size_of(tmp_path / "preview.png") == (600, 300)  # the book's 2x4 grid
    assert sorted(p.name for p in tmp_path.iterdir()) == ["preview.png"]  # no data/ folder
    preview("aug=color_jitter", f"image={CAT}", "out=cat.png")
    assert (tmp_path / "preview.png").read_bytes() == (tmp_path / "cat.png").read_bytes()


def test_pipelines_sized_by_the_dataset_crop_to_the_image_unless_told(in_tmp: Path):
    def crop_size(*overrides: str):
        return preview_options(["aug=crop", *overrides]).train_ops[0].kwargs["size"]
    assert crop_size() == 200  # the shipped 300x200 cat: the book's 200x200 crops, not CIFAR's 32 px
    assert crop_size(f"image={in_tmp / 'cat.png'}") == min(size_of(in_tmp / "cat.png"))
    assert crop_size("dataset.image_size=64") == 64


def test_the_shipped_cat_is_a_small_photo():
    assert CAT.stat().st_size < 40_000  # a compact JPEG, shipped in the wheel
    assert size_of(CAT) == (300, 200)


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
    "imagefolder without root": (["dataset=imagefolder", "show=dataset"],  # show=aug needs no dataset
                                 "dataset.root: required by dataset=imagefolder"),
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


# --- show=dataset: a seeded, class-balanced sample -------------------------------------------------------------------

FOLDER_CLASSES = ("bird", "cat", "dog")  # sorted, as the image folder numbers them


def make_coloured_image_folder(root: Path, per_class: int = 4) -> None:
    """make_image_folder's tree, each training image repainted so that its red channel tells its class."""
    make_image_folder(root, classes=FOLDER_CLASSES, per_class=per_class)
    for label, name in enumerate(FOLDER_CLASSES):
        for path in (root / "train" / name).glob("*.png"):
            Image.new("RGB", (32, 32), (100 * label, 10 * int(path.stem), 0)).save(path)


@pytest.fixture
def drawn(monkeypatch) -> list[tuple[list[torch.Tensor], list[str] | None]]:
    """The images and titles of every grid the preview renders (and still writes)."""
    grids = []
    real_render_grid = augrun.commands.preview.render_grid

    def recording_render_grid(images, path, **kwargs):
        grids.append((images, kwargs["titles"]))
        return real_render_grid(images, path, **kwargs)
    monkeypatch.setattr(augrun.commands.preview, "render_grid", recording_render_grid)
    return grids


def test_dataset_grid_is_a_seeded_class_balanced_sample(in_tmp: Path, drawn):
    make_coloured_image_folder(in_tmp / "images")
    folder = ["dataset=imagefolder", "dataset.root=images", "show=dataset", "rows=2", "cols=3"]
    preview(*folder, "out=a.png")
    preview(*folder, "out=b.png")
    preview(*folder, "seed=1", "out=c.png")
    (images, titles), _, (other_images, _) = drawn
    assert sorted(titles) == sorted(FOLDER_CLASSES * 2)  # 6 cells, 3 classes: each class twice
    for image, title in zip(images, titles):
        red_label = round(float(image[0, 0, 0]) * 255 / 100)
        assert title == FOLDER_CLASSES[red_label]  # every title names its own image's class
    assert (in_tmp / "a.png").read_bytes() == (in_tmp / "b.png").read_bytes()
    assert not all(torch.equal(a, b) for a, b in zip(images, other_images))  # another seed, another sample


def test_class_balanced_sample_takes_turns_and_stops_at_count():
    labels = torch.tensor([0] * 5 + [1] * 2 + [2] * 3)
    chosen = augrun.commands.preview.class_balanced_sample(labels, 8, seed=0)
    taken = [int(labels[i]) for i in chosen]
    assert [sorted(taken[:3]), sorted(taken[3:6]), sorted(taken[6:])] == [[0, 1, 2], [0, 1, 2], [0, 2]]  # turns; class
    # 1 runs out after two
    assert len(set(chosen)) == 8
    assert augrun.commands.preview.class_balanced_sample(labels, 8, seed=0) == chosen


# --- integer epoch ticks ---------------------------------------------------------------------------------------------

def visible_ticks(ax) -> list[float]:
    """The x ticks matplotlib draws: the locator's, within the view limits."""
    low, high = sorted(ax.get_xlim())
    return [t for t in ax.xaxis.get_majorticklocs() if low - 1e-9 <= t <= high + 1e-9]


def assert_integer_epoch_ticks(ax) -> None:
    ticks = visible_ticks(ax)
    assert ticks and all(float(t).is_integer() for t in ticks), ticks


def epoch_rows(epochs: int) -> list[dict]:
    return [{"epoch": e, "train_loss": 2.0 / e, "train_acc": 0.5 + 0.1 * e, "test_acc": 0.4 + 0.1 * e}
            for e in range(1, epochs + 1)]


@pytest.mark.parametrize("epochs", [1, 3, 12])
def test_curves_have_integer_epoch_ticks(epochs: int):
    figure = curves_figure(epoch_rows(epochs), epochs=epochs)
    assert_integer_epoch_ticks(figure.axes[0])


@pytest.mark.parametrize("epochs", [1, 3])
def test_comparison_plot_has_integer_epoch_ticks(tmp_path: Path, epochs: int):
    runs = [RunResult(tmp_path / f"job{seed}", {"aug": "none"}, seed, "completed", epoch_rows(epochs), {}, None)
            for seed in range(2)]
    figure = render.comparison_figure(build_report(runs))
    for ax in figure.axes:
        assert_integer_epoch_ticks(ax)


def test_dataset_grid_of_a_streamed_photo_folder_shows_each_photo_at_its_own_shape(in_tmp: Path, drawn):
    shapes = {"cat": (300, 200), "dog": (200, 300), "eel": (250, 250)}  # (width, height)
    for split in ("train", "test"):
        for name, size in shapes.items():
            (in_tmp / "photos" / split / name).mkdir(parents=True)
            Image.new("RGB", size, (100, 100, 100)).save(in_tmp / "photos" / split / name / "0.jpg")
    preview("dataset=imagefolder", "dataset.root=photos", "dataset.storage=stream", "dataset.image_size=64",
            "show=dataset", "rows=1", "cols=3")
    [(images, titles)] = drawn
    assert sorted(titles) == sorted(shapes)
    for image, title in zip(images, titles):  # decoded from the file, not squashed to image_size
        assert tuple(image.shape) == (3, shapes[title][1], shapes[title][0])
