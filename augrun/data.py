"""Datasets as uint8 tensors (N, C, H, W) with int64 labels: CIFAR-10/100, Fashion-MNIST, image folders, synthetic.

Every loader returns the same `ImageData`, so both augmentation backends and every model see one format. Decoding is
done once: CIFAR's pickles are small (torchvision's classes check and parse them), image folders are cached as a .pt file beside the images.
"""
from __future__ import annotations

import functools
import hashlib
import multiprocessing
import os
import signal
import tarfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from augrun.errors import DataError, printable
from augrun.files import atomic_open
from augrun.images import ImageFileError, decode_image
from augrun.registry import Registry
from augrun.seeding import derive_seed



@dataclass
class ImageData:
    images: torch.Tensor  # uint8 (N, C, H, W)
    labels: torch.Tensor  # int64 (N,)
    classes: list[str]

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class DataSplits:
    train: ImageData
    test: ImageData

    @property
    def num_classes(self) -> int:
        return len(self.train.classes)

    @property
    def channels(self) -> int:
        return self.train.images.shape[1]

    @property
    def image_size(self) -> int:
        return self.train.images.shape[-1]


DATASETS = Registry("dataset.name", "dataset")
SUBSET_SEED = 0  # subsets are the same for every run seed, so seeds vary the training, not the data


@dataclass(frozen=True)
class DatasetRequest:
    """What a dataset loader is asked for (the dataset config, as plain values)."""
    root: Path
    download: bool
    image_size: int
    channels: int
    num_classes: int
    train_size: int | None
    test_size: int | None


@functools.lru_cache(maxsize=2)  # the launcher checks the data before Hydra starts, then trains on the same copy
def load_dataset(name: str, root: str, *, download: bool = True, image_size: int = 32, channels: int = 3,
                 num_classes: int = 10, train_size: int | None = None, test_size: int | None = None) -> DataSplits:
    request = DatasetRequest(Path(root), download, image_size, channels, num_classes, train_size, test_size)
    splits = DATASETS.get(name)(request)
    return DataSplits(subset(splits.train, train_size), subset(splits.test, test_size))


def subset(data: ImageData, size: int | None) -> ImageData:
    """A seeded, class-balanced subset: classes take turns in a random order until `size` images are taken."""
    if size is None or size >= len(data):
        return data
    generator = torch.Generator().manual_seed(SUBSET_SEED)
    order = torch.randperm(len(data), generator=generator)
    shuffled_labels = data.labels[order]
    # rank of each image within its class in the shuffled order; sorting by it interleaves the classes
    rank_in_class = torch.zeros(len(data), dtype=torch.long)
    for label in shuffled_labels.unique():
        members = (shuffled_labels == label).nonzero().squeeze(1)
        rank_in_class[members] = torch.arange(len(members))
    chosen = order[torch.sort(rank_in_class, stable=True).indices[:size]].sort().values
    return ImageData(data.images[chosen], data.labels[chosen], data.classes)


# --- synthetic ----------------------------------------------------------------------------------------------------

@DATASETS.register("synthetic")
def _synthetic(r: DatasetRequest) -> DataSplits:
    return make_synthetic(image_size=r.image_size, channels=r.channels, num_classes=r.num_classes,
                          train_size=r.train_size or 512, test_size=r.test_size or 256)


def make_synthetic(*, image_size: int, channels: int, num_classes: int, train_size: int, test_size: int) -> DataSplits:
    """Each class is a smooth random pattern; images are noisy copies of it, so a small model learns it in one epoch."""
    key = ("synthetic", image_size, channels, num_classes)
    coarse = torch.rand(num_classes, channels, 4, 4, generator=torch.Generator().manual_seed(derive_seed(*key)))
    patterns = torch.nn.functional.interpolate(coarse, size=(image_size, image_size), mode="bilinear", align_corners=False)

    def draw(count: int, split: str) -> ImageData:
        # each split its own stream: the test set must not change when train_size does
        generator = torch.Generator().manual_seed(derive_seed(*key, split))
        labels = torch.arange(count) % num_classes
        labels = labels[torch.randperm(count, generator=generator)]
        noise = torch.randn(count, channels, image_size, image_size, generator=generator) * 0.25
        images = ((patterns[labels] + noise).clamp(0, 1) * 255).round().to(torch.uint8)
        return ImageData(images, labels, [f"class_{i}" for i in range(num_classes)])

    return DataSplits(draw(train_size, "train"), draw(test_size, "test"))


# --- CIFAR ------------------------------------------------------------------------------------------------------

DATASETS.register("cifar10")(lambda r: load_cifar(r.root, "cifar10", download=r.download))
DATASETS.register("cifar100")(lambda r: load_cifar(r.root, "cifar100", download=r.download))


def cifar_class(name: str):
    """torchvision's dataset class: it knows the URL, the archive's and every file's MD5, and the pickles' layout."""
    from torchvision.datasets import CIFAR10, CIFAR100
    return {"cifar10": CIFAR10, "cifar100": CIFAR100}[name]


def load_cifar(root: Path, name: str, *, download: bool) -> DataSplits:
    """CIFAR-10/100 through torchvision's classes, behind one-line errors that name the file at fault.

    Every file is checked against its MD5 before anything is unpickled (pickle can run code: a substituted file is
    refused, never loaded); a missing or damaged one is downloaded again when dataset.download is on.
    """
    dataset = cifar_class(name)
    folder = root / dataset.base_folder
    fault = _cifar_fault(dataset, folder)
    if fault is not None:
        if not download:
            how = (f"download {dataset.url} and extract it into {printable(root)}/, or point dataset.root at a folder "
                   f"holding {folder.name}/")
            raise DataError("dataset.root", f"{fault} and dataset.download=false; {how}")
        fetch(dataset.url, dataset.tgz_md5, root, fault=fault, looked_for=folder)
        fault = _cifar_fault(dataset, folder)
        if fault is not None:  # the archive's MD5 was right, so this is a changed file list: say so, never half-load
            raise DataError("dataset.root", f"{fault} after extracting {dataset.filename}; delete {printable(folder)} "
                            "and try again")
    splits = [dataset(str(root), train=train) for train in (True, False)]
    # torchvision holds the images as (N, H, W, C) numpy arrays, as PIL wants them; augrun keeps (N, C, H, W) tensors
    return DataSplits(*(ImageData(torch.from_numpy(s.data).permute(0, 3, 1, 2).contiguous(),
                                  torch.tensor(s.targets, dtype=torch.int64), list(s.classes)) for s in splits))


def _cifar_fault(dataset, folder: Path) -> str | None:
    """What is wrong with a CIFAR folder, as the start of a one-line message; None when every file has its MD5."""
    from torchvision.datasets.utils import check_integrity
    if not folder.is_dir():
        return f"{printable(folder)} not found"
    for filename, md5 in dataset.train_list + dataset.test_list + [[dataset.meta["filename"], dataset.meta["md5"]]]:
        path = folder / filename
        if not path.is_file():
            return f"{printable(path)} not found"
        if not check_integrity(str(path), md5):
            return f"{printable(path)} is damaged (its MD5 is not the published one's)"
    return None


def fetch(url: str, md5: str, root: Path, *, fault: str, looked_for: Path) -> None:
    """Download and extract an archive with torchvision's utilities (checking the archive's MD5); `fault`: why."""
    from torchvision.datasets.utils import download_and_extract_archive
    archive = url.rsplit("/", 1)[1]
    try:
        download_and_extract_archive(url, str(root), filename=archive, md5=md5)
    except (OSError, RuntimeError, tarfile.TarError) as error:
        reason = " ".join(str(error).split()) or type(error).__name__
        raise DataError("dataset.root", f"{fault}, and the download failed ({reason}); "
                        f"download {url} and extract it into {printable(root)}/, or point dataset.root at a folder "
                        f"holding {looked_for.name}/") from None


# --- Fashion-MNIST -------------------------------------------------------------------------------------------------

@DATASETS.register("fashion_mnist")
def _fashion_mnist(r: DatasetRequest) -> DataSplits:
    return load_fashion_mnist(r.root, download=r.download)


def load_fashion_mnist(root: Path, *, download: bool) -> DataSplits:
    from torchvision.datasets import FashionMNIST  # torchvision parses the idx files and knows the mirrors
    try:
        splits = [FashionMNIST(str(root), train=train, download=download) for train in (True, False)]
    except RuntimeError as error:  # torchvision's "Dataset not found"
        raise DataError("dataset.root", f"Fashion-MNIST not found in {printable(root / 'FashionMNIST' / 'raw')} ({error}); "
                        "set dataset.download=true with network access, or copy the four idx files there") from None
    except OSError as error:
        raise DataError("dataset.root", f"Fashion-MNIST download into {printable(root)} failed ({error}); "
                        "copy the four idx .gz files into FashionMNIST/raw/ there") from None
    return DataSplits(*(ImageData(s.data.unsqueeze(1).clone(), s.targets.clone(), list(s.classes)) for s in splits))


# --- image folders -------------------------------------------------------------------------------------------------

@DATASETS.register("imagefolder")
def _image_folder(r: DatasetRequest) -> DataSplits:
    return load_image_folder(r.root, image_size=r.image_size)


def load_image_folder(root: Path, *, image_size: int) -> DataSplits:
    if not root.is_dir():
        raise DataError("dataset.root", f"{printable(root)} is not a directory; valid: a folder holding train/<class>/ and "
                        "test/<class>/")
    splits = [_class_files(root, split) for split in ("train", "test")]
    if list(splits[0]) != list(splits[1]):
        only_train = sorted(set(splits[0]) - set(splits[1]))
        only_test = sorted(set(splits[1]) - set(splits[0]))
        raise DataError("dataset.root", f"classes differ between {printable(root)}/train and {printable(root)}/test "
                        f"(only in train: {only_train or 'none'}; only in test: {only_test or 'none'})")
    return DataSplits(*(_cached_decode(root, split, files, image_size) for split, files in zip(("train", "test"), splits)))


def _class_files(root: Path, split: str) -> dict[str, list[Path]]:
    folder = root / split
    if not folder.is_dir():
        raise DataError("dataset.root", f"{printable(folder)} is missing; valid: {printable(root)} holding train/<class>/ and "
                        "test/<class>/")
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataError("dataset.root", f"{printable(folder)} has no class folders; valid: "
                        f"{printable(folder)}/<class>/<image files>")
    files = {c: sorted(p for p in (folder / c).iterdir() if p.is_file() and not p.name.startswith(".")) for c in classes}
    for c, paths in files.items():
        if not paths:
            raise DataError("dataset.root", f"class folder {printable(folder / c)} is empty; every class needs at least one "
                            "image")
    return files


def _fingerprint(files: dict[str, list[Path]], image_size: int) -> str:
    """Changes when any file is added, removed, renamed, resized or touched: then the cache is rebuilt."""
    digest = hashlib.sha1(f"v1 {image_size}".encode())
    for c, paths in files.items():
        for p in paths:
            stat = p.stat()
            digest.update(f"{c}/{p.name} {stat.st_size} {stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def _cached_decode(root: Path, split: str, files: dict[str, list[Path]], image_size: int) -> ImageData:
    cache_dir = root / ".augrun-cache"
    cache = cache_dir / f"{split}-{image_size}-{_fingerprint(files, image_size)}.pt"
    if cache.is_file():
        try:
            saved = torch.load(cache, weights_only=True)
            return ImageData(saved["images"], saved["labels"], list(saved["classes"]))
        except Exception:  # a cache is only a shortcut: decode again when it cannot be read
            pass
    data = _decode(files, image_size)
    try:
        cache_dir.mkdir(exist_ok=True)
        for stale in cache_dir.glob(f"{split}-{image_size}-*.pt"):
            stale.unlink()
        with atomic_open(cache) as file:
            torch.save({"images": data.images, "labels": data.labels, "classes": data.classes}, file)
    except (OSError, RuntimeError):  # RuntimeError: torch's writer on a full disk
        pass  # a read-only dataset folder still works, it is just decoded every time
    return data


def _decode(files: dict[str, list[Path]], image_size: int) -> ImageData:
    paths = [path for class_paths in files.values() for path in class_paths]
    labels = np.repeat(np.arange(len(files), dtype=np.int64), [len(class_paths) for class_paths in files.values()])
    chunks = [(paths[i:i + _DECODE_CHUNK], image_size) for i in range(0, len(paths), _DECODE_CHUNK)]
    processes = min(16, os.cpu_count() or 1, len(chunks))
    if processes > 1 and "fork" in multiprocessing.get_all_start_methods():
        # small images cost more in Python calls than in decoding, which threads cannot share: processes can
        fork = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(processes, mp_context=fork, initializer=_decoder_signal_handlers) as pool:
            try:
                parts = list(pool.map(_decode_chunk, chunks))
            except BaseException:  # a bad image or Ctrl-C: do not decode the remaining chunks first
                pool.shutdown(cancel_futures=True)
                raise
    else:
        parts = [_decode_chunk(chunk) for chunk in chunks]
    images = np.concatenate(parts) if parts else np.empty((0, image_size, image_size, 3), dtype=np.uint8)
    return ImageData(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(labels), list(files))


_DECODE_CHUNK = 1024  # images per task of the decoding processes


def _decoder_signal_handlers() -> None:
    """A forked decoding process inherits augrun's SIGTERM handler, which only sets a flag: then the pool could not
    stop it. SIGTERM ends it again; Ctrl-C (SIGINT, sent to the whole process group) is left to the main process."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _decode_chunk(chunk: tuple[list[Path], int]) -> np.ndarray:
    paths, image_size = chunk
    return np.stack([_read_image(path, image_size) for path in paths])


def _read_image(path: Path, image_size: int) -> np.ndarray:
    from PIL import Image

    try:
        pixels = decode_image(path, channels=3)
    except ImageFileError as error:
        raise DataError("dataset.root", f"{error}") from None
    if pixels.shape[:2] != (image_size, image_size):
        pixels = np.asarray(Image.fromarray(pixels).resize((image_size, image_size), Image.BILINEAR))
    return pixels
