"""Photo folders: storage modes, decoding of every kind of file, the evaluation transform, streamed batches on both
backends (shapes, statistics, resume, worker count), the gpu backend's reordering of colour ops, the pre-check's
refusal, the Imagenette preset and the photo models. Every image is written by the test: small, several aspect ratios."""
from __future__ import annotations

import functools
import hashlib
import http.server
import tarfile
import threading
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from helpers import SMOKE, assert_user_error, refusal, run_augrun
from PIL import Image

from augrun.augment.ops import parse_train_pipeline
from augrun.config.schema import ModelConfig
from augrun.data.batches import BatchFinisher
from augrun.data.datasets import DataError, choose_storage, load_dataset
from augrun.data.photos import eval_transform, split_for_device
from augrun.data.splits import FileData
from augrun.data.streaming import StreamedImages, stream_sources
from augrun.errors import ConfigError
from augrun.models.networks import build_model

CPU = torch.device("cpu")
SIZE = 32
BOOK = {"RandomHorizontalFlip": {"p": 0.5}, "ColorJitter": {"brightness": 0.5, "contrast": 0.5, "saturation": 0.5,
                                                            "hue": 0.1},
        "RandomResizedCrop": {"size": SIZE, "scale": [0.1, 1.0], "ratio": [0.5, 2.0]}}


def smooth(height: int, width: int, seed: int) -> np.ndarray:
    """A photo-like RGB picture: smooth colour gradients, so that resizing and cropping change it gradually."""
    coarse = np.random.default_rng(seed).integers(0, 256, (3, 4, 3), dtype=np.uint8)
    return np.array(Image.fromarray(coarse).resize((width, height), Image.BICUBIC))


def write_photos(root: Path) -> dict[str, Path]:
    """train/ and test/ with two classes; sizes 90-600 px in five aspect ratios; RGB and CMYK JPEGs, grayscale,
    palette and RGBA PNGs, and a JPEG whose EXIF orientation says "rotate" (as phones write them)."""
    special = {}
    shapes = [(90, 120), (160, 90), (300, 600), (150, 150), (120, 100), (96, 128)]
    for split, count in (("train", 6), ("test", 3)):
        for label, name in enumerate(("cat", "dog")):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                height, width = shapes[(i + label) % len(shapes)]
                pixels = smooth(height, width, seed=100 * len(split) + 10 * label + i)
                image, suffix = [(Image.fromarray(pixels), ".jpg"), (Image.fromarray(pixels).convert("L"), ".png"),
                                 (Image.fromarray(pixels).convert("RGBA"), ".png"),
                                 (Image.fromarray(pixels).convert("CMYK"), ".jpg"),
                                 (Image.fromarray(pixels).convert("P"), ".png"), (Image.fromarray(pixels), ".png")][i]
                image.save(folder / f"{i}{suffix}")
    upright = smooth(90, 160, seed=7)
    upright[:30, :40] = (255, 0, 0)  # a red top-left corner, to see the orientation
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to display": the pixels are stored turned the other way
    Image.fromarray(np.rot90(upright, k=1).copy()).save(root / "train" / "dog" / "9_exif.jpg", exif=exif, quality=95)
    special["exif"] = root / "train" / "dog" / "9_exif.jpg"
    return special


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("photos")
    write_photos(root)
    return root


def streamed(root: Path, **kwargs):
    return load_dataset("imagefolder", str(root), image_size=SIZE, storage="stream", **kwargs)


# --- storage ---------------------------------------------------------------------------------------------------------

def test_both_storage_modes_hold_the_same_files_and_auto_says_what_it_chose(photos: Path, tmp_path: Path):
    memory = load_dataset("imagefolder", str(photos), image_size=SIZE, storage="memory", cache_dir=str(tmp_path))
    files = streamed(photos)
    assert memory.train.images.shape == (13, 3, SIZE, SIZE) and not memory.streamed
    assert isinstance(files.train, FileData) and files.streamed and files.image_size == SIZE and files.channels == 3
    for a, b in ((memory.train, files.train), (memory.test, files.test)):
        assert torch.equal(a.labels, b.labels) and a.classes == b.classes == ["cat", "dog"]
    assert len(list(tmp_path.rglob("*.pt"))) == 2 and not list(photos.rglob("*.pt"))  # cached outside the folder
    auto = load_dataset("imagefolder", str(photos), image_size=SIZE)  # photos of 90-600 px for 32 px: stream
    said = choose_storage("imagefolder", str(photos), storage="auto", image_size=SIZE, memory_limit_gb=4.0,
                          train_size=None, test_size=None).note  # what the run prints
    assert auto.streamed and said.startswith("dataset.storage=auto chose stream: sampled images have sides")
    near = load_dataset("imagefolder", str(photos), image_size=200, memory_limit_gb=1e-9)  # over the limit: stream
    said = choose_storage("imagefolder", str(photos), storage="auto", image_size=200, memory_limit_gb=1e-9,
                          train_size=None, test_size=None).note
    assert near.streamed and "over dataset.memory_limit_gb=1e-09" in said


def test_every_kind_of_file_decodes_to_upright_rgb(photos: Path):
    files = streamed(photos).train
    gray = files.images[files.paths.index(photos / "train" / "cat" / "1.png")]
    assert gray.shape[0] == 3 and torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])
    rotated = files.images[files.paths.index(photos / "train" / "dog" / "9_exif.jpg")]
    assert rotated.shape == (3, 90, 160)  # EXIF applied: stored 160 high, shown 90 high
    assert rotated[0, :20, :30].float().mean() > 200 and rotated[1, :20, :30].float().mean() < 60  # red top-left


def test_the_evaluation_transform_is_torchvisions_resize_and_centre_crop_exactly(photos: Path):
    test = streamed(photos).test
    ours = StreamedImages(test, eval_transform(SIZE, 0.875), seed=0)
    theirs = torchvision.transforms.Compose([torchvision.transforms.Resize(int(SIZE / 0.875)),
                                             torchvision.transforms.CenterCrop(SIZE), torchvision.transforms.PILToTensor()])
    for index, path in enumerate(test.paths):
        image, label = ours[(1, index)]
        assert image.dtype == torch.uint8 and image.shape == (3, SIZE, SIZE)
        assert torch.equal(image, theirs(torchvision.datasets.folder.default_loader(str(path)))), path


# --- streamed batches ------------------------------------------------------------------------------------------------

def sources(data, backend: str, ops=BOOK, *, workers: int = 0, batch_size: int = 4, seed: int = 0):
    specs = parse_train_pipeline(ops)
    return stream_sources(data.train, data.test, backend=backend, train_ops=specs, mean=None, std=None,
                          finish_train=BatchFinisher(device=CPU, mean=None, std=None),
                          finish_test=BatchFinisher(device=CPU, mean=None, std=None), eval_resize_ratio=0.875,
                          workers=workers, drop_last=False, batch_size=batch_size, seed=seed, rank=0, world_size=1)


@pytest.mark.parametrize("backend", ["cpu", "gpu"])
def test_streamed_batches_have_the_image_size_and_resume_mid_epoch_exactly(photos: Path, backend: str):
    train, test = sources(streamed(photos), backend)
    whole = list(train.epoch(2))
    assert [tuple(images.shape) for images, _ in whole] == [(4, 3, SIZE, SIZE)] * 3 + [(1, 3, SIZE, SIZE)]
    assert all(images.dtype == torch.float32 and 0 <= images.min() and images.max() <= 1 for images, _ in whole)
    resumed = list(train.epoch(2, start_step=2))
    assert all(torch.equal(a, b) and torch.equal(x, y) for (a, x), (b, y) in zip(resumed, whole[2:], strict=True))
    assert not torch.equal(whole[0][0], next(iter(train.epoch(3)))[0])  # another epoch, other draws
    assert sum(len(labels) for _, labels in test.epoch(1)) == 6


def test_streamed_batches_do_not_depend_on_the_worker_count(photos: Path):
    data = streamed(photos)
    alone = list(sources(data, "gpu")[0].epoch(1))
    workers = list(sources(data, "gpu", workers=2)[0].epoch(1))  # real worker processes
    assert all(torch.equal(a, b) and torch.equal(x, y) for (a, x), (b, y) in zip(alone, workers, strict=True))


def test_streamed_backends_draw_from_the_same_distributions(photos: Path):
    """Mean and spread of the book's pipeline's pixels over several epochs: the cpu backend (colour at full size, then
    the crop) and the gpu backend (the crop in the workers, flip and colour on the batch) agree."""
    data = streamed(photos)
    stats = {}
    for backend in ("cpu", "gpu"):
        train = sources(data, backend, batch_size=13)[0]
        pixels = torch.cat([images for epoch in range(1, 9) for images, _ in train.epoch(epoch)])
        stats[backend] = (pixels.mean().item(), pixels.std().item(), pixels.mean((1, 2, 3)).std().item())
    for cpu, gpu in zip(stats["cpu"], stats["gpu"]):
        assert abs(cpu - gpu) < 0.04, stats


def test_a_bad_file_found_by_a_worker_is_one_data_error_naming_it(photos: Path, tmp_path: Path):
    data = streamed(photos)
    bad = tmp_path / "gone.jpg"
    broken = FileData([bad] * 2, data.train.labels[:2], data.train.classes, SIZE)
    train, _ = sources(type(data)(broken, data.test), "cpu", batch_size=2)
    with pytest.raises(DataError) as error:
        list(train.epoch(1))
    assert str(error.value).startswith(f"dataset.root: cannot decode {bad}") and "\n" not in str(error.value)


# --- the gpu backend's split -----------------------------------------------------------------------------------------

def test_the_gpu_backend_moves_flips_and_colour_after_the_leading_crop():
    specs = parse_train_pipeline({**BOOK, "RandomErasing": {}})
    workers, device = split_for_device(specs)
    assert [s.name for s in workers] == ["RandomResizedCrop"]
    assert [s.name for s in device] == ["RandomHorizontalFlip", "ColorJitter", "RandomErasing"]
    resize_crop = parse_train_pipeline({"Resize": {"size": 40}, "RandomCrop": {"size": SIZE},
                                        "RandomHorizontalFlip": {}})
    assert [[s.name for s in part] for part in split_for_device(resize_crop)] == \
        [["Resize", "RandomCrop"], ["RandomHorizontalFlip"]]


def test_which_colour_ops_commute_with_the_crop():
    """Colour then crop + resize vs crop + resize then colour, same factors, on a photo-like float image: brightness
    and saturation agree to float rounding (without clamping), hue closely, contrast not (it blends with the mean of
    the image it sees). The numbers README.md quotes."""
    from torchvision.transforms.v2 import functional as F
    photo = torch.from_numpy(smooth(300, 400, seed=3)).permute(2, 0, 1).float() / 255
    # a crop off to one side, so that its mean differs from the photo's
    crop = functools.partial(F.resized_crop, top=20, left=10, height=150, width=180, size=[SIZE, SIZE], antialias=True)
    gap = {name: (crop(adjust(photo, factor)) - adjust(crop(photo), factor)).abs().max().item()
           for name, adjust, factor in (("brightness", F.adjust_brightness, 0.7), ("saturation", F.adjust_saturation, 0.6),
                                        ("hue", F.adjust_hue, 0.1), ("contrast", F.adjust_contrast, 0.5))}
    flipped = (F.horizontal_flip(crop(photo)) - F.resized_crop(F.horizontal_flip(photo), 20, 400 - 10 - 180, 150, 180,
                                                                [SIZE, SIZE], antialias=True)).abs().max().item()
    assert flipped < 1e-6  # a flip commutes with the mirrored crop, drawn as likely: the same law
    assert gap["brightness"] < 1e-5 and gap["saturation"] < 1e-5
    assert gap["hue"] < 0.05
    assert gap["contrast"] > 0.01


# --- pre-check ------------------------------------------------------------------------------------------------------

def test_the_pre_check_refuses_a_streamed_pipeline_that_leaves_sizes_unequal_with_the_fix(photos: Path, in_workdir):
    common = [*SMOKE, "dataset=imagefolder", f"dataset.root={photos}", "dataset.storage=stream",
              f"dataset.image_size={SIZE}"]
    message = refusal(*common, "aug=flip_only")
    assert message.startswith(f"aug.train: dataset.storage=stream: photos of their own sizes must come out of the "
                              f"train pipeline as dataset.image_size ({SIZE}x{SIZE})")
    assert message.endswith(f"valid: +aug.train.RandomResizedCrop.size={SIZE}, or +aug.train.Resize.size={SIZE} "
                            f"+aug.train.RandomCrop.size={SIZE}")
    assert refusal(*common, "aug=crop", "aug.train.RandomResizedCrop.size=24").endswith(
        f"valid: aug.train.RandomResizedCrop.size={SIZE}")


def test_training_on_streamed_photos_then_the_refusal_exits_2(photos: Path, tmp_path: Path):
    common = [*SMOKE, "dataset=imagefolder", f"dataset.root={photos}", f"dataset.image_size={SIZE}", "model.width=4",
              "trainer.batch_size=4"]
    result = run_augrun("train", *common, "aug=flip_color_crop", f"aug.train.RandomResizedCrop.size={SIZE}",
                        "aug.backend=gpu", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "dataset.storage=auto chose stream" in result.stderr and "test acc" in result.stdout
    assert_user_error(run_augrun("train", *common, "aug=none", cwd=tmp_path), "aug.train: dataset.storage=stream")


# --- Imagenette ------------------------------------------------------------------------------------------------------

@pytest.fixture
def imagenette_server(tmp_path: Path, monkeypatch):
    """imagenette2-160.tgz in the published layout (train/ and val/ of WordNet-id folders of JPEGs), served by a real
    local HTTP server, with torchvision's URL and MD5 pointed at it."""
    made = tmp_path / "made" / "imagenette2-160"
    for split in ("train", "val"):
        for wnid in ("n01440764", "n02102040"):
            (made / split / wnid).mkdir(parents=True)
            for i in range(2):
                Image.fromarray(smooth(120, 160, seed=i)).save(made / split / wnid / f"{wnid}_{i}.JPEG")
    served = tmp_path / "server"
    served.mkdir()
    with tarfile.open(served / "imagenette2-160.tgz", "w:gz") as tar:
        tar.add(made, arcname=made.name)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *args: None
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.server_address[1]}/imagenette2-160.tgz"
        md5 = hashlib.md5((served / "imagenette2-160.tgz").read_bytes()).hexdigest()
        monkeypatch.setitem(torchvision.datasets.Imagenette._ARCHIVES, "160px", (url, md5))
        yield url
        server.shutdown()


def test_imagenette_is_downloaded_checked_extracted_and_streamed(imagenette_server, tmp_path: Path, monkeypatch):
    splits = load_dataset("imagenette", str(tmp_path / "data"), image_size=SIZE)
    assert splits.streamed and len(splits.train) == 4 and len(splits.test) == 4
    assert splits.train.classes == ["tench", "English springer"]
    url = imagenette_server
    monkeypatch.setitem(torchvision.datasets.Imagenette._ARCHIVES, "160px", (url, "0" * 32))  # a damaged download
    with pytest.raises(DataError) as error:
        load_dataset("imagenette", str(tmp_path / "other"), image_size=SIZE + 1)
    assert str(error.value).startswith("dataset.root: ") and url in str(error.value) and "\n" not in str(error.value)


# --- models -----------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, width", [("resnet18", 4), ("small_cnn", 4), ("resnet18_imagenet", 64)])
def test_photo_models_run_at_64_to_224_pixels(name: str, width: int):
    net = build_model(ModelConfig(name, width=width), in_channels=3, num_classes=5, image_size=64).eval()
    with torch.no_grad():
        assert [tuple(net(torch.rand(1, 3, side, side)).shape) for side in (64, 224)] == [(1, 5)] * 2


def test_pretrained_weights_offline_are_one_line_naming_model_pretrained(monkeypatch, tmp_path):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty hub cache: the weights must be downloaded
    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(ConfigError) as error:
        build_model(ModelConfig("resnet18_imagenet", pretrained=True), in_channels=3, num_classes=10, image_size=32)
    assert str(error.value).startswith("model.pretrained: true, but torchvision's ResNet18_Weights.IMAGENET1K_V1 "
                                       "could not be loaded (") and "model.pretrained=false" in str(error.value)
    with pytest.raises(ConfigError, match="^model.pretrained: true, but small_cnn has no pretrained weights"):
        build_model(ModelConfig("small_cnn", width=8, pretrained=True), in_channels=3, num_classes=10, image_size=32)


@pytest.mark.parametrize("override, expected", [
    ("dataset.storage=disk", "dataset.storage: got 'disk'; valid: auto, memory, stream"),
    ("dataset.eval_resize_ratio=1.5", "dataset.eval_resize_ratio: got 1.5; valid: 0 < ratio <= 1"),
    ("dataset.memory_limit_gb=0", "dataset.memory_limit_gb: got 0.0; valid: a number of GB > 0"),
    ("dataset.storage=stream", "dataset.storage: got stream for dataset=synthetic"),
    ("model=resnet18_imagenet model.width=8", "model.width: got 8; valid: 64"),
])
def test_bad_photo_settings_are_one_line_naming_the_key(override: str, expected: str, in_workdir):
    assert refusal(*SMOKE, *override.split()).startswith(expected)
