"""Dataset loading: CIFAR pickles, image folders and their cache, subsets and synthetic data.

Every fixture is written by the test itself into tmp_path, in the on-disk format the real datasets use, so nothing
here reads the network or a shared data folder.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import os
import pickle
import shutil
import signal
import tarfile
import threading
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import augrun.data.folders as folders_module
from augrun.data.datasets import (
    DataError,
    DataSplits,
    ImageData,
    cifar_class,
    load_cifar,
    load_dataset,
    make_synthetic,
    subset,
)
from augrun.data.folders import load_image_folder
from augrun.errors import ConfigError

# --- helpers: CIFAR ------------------------------------------------------------------------------------------------


def cifar_row(image: np.ndarray) -> np.ndarray:
    """One CIFAR row from a (3, 32, 32) image, as the dataset's page describes it: the 1024 red values of the
    32x32 image row by row, then the 1024 green, then the 1024 blue. Spelled out per channel on purpose, so the
    test does not share the loader's reshape."""
    return np.concatenate([image[0].flatten(), image[1].flatten(), image[2].flatten()])


def random_images(count: int, seed: int) -> np.ndarray:
    """Random uint8 images (N, 3, 32, 32): every pixel differs, so any transpose or channel swap shows."""
    return np.random.default_rng(seed).integers(0, 256, size=(count, 3, 32, 32), dtype=np.uint8)


def write_pickle(path: Path, obj: object) -> None:
    # Protocol 2 with str keys and a uint8 array: what the Python 2 originals give under encoding="latin1".
    with open(path, "wb") as file:
        pickle.dump(obj, file, protocol=2)


def write_cifar_batch(path: Path, images: np.ndarray, labels: list[int], label_key: str, **extra) -> None:
    write_pickle(path, {
        "batch_label": f"batch {path.name}",
        label_key: list(labels),
        "data": np.stack([cifar_row(im) for im in images]),
        "filenames": [f"img_{i}.png" for i in range(len(labels))],
        **extra,
    })


def publish(monkeypatch, name: str, folder: Path) -> None:
    """Make the files this test wrote the published ones. torchvision's class checks every file's MD5 against the
    official values before it unpickles anything, so the test sets those values to its own files' (the check runs)."""
    dataset = cifar_class(name)

    def md5(filename: str) -> str:
        return hashlib.md5((folder / filename).read_bytes()).hexdigest()

    monkeypatch.setattr(dataset, "train_list", [[f, md5(f)] for f, _ in dataset.train_list])
    monkeypatch.setattr(dataset, "test_list", [[f, md5(f)] for f, _ in dataset.test_list])
    monkeypatch.setattr(dataset, "meta", {**dataset.meta, "md5": md5(dataset.meta["filename"])})


def write_cifar10(root: Path, monkeypatch, per_batch: int = 4, test_count: int = 6) -> dict:
    """cifar-10-batches-py/ with 5 train batches, a test batch and batches.meta; returns what was written.

    Batch b's labels start at 3b mod 10 and its images come from seed b, so a loader that reorders or skips
    batches gives different tensors."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    classes = [f"c10_{i}" for i in range(10)]
    write_pickle(folder / "batches.meta", {"label_names": classes, "num_cases_per_batch": per_batch, "num_vis": 3072})
    train_images, train_labels = [], []
    for b in range(1, 6):
        images = random_images(per_batch, seed=b)
        labels = [(b * 3 + i) % 10 for i in range(per_batch)]
        write_cifar_batch(folder / f"data_batch_{b}", images, labels, "labels")
        train_images.append(images)
        train_labels += labels
    test_images = random_images(test_count, seed=100)
    test_labels = [(9 - i) % 10 for i in range(test_count)]
    write_cifar_batch(folder / "test_batch", test_images, test_labels, "labels")
    publish(monkeypatch, "cifar10", folder)
    return dict(folder=folder, classes=classes, train_images=np.concatenate(train_images), train_labels=train_labels,
                test_images=test_images, test_labels=test_labels)


def write_cifar100(root: Path, monkeypatch, train_count: int = 12, test_count: int = 5) -> dict:
    """cifar-100-python/ with train, test and meta; coarse labels differ from fine ones, so using them shows."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    classes = [f"fine_{i:02d}" for i in range(100)]
    write_pickle(folder / "meta", {"fine_label_names": classes, "coarse_label_names": [f"coarse_{i}" for i in range(20)]})
    train_images, test_images = random_images(train_count, seed=7), random_images(test_count, seed=8)
    train_labels = [(i * 37) % 100 for i in range(train_count)]
    test_labels = [(i * 13 + 50) % 100 for i in range(test_count)]
    for name, images, labels in (("train", train_images, train_labels), ("test", test_images, test_labels)):
        write_cifar_batch(folder / name, images, labels, "fine_labels", coarse_labels=[(x + 1) % 20 for x in labels])
    publish(monkeypatch, "cifar100", folder)
    return dict(folder=folder, classes=classes, train_images=train_images, train_labels=train_labels,
                test_images=test_images, test_labels=test_labels)


def assert_one_line_naming(error: pytest.ExceptionInfo, *names: object) -> str:
    """User errors are printed as one line that says which path is at fault."""
    message = str(error.value)
    assert "\n" not in message, message
    for name in names:
        assert str(name) in message, f"{name} not in: {message}"
    return message


# --- CIFAR-10 ------------------------------------------------------------------------------------------------------


def test_cifar10_shapes_dtypes_and_classes(tmp_path, monkeypatch):
    written = write_cifar10(tmp_path, monkeypatch)
    splits = load_dataset("cifar10", str(tmp_path), download=False)
    assert isinstance(splits, DataSplits)
    assert splits.train.images.shape == (20, 3, 32, 32) and splits.train.images.dtype == torch.uint8
    assert splits.test.images.shape == (6, 3, 32, 32)
    assert splits.train.labels.dtype == torch.int64 and splits.train.labels.shape == (20,)
    assert splits.train.classes == written["classes"] == splits.test.classes
    assert (splits.num_classes, splits.channels, splits.image_size) == (10, 3, 32)


def test_cifar10_pixels_round_trip_exactly(tmp_path, monkeypatch):
    written = write_cifar10(tmp_path, monkeypatch)
    splits = load_cifar(tmp_path, "cifar10", download=False)
    assert torch.equal(splits.train.images, torch.from_numpy(written["train_images"]))
    assert torch.equal(splits.test.images, torch.from_numpy(written["test_images"]))
    # Spot checks straight from the row layout, at points where y != x and c != 0, to pin the index arithmetic.
    row = cifar_row(written["test_images"][3])
    for c, y, x in ((0, 0, 1), (1, 5, 30), (2, 31, 2), (2, 17, 9)):
        assert splits.test.images[3, c, y, x].item() == row[c * 1024 + y * 32 + x]


def test_cifar10_labels_follow_batch_order(tmp_path, monkeypatch):
    written = write_cifar10(tmp_path, monkeypatch)
    splits = load_cifar(tmp_path, "cifar10", download=False)
    # data_batch_1 first, then 2..5: the images of batch b sit at [4(b-1), 4b)
    assert splits.train.labels.tolist() == written["train_labels"]
    for b in range(1, 6):
        assert torch.equal(splits.train.images[4 * (b - 1):4 * b], torch.from_numpy(random_images(4, seed=b)))
    assert splits.test.labels.tolist() == written["test_labels"]


def test_cifar10_train_and_test_size_take_subsets(tmp_path, monkeypatch):
    write_cifar10(tmp_path, monkeypatch)
    full = load_cifar(tmp_path, "cifar10", download=False)
    splits = load_dataset("cifar10", str(tmp_path), download=False, train_size=10, test_size=3)
    assert len(splits.train) == 10 and len(splits.test) == 3
    # the same seeded subset that subset() takes, so runs with different seeds see the same images
    assert torch.equal(splits.train.images, subset(full.train, 10).images)
    assert torch.equal(splits.test.labels, subset(full.test, 3).labels)
    assert_is_subset(splits.train, full.train)


# --- CIFAR-100 -----------------------------------------------------------------------------------------------------


def test_cifar100_reads_fine_labels_and_pixels(tmp_path, monkeypatch):
    written = write_cifar100(tmp_path, monkeypatch)
    splits = load_dataset("cifar100", str(tmp_path), download=False)
    assert splits.num_classes == 100 and splits.train.classes == written["classes"]
    assert splits.train.labels.tolist() == written["train_labels"]  # fine, not coarse
    assert splits.test.labels.tolist() == written["test_labels"]
    assert torch.equal(splits.train.images, torch.from_numpy(written["train_images"]))
    assert torch.equal(splits.test.images, torch.from_numpy(written["test_images"]))


def test_cifar100_subsets(tmp_path, monkeypatch):
    write_cifar100(tmp_path, monkeypatch)
    splits = load_dataset("cifar100", str(tmp_path), download=False, train_size=5, test_size=2)
    assert (len(splits.train), len(splits.test)) == (5, 2)


# --- CIFAR errors --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, folder", [("cifar10", "cifar-10-batches-py"), ("cifar100", "cifar-100-python")])
def test_missing_cifar_without_download_names_folder_and_remedy(tmp_path, name, folder):
    with pytest.raises(DataError) as error:
        load_dataset(name, str(tmp_path), download=False)
    message = assert_one_line_naming(error, tmp_path / folder)
    assert "download" in message and "https://www.cs.toronto.edu/" in message  # says how to supply it


def test_cifar_with_one_batch_missing_is_reported_not_half_loaded(tmp_path, monkeypatch):
    written = write_cifar10(tmp_path, monkeypatch)
    (written["folder"] / "data_batch_3").unlink()
    with pytest.raises(DataError) as error:
        load_dataset("cifar10", str(tmp_path), download=False)
    assert_one_line_naming(error, written["folder"] / "data_batch_3", "not found", "dataset.download=false")


def truncated_pickle(path: Path) -> bytes:
    return path.read_bytes()[: path.stat().st_size // 2]  # an interrupted download or copy


def code_running_pickle(path: Path) -> bytes:
    class Payload:  # unpickling this would create a file: it must never be unpickled
        def __reduce__(self):
            return (Path.touch, (path.parent / "payload-ran",))
    return pickle.dumps(Payload())


@pytest.mark.parametrize("corrupt", [
    pytest.param(truncated_pickle, id="truncated"),
    pytest.param(lambda path: b"", id="empty"),
    pytest.param(lambda path: b"<!DOCTYPE html><html>404</html>", id="html-page"),
    pytest.param(lambda path: b"File not found\n", id="text-starting-with-an-opcode"),
    pytest.param(lambda path: b"\x00" * 64, id="zeros"),
    pytest.param(code_running_pickle, id="code-running-pickle"),
])
def test_damaged_cifar_file_is_named_and_never_unpickled(tmp_path, monkeypatch, corrupt):
    written = write_cifar10(tmp_path, monkeypatch)
    path = written["folder"] / "test_batch"
    path.write_bytes(corrupt(path))
    with pytest.raises(DataError) as error:
        load_dataset("cifar10", str(tmp_path), download=False)
    assert_one_line_naming(error, path, "is damaged")
    assert not (path.parent / "payload-ran").exists()


@pytest.fixture
def web_server(tmp_path):
    """A real HTTP server on localhost serving tmp_path/server: the download goes through torchvision's own code."""
    served = tmp_path / "server"
    served.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *args: None
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        yield served, f"http://127.0.0.1:{server.server_address[1]}"
        server.shutdown()


def pack_cifar10(tmp_path: Path, monkeypatch, web_server) -> tuple[dict, Path, str]:
    """The test's CIFAR-10 as the published archive (cifar-10-python.tar.gz), on the test's web server."""
    written = write_cifar10(tmp_path / "made", monkeypatch)
    served, address = web_server
    archive = served / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(written["folder"], arcname=written["folder"].name)
    dataset = cifar_class("cifar10")
    monkeypatch.setattr(dataset, "url", f"{address}/{archive.name}")
    monkeypatch.setattr(dataset, "tgz_md5", hashlib.md5(archive.read_bytes()).hexdigest())
    return written, archive, dataset.url


def test_cifar10_downloads_checks_and_extracts_the_archive(tmp_path, monkeypatch, web_server):
    written, _, _ = pack_cifar10(tmp_path, monkeypatch, web_server)
    root = tmp_path / "data"
    splits = load_dataset("cifar10", str(root), download=True)
    assert torch.equal(splits.train.images, torch.from_numpy(written["train_images"]))
    assert splits.test.labels.tolist() == written["test_labels"]
    # a file damaged later is restored from the archive already there (its MD5 checked again), not half-loaded
    (root / "cifar-10-batches-py" / "data_batch_2").write_bytes(b"")
    again = load_dataset("cifar10", str(root), download=True)
    assert torch.equal(again.train.images, splits.train.images)


def test_cifar10_download_of_a_wrong_archive_is_one_line(tmp_path, monkeypatch, web_server):
    _, archive, url = pack_cifar10(tmp_path, monkeypatch, web_server)
    archive.write_bytes(archive.read_bytes()[:100])  # a cut-off download: its MD5 differs
    with pytest.raises(DataError) as error:
        load_dataset("cifar10", str(tmp_path / "data"), download=True)
    assert_one_line_naming(error, tmp_path / "data" / "cifar-10-batches-py", "download failed", url)
    archive.unlink()  # and a server that answers 404
    with pytest.raises(DataError) as error:
        load_dataset("cifar10", str(tmp_path / "elsewhere"), download=True)
    assert_one_line_naming(error, "download failed", "404")


def test_unknown_dataset_lists_valid_names(tmp_path):
    with pytest.raises(ConfigError) as error:
        load_dataset("mnist", str(tmp_path))
    assert_one_line_naming(error, "mnist", "cifar10", "imagefolder", "synthetic")


def test_missing_fashion_mnist_without_download(tmp_path):
    with pytest.raises(DataError) as error:
        load_dataset("fashion_mnist", str(tmp_path), download=False)
    assert_one_line_naming(error, tmp_path / "FashionMNIST" / "raw")


# --- helpers: image folders ----------------------------------------------------------------------------------------

# Created in this (unsorted) order; the loader must sort them: bird=0, cat=1, dog=2.
CLASSES = ["dog", "cat", "bird"]
COLORS = {"dog": (200, 10, 30), "cat": (20, 180, 60), "bird": (40, 70, 220)}


def pattern(seed: int, size: tuple[int, int] = (32, 32)) -> np.ndarray:
    """An (H, W, 3) uint8 image with every pixel random: PNG keeps it exactly."""
    return np.random.default_rng(seed).integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)


def write_image(path: Path, array: np.ndarray, **save_args) -> Path:
    # PNGs are stored uncompressed, so two PNGs of one size have one byte size: then only the mtime tells a changed
    # file from the original, which is what the cache test needs to check.
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".png":
        save_args.setdefault("compress_level", 0)
    Image.fromarray(array).save(path, **save_args)
    return path


def write_image_folder(root: Path) -> dict[str, dict[str, list[np.ndarray]]]:
    """root/{train,test}/<class>/: per class two random PNGs; train/cat also gets a flat-colour JPEG and a flat
    40x24 PNG that must be resized to 32x32. Returns the expected (H, W, 3) arrays per split and class, in file-name
    order, with None for the JPEG (checked approximately)."""
    expected: dict[str, dict[str, list]] = {"train": {}, "test": {}}
    seed = 0
    for split in ("train", "test"):
        for c in CLASSES:
            arrays = []
            for i in range(2):
                seed += 1
                write_image(root / split / c / f"{i}.png", pattern(seed))
                arrays.append(pattern(seed))
            expected[split][c] = arrays
    flat = np.full((32, 32, 3), COLORS["cat"], dtype=np.uint8)
    write_image(root / "train" / "cat" / "2.jpg", flat, quality=95)
    write_image(root / "train" / "cat" / "3.png", np.full((24, 40, 3), COLORS["cat"], dtype=np.uint8))
    # resizing a flat colour gives the same flat colour, whatever the filter
    expected["train"]["cat"] += [None, flat]
    return expected


def expected_tensor(expected: dict[str, list], classes: list[str]) -> tuple[list, list[int]]:
    arrays, labels = [], []
    for label, c in enumerate(classes):
        arrays += expected[c]
        labels += [label] * len(expected[c])
    return arrays, labels


def count_decodes(monkeypatch) -> list:
    """Wraps augrun.data.folders._decode to record each call's file names, so a test sees when the cache is bypassed."""
    calls = []
    real = folders_module._decode

    def recording(files, image_size):
        calls.append(sorted(p.name for paths in files.values() for p in paths))
        return real(files, image_size)

    monkeypatch.setattr(folders_module, "_decode", recording)
    return calls


def forbid_decoding(monkeypatch) -> None:
    def fail(files, image_size):
        raise AssertionError("decoded again although the cache is valid")

    monkeypatch.setattr(folders_module, "_decode", fail)


def cache_folder(root: Path) -> Path:
    """Where a folder's decoded copy is cached: under $XDG_CACHE_HOME/augrun (conftest points it at the session's)."""
    return folders_module._cache_folder(root, None)


def cache_files(root: Path, split: str = "train") -> list[Path]:
    return sorted(cache_folder(root).glob(f"{split}-*.pt"))


# --- image folders: contents ---------------------------------------------------------------------------------------


def test_image_folder_classes_sorted_and_labels_are_class_indices(tmp_path):
    write_image_folder(tmp_path)
    splits = load_dataset("imagefolder", str(tmp_path), image_size=32)
    assert splits.train.classes == ["bird", "cat", "dog"] == splits.test.classes
    assert splits.train.labels.tolist() == [0, 0, 1, 1, 1, 1, 2, 2]
    assert splits.test.labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert splits.train.labels.dtype == torch.int64
    assert splits.train.images.shape == (8, 3, 32, 32) and splits.train.images.dtype == torch.uint8


def test_image_folder_png_pixels_exact_and_jpeg_close(tmp_path):
    expected = write_image_folder(tmp_path)
    splits = load_image_folder(tmp_path, image_size=32)
    for split, data in (("train", splits.train), ("test", splits.test)):
        arrays, _ = expected_tensor(expected[split], data.classes)
        for i, array in enumerate(arrays):
            got = data.images[i].permute(1, 2, 0).numpy()  # back to (H, W, 3)
            if array is None:  # the JPEG: lossy, but a flat colour survives within a few levels
                diff = np.abs(got.astype(int) - np.array(COLORS["cat"]))
                assert diff.max() <= 6, diff.max()
            else:
                assert np.array_equal(got, array), f"{split} image {i}"


def test_image_folder_resizes_to_image_size(tmp_path):
    write_image_folder(tmp_path)
    splits = load_dataset("imagefolder", str(tmp_path), image_size=16, storage="memory")
    assert splits.train.images.shape == (8, 3, 16, 16) and splits.image_size == 16
    # train/cat/3.png is 40x24: resized, its flat colour is unchanged
    assert torch.equal(splits.train.images[5], torch.tensor(COLORS["cat"], dtype=torch.uint8).view(3, 1, 1).expand(3, 16, 16))


def test_image_folder_resize_keeps_orientation(tmp_path):
    # A 40x24 image, left half one colour, right half black: after resizing to 16x16 the left columns keep the
    # colour and the right ones stay black (the middle columns blend), so a transpose or rotation would show.
    write_image_folder(tmp_path)
    two_tone = np.zeros((24, 40, 3), dtype=np.uint8)
    two_tone[:, :20] = COLORS["dog"]
    write_image(tmp_path / "train" / "dog" / "2.png", two_tone)
    image = load_image_folder(tmp_path, image_size=16).train.images[-1]
    colour = torch.tensor(COLORS["dog"], dtype=torch.uint8).view(3, 1, 1)
    assert torch.equal(image[:, :, :6], colour.expand(3, 16, 6))
    assert torch.equal(image[:, :, 10:], torch.zeros(3, 16, 6, dtype=torch.uint8))


def test_image_folder_grayscale_and_rgba_become_rgb(tmp_path):
    write_image_folder(tmp_path)
    gray = np.arange(32 * 32, dtype=np.uint8).reshape(32, 32)
    write_image(tmp_path / "test" / "dog" / "9_gray.png", gray)
    rgba = np.dstack([pattern(99), np.full((32, 32), 128, dtype=np.uint8)])
    write_image(tmp_path / "test" / "dog" / "9_rgba.png", rgba)
    test = load_image_folder(tmp_path, image_size=32).test
    assert test.images.shape == (8, 3, 32, 32)
    assert all(torch.equal(test.images[6, c], torch.from_numpy(gray)) for c in range(3))
    assert torch.equal(test.images[7], torch.from_numpy(pattern(99)).permute(2, 0, 1))


def test_image_folder_subsets(tmp_path):
    write_image_folder(tmp_path)
    splits = load_dataset("imagefolder", str(tmp_path), train_size=3, test_size=3)
    # one image of each class: the subset is class-balanced
    assert sorted(splits.train.labels.tolist()) == [0, 1, 2] == sorted(splits.test.labels.tolist())


# --- image folders: cache ------------------------------------------------------------------------------------------


def test_first_load_writes_cache_and_second_reuses_it(tmp_path, monkeypatch):
    write_image_folder(tmp_path)
    first = load_image_folder(tmp_path, image_size=32)
    assert len(cache_files(tmp_path, "train")) == 1 and len(cache_files(tmp_path, "test")) == 1
    assert not list(cache_folder(tmp_path).glob("*.tmp"))  # written atomically, no leftovers
    forbid_decoding(monkeypatch)  # proof of reuse: the second load may not decode anything
    second = load_image_folder(tmp_path, image_size=32)
    for a, b in ((first.train, second.train), (first.test, second.test)):
        assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels) and a.classes == b.classes
        assert b.images.dtype == torch.uint8 and b.labels.dtype == torch.int64


def test_the_cache_is_never_written_into_the_users_folder_and_dataset_cache_dir_moves_it(tmp_path):
    images = tmp_path / "images"
    write_image_folder(images)
    before = sorted(p.relative_to(images) for p in images.rglob("*"))
    load_image_folder(images, image_size=32)
    elsewhere = tmp_path / "elsewhere"
    load_dataset("imagefolder", str(images), image_size=8, storage="memory", cache_dir=str(elsewhere))
    assert sorted(p.relative_to(images) for p in images.rglob("*")) == before
    assert len(cache_files(images)) == 1
    assert [p.name.split("-")[:2] for p in sorted(elsewhere.rglob("*.pt"))] == [["test", "8"], ["train", "8"]]


def test_cache_is_per_image_size(tmp_path, monkeypatch):
    write_image_folder(tmp_path)
    load_image_folder(tmp_path, image_size=32)
    calls = count_decodes(monkeypatch)
    assert load_image_folder(tmp_path, image_size=16).train.images.shape[-1] == 16
    assert len(calls) == 2  # a 32-pixel cache is no answer for 16 pixels


def _change(root: Path) -> None:
    path = root / "train" / "bird" / "0.png"
    size = path.stat().st_size
    write_image(path, np.zeros((32, 32, 3), dtype=np.uint8))
    stat = path.stat()
    assert stat.st_size == size  # same byte size: the cache must notice the new mtime
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))  # as a later edit would


def _add(root: Path) -> None:
    write_image(root / "train" / "bird" / "5.png", np.zeros((32, 32, 3), dtype=np.uint8))


def _remove(root: Path) -> None:
    (root / "train" / "dog" / "1.png").unlink()


@pytest.mark.parametrize("edit, train_count", [(_change, 8), (_add, 9), (_remove, 7)], ids=["change", "add", "remove"])
def test_changed_files_invalidate_the_cache(tmp_path, monkeypatch, edit, train_count):
    write_image_folder(tmp_path)
    before = load_image_folder(tmp_path, image_size=32)
    old_cache = cache_files(tmp_path, "train")
    edit(tmp_path)
    calls = count_decodes(monkeypatch)
    after = load_image_folder(tmp_path, image_size=32)
    assert len(calls) == 1, "train must be decoded again, test (untouched) must come from its cache"
    assert len(after.train) == train_count
    if edit is _change:
        assert after.train.images[0].sum() == 0 and before.train.images[0].sum() > 0  # the new content is seen
    if edit is _add:
        assert after.train.images[2].sum() == 0 and after.train.labels[:3].tolist() == [0, 0, 0]
    new_cache = cache_files(tmp_path, "train")
    assert len(new_cache) == 1 and new_cache != old_cache  # the stale cache file is removed
    # and the rebuilt cache is used from now on
    forbid_decoding(monkeypatch)
    assert torch.equal(load_image_folder(tmp_path, image_size=32).train.images, after.train.images)


def test_unreadable_cache_is_rebuilt(tmp_path, monkeypatch):
    write_image_folder(tmp_path)
    expected = load_image_folder(tmp_path, image_size=32)
    cache_files(tmp_path, "train")[0].write_bytes(b"not a torch file")
    calls = count_decodes(monkeypatch)
    again = load_image_folder(tmp_path, image_size=32)
    assert len(calls) == 1 and torch.equal(again.train.images, expected.train.images)


def test_unwritable_cache_location_still_loads(tmp_path, monkeypatch):
    # Tests run as root here, where chmod does not stop writes; a plain file where the cache folder should be
    # makes mkdir fail with an OSError, the same path a read-only dataset folder takes.
    expected = write_image_folder(tmp_path)
    cache_folder(tmp_path).parent.mkdir(parents=True, exist_ok=True)
    cache_folder(tmp_path).write_text("in the way")
    calls = count_decodes(monkeypatch)
    first = load_image_folder(tmp_path, image_size=32)
    second = load_image_folder(tmp_path, image_size=32)
    assert len(calls) == 4  # decoded every time, without a cache
    assert torch.equal(first.train.images, second.train.images)
    arrays, _ = expected_tensor(expected["test"], first.test.classes)
    assert np.array_equal(first.test.images[0].permute(1, 2, 0).numpy(), arrays[0])


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_root_still_loads(tmp_path):
    write_image_folder(tmp_path)
    os.chmod(tmp_path, 0o555)
    try:
        splits = load_image_folder(tmp_path, image_size=32)
        assert len(splits.train) == 8 and len(cache_files(tmp_path)) == 1  # cached outside the user's folder
    finally:
        os.chmod(tmp_path, 0o755)


# --- image folders: errors -----------------------------------------------------------------------------------------


def test_missing_root(tmp_path):
    root = tmp_path / "nowhere"
    with pytest.raises(DataError) as error:
        load_dataset("imagefolder", str(root))
    assert_one_line_naming(error, root)


def test_missing_test_folder(tmp_path):
    write_image(tmp_path / "train" / "cat" / "0.png", pattern(1))
    with pytest.raises(DataError) as error:
        load_image_folder(tmp_path, image_size=32)
    assert_one_line_naming(error, tmp_path / "test")


def test_split_without_class_folders(tmp_path):
    write_image_folder(tmp_path)
    for path in (tmp_path / "test").rglob("*.png"):
        path.unlink()
    for folder in list((tmp_path / "test").iterdir()):
        folder.rmdir()
    with pytest.raises(DataError) as error:
        load_image_folder(tmp_path, image_size=32)
    assert_one_line_naming(error, tmp_path / "test")


def test_empty_class_folder(tmp_path):
    write_image_folder(tmp_path)
    (tmp_path / "train" / "fish").mkdir()
    (tmp_path / "test" / "fish").mkdir()
    (tmp_path / "test" / "fish" / ".hidden").write_text("hidden files do not count as images")
    with pytest.raises(DataError) as error:
        load_image_folder(tmp_path, image_size=32)
    assert_one_line_naming(error, tmp_path / "train" / "fish")


def test_non_image_file(tmp_path):
    write_image_folder(tmp_path)
    notes = tmp_path / "train" / "cat" / "notes.txt"
    notes.write_text("these are not pixels\n")
    with pytest.raises(DataError) as error:
        load_image_folder(tmp_path, image_size=32)
    assert_one_line_naming(error, notes)


@pytest.mark.parametrize("suffix, fmt", [(".jpg", "JPEG"), (".png", "PNG")])
def test_truncated_image(tmp_path, suffix, fmt):
    write_image_folder(tmp_path)
    path = write_image(tmp_path / "test" / "bird" / f"broken{suffix}", pattern(5), format=fmt)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # an interrupted copy
    with pytest.raises(DataError) as error:
        load_image_folder(tmp_path, image_size=32)
    assert_one_line_naming(error, path)


def test_decoding_in_processes_gives_the_serial_result_and_names_a_bad_file(tmp_path, monkeypatch):
    write_image_folder(tmp_path)
    serial = load_image_folder(tmp_path, image_size=32)
    shutil.rmtree(cache_folder(tmp_path))
    monkeypatch.setattr(folders_module, "_DECODE_CHUNK", 2)  # 4 chunks of train images: the process pool decodes them
    parallel = load_image_folder(tmp_path, image_size=32)
    for a, b in ((serial.train, parallel.train), (serial.test, parallel.test)):
        assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels) and a.classes == b.classes
    bad = tmp_path / "train" / "dog" / "9.png"  # in the last chunk, decoded by another process
    bad.write_bytes(b"not an image")
    # as during training: SIGTERM only sets a flag, and the forked decoders inherit that handler; the pool must still
    # stop them on the error. A hang fails the test after 60 s instead of stalling the suite.
    previous = {signal.SIGTERM: signal.signal(signal.SIGTERM, lambda signum, frame: None)}
    previous[signal.SIGALRM] = signal.signal(signal.SIGALRM, _raise_timeout)
    signal.alarm(60)
    try:
        with pytest.raises(DataError) as error:
            load_image_folder(tmp_path, image_size=32)
    finally:
        signal.alarm(0)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    assert_one_line_naming(error, bad)


def _raise_timeout(signum, frame):
    raise TimeoutError("decoding did not stop within 60 s")


def test_classes_differ_between_train_and_test(tmp_path):
    write_image_folder(tmp_path)
    write_image(tmp_path / "train" / "emu" / "0.png", pattern(1))
    write_image(tmp_path / "test" / "yak" / "0.png", pattern(2))
    with pytest.raises(DataError) as error:
        load_image_folder(tmp_path, image_size=32)
    message = assert_one_line_naming(error, tmp_path / "train", tmp_path / "test", "emu", "yak")
    assert message.index("emu") < message.index("yak")  # only in train: emu; only in test: yak
    assert "cat" not in message  # shared classes are not listed


def test_hidden_entries_are_ignored(tmp_path):
    # .DS_Store-style files and dot-folders are not images or classes
    write_image_folder(tmp_path)
    (tmp_path / "train" / ".thumbs").mkdir()
    (tmp_path / "train" / "cat" / ".DS_Store").write_bytes(b"\x00\x01junk")
    splits = load_image_folder(tmp_path, image_size=32)
    assert splits.train.classes == ["bird", "cat", "dog"] and len(splits.train) == 8


# --- subset --------------------------------------------------------------------------------------------------------


def labelled(labels: list[int], num_classes: int | None = None) -> ImageData:
    """Tiny images whose first pixel is the image's index (mod 256) and second its label: each one is unique."""
    n = len(labels)
    images = torch.zeros(n, 1, 2, 2, dtype=torch.uint8)
    images[:, 0, 0, 0] = torch.arange(n) % 256
    images[:, 0, 0, 1] = torch.arange(n) // 256
    images[:, 0, 1, 0] = torch.tensor(labels, dtype=torch.uint8)
    k = num_classes or max(labels) + 1
    return ImageData(images, torch.tensor(labels, dtype=torch.int64), [f"k{i}" for i in range(k)])


def assert_is_subset(part: ImageData, whole: ImageData) -> None:
    """Every chosen image is an original image with its own label, none twice."""
    rows = {}
    for image, label in zip(whole.images, whole.labels):
        rows.setdefault(image.numpy().tobytes(), []).append(int(label))
    seen = Counter(image.numpy().tobytes() for image in part.images)
    for image, label in zip(part.images, part.labels):
        key = image.numpy().tobytes()
        assert key in rows and int(label) in rows[key]
        assert seen[key] <= len(rows[key])
    assert part.classes == whole.classes


@pytest.mark.parametrize("size", [1, 3, 10, 17, 30, 59])
def test_subset_is_class_balanced(size):
    data = labelled([i % 3 for i in range(60)])  # 20 of each class
    part = subset(data, size)
    counts = Counter(part.labels.tolist())
    assert len(part) == size
    assert max(counts.values()) - min(counts.get(c, 0) for c in range(3)) <= 1, counts


def test_subset_balances_shuffled_unequal_classes():
    # class 0 has only 2 images: it gives both, the others share the rest evenly
    labels = [0, 0] + [1] * 15 + [2] * 15
    labels = [labels[i] for i in torch.randperm(len(labels), generator=torch.Generator().manual_seed(3)).tolist()]
    counts = Counter(subset(labelled(labels), 12).labels.tolist())
    assert counts == {0: 2, 1: 5, 2: 5}


def test_subset_is_deterministic_and_ignores_global_rng():
    data = labelled([i % 4 for i in range(50)])
    torch.manual_seed(1)
    a = subset(data, 13)
    torch.manual_seed(2)
    b = subset(data, 13)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)


def test_subset_takes_original_images_with_their_labels():
    data = labelled([(i * 7) % 5 for i in range(40)])
    part = subset(data, 11)
    assert_is_subset(part, data)
    assert len({im.numpy().tobytes() for im in part.images}) == 11  # no image twice
    # and the label really is the one stored with that image
    assert torch.equal(part.images[:, 0, 1, 0].long(), part.labels)


def test_subset_is_random_not_the_first_images():
    data = labelled([i % 2 for i in range(100)])
    images = subset(data, 10).images
    chosen = images[:, 0, 0, 0].long() + 256 * images[:, 0, 0, 1].long()  # the original indices
    assert chosen.max() >= 20  # not just the head of the dataset


@pytest.mark.parametrize("size", [None, 20, 21, 1000])
def test_subset_of_size_at_least_len_returns_everything(size):
    data = labelled([i % 3 for i in range(20)])
    part = subset(data, size)
    assert torch.equal(part.images, data.images) and torch.equal(part.labels, data.labels)


# --- synthetic -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("image_size, channels, num_classes", [(8, 3, 4), (12, 1, 7)])
def test_synthetic_shapes_dtypes_and_classes(image_size, channels, num_classes):
    splits = load_dataset("synthetic", "unused/", image_size=image_size, channels=channels, num_classes=num_classes,
                          train_size=30, test_size=14)
    assert splits.train.images.shape == (30, channels, image_size, image_size)
    assert splits.test.images.shape == (14, channels, image_size, image_size)
    assert splits.train.images.dtype == torch.uint8 and splits.train.labels.dtype == torch.int64
    assert splits.train.classes == [f"class_{i}" for i in range(num_classes)] == splits.test.classes
    assert (splits.num_classes, splits.channels, splits.image_size) == (num_classes, channels, image_size)
    # every class is present, in near-equal numbers
    counts = Counter(splits.train.labels.tolist())
    assert set(counts) == set(range(num_classes)) and max(counts.values()) - min(counts.values()) <= 1


def test_synthetic_default_sizes():
    splits = load_dataset("synthetic", "unused/", image_size=4, channels=1, num_classes=2)
    assert (len(splits.train), len(splits.test)) == (512, 256)


def test_synthetic_is_deterministic():
    args = dict(image_size=8, channels=3, num_classes=5, train_size=25, test_size=10)
    torch.manual_seed(123)  # the global RNG plays no part
    a = make_synthetic(**args)
    b = make_synthetic(**args)
    for x, y in ((a.train, b.train), (a.test, b.test)):
        assert torch.equal(x.images, y.images) and torch.equal(x.labels, y.labels)


def test_synthetic_classes_are_learnable():
    # images of one class are closer to their class mean than to the other classes' means: there is signal
    splits = make_synthetic(image_size=8, channels=3, num_classes=4, train_size=200, test_size=40)
    means = torch.stack([splits.train.images[splits.train.labels == k].float().mean(0) for k in range(4)])
    distances = ((splits.test.images.float()[:, None] - means[None]) ** 2).flatten(2).sum(-1)
    assert (distances.argmin(1) == splits.test.labels).float().mean() > 0.9


def test_synthetic_test_set_does_not_depend_on_train_size():
    a = make_synthetic(image_size=8, channels=3, num_classes=4, train_size=40, test_size=20)
    b = make_synthetic(image_size=8, channels=3, num_classes=4, train_size=80, test_size=20)
    assert torch.equal(a.test.images, b.test.images) and torch.equal(a.test.labels, b.test.labels)


def test_a_file_replaced_with_the_same_size_and_time_invalidates_the_cache(tmp_path, monkeypatch):
    """`cp -p`, `rsync -a` and `tar x` keep the old timestamp: the cache's key reads the bytes too."""
    write_image_folder(tmp_path)
    before = load_image_folder(tmp_path, image_size=32)
    path = tmp_path / "train" / "bird" / "0.png"
    stat = path.stat()
    write_image(path, np.zeros((32, 32, 3), dtype=np.uint8))
    assert path.stat().st_size == stat.st_size
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # the old time, as cp -p leaves it
    after = load_image_folder(tmp_path, image_size=32)
    assert after.train.images[0].sum() == 0 and before.train.images[0].sum() > 0  # the new pixels, not the cached


def test_a_tampered_cache_is_detected_when_read_and_decoded_again(tmp_path, monkeypatch, capsys):
    write_image_folder(tmp_path)
    expected = load_image_folder(tmp_path, image_size=32)
    (cache,) = cache_files(tmp_path, "train")
    saved = torch.load(cache, weights_only=True)
    saved["images"][0] ^= 1  # one flipped bit per pixel of one image, the file still a valid torch file
    torch.save(saved, cache)
    calls = count_decodes(monkeypatch)
    again = load_image_folder(tmp_path, image_size=32)
    assert len(calls) == 1 and torch.equal(again.train.images, expected.train.images)
    assert "is damaged; decoding the folder again" in capsys.readouterr().err


@pytest.mark.parametrize("where,expected", [
    ("images/train", "dataset.cache_dir: {root}/images/train is inside the dataset folder"),
    ("images", "dataset.cache_dir: {root}/images is inside the dataset folder"),
    ("run/cache", "dataset.cache_dir: {root}/run/cache is in {root}/run, a run directory"),
    ("a_file", "dataset.cache_dir: {root}/a_file is not a folder"),
    ("a_file/cache", "dataset.cache_dir: {root}/a_file is not a folder"),
])
def test_a_cache_dir_that_is_no_place_for_a_cache_is_refused(tmp_path, where, expected):
    write_image_folder(tmp_path / "images")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "metrics.jsonl").write_text("")
    (tmp_path / "a_file").write_text("")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    from augrun.errors import UserError
    with pytest.raises(UserError) as caught:
        load_dataset("imagefolder", str(tmp_path / "images"), image_size=8, storage="memory",
                     cache_dir=str(tmp_path / where))
    assert str(caught.value).startswith(expected.format(root=tmp_path))
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
