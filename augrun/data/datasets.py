"""The datasets registry: CIFAR-10/100, Fashion-MNIST, image folders, Imagenette, synthetic.

Every loader returns the same `DataSplits`: uint8 tensors (N, C, H, W) with int64 labels (`ImageData`), so both
augmentation backends and every model see one format, or, for photo folders streamed at their own resolution, file
lists (`FileData`, augrun.data.folders). CIFAR's pickles are small (torchvision's classes check and parse them); image
folders are decoded once and cached in a cache directory, or streamed.
"""
from __future__ import annotations

import tarfile
from dataclasses import dataclass
from pathlib import Path

import torch

from augrun.data import folders
from augrun.data.splits import DataSplits, FileData, ImageData
from augrun.errors import DataError, printable
from augrun.registry import Registry
from augrun.seeding import derive_seed

__all__ = ["DATASETS", "DataError", "DataSplits", "DatasetRequest", "FileData", "ImageData", "load_dataset", "subset"]


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
    storage: str = "memory"            # memory or stream (choose_storage has resolved auto)
    cache_dir: Path | None = None      # image folders in memory: where the decoded copy is cached
    test_only: bool = False            # augrun eval: an image folder needs no train/ (its test split stands in)


def load_dataset(name: str, root: str, *, download: bool = True, image_size: int = 32, channels: int = 3,
                 num_classes: int = 10, train_size: int | None = None, test_size: int | None = None,
                 storage: str = "auto", cache_dir: str | None = None, memory_limit_gb: float = 4.0,
                 test_only: bool = False) -> DataSplits:
    """The dataset's two splits. `test_only` (augrun eval): an image folder is read without its train/, and its test
    split stands in for both; the other datasets come whole."""
    choice = choose_storage(name, root, storage=storage, image_size=image_size, memory_limit_gb=memory_limit_gb,
                            train_size=train_size, test_size=test_size, test_only=test_only)
    request = DatasetRequest(Path(root), download, image_size, channels, num_classes, train_size, test_size,
                             choice.storage, Path(cache_dir).expanduser() if cache_dir else None, test_only)
    splits = DATASETS.get(name)(request)
    return DataSplits(subset(splits.train, train_size), subset(splits.test, test_size))


def choose_storage(name: str, root: str, *, storage: str, image_size: int, memory_limit_gb: float,
                   train_size: int | None, test_size: int | None, test_only: bool = False) -> folders.StorageChoice:
    """memory or stream for this dataset (dataset.storage=auto decides here), and what to say about the choice."""
    if name == "imagefolder":
        return folders.choose_storage(Path(root), storage=storage, image_size=image_size,
                                      memory_limit_gb=memory_limit_gb, train_size=train_size, test_size=test_size,
                                      splits=folders.TEST_ONLY if test_only else folders.SPLITS)
    if name == "imagenette":  # photos, and the folder may not be downloaded yet to look at: auto streams
        if storage == "memory":
            return folders.StorageChoice("memory", "")
        note = "dataset.storage=auto: stream (Imagenette's photos are decoded per image, each epoch)"
        return folders.StorageChoice("stream", note if storage == "auto" else "")
    if storage == "stream":
        raise DataError("dataset.storage", f"got stream for dataset={name}, which is small enough to hold in memory; "
                        f"valid: stream for {', '.join(STREAMABLE)}, else memory or auto")
    return folders.StorageChoice("memory", "")


def subset(data: ImageData | FileData, size: int | None) -> ImageData | FileData:
    """A seeded, class-balanced subset: classes take turns in a random order until `size` images are taken."""
    if size is None or size >= len(data):
        return data
    chosen = classes_taking_turns(data.labels, torch.Generator().manual_seed(SUBSET_SEED))[:size]
    return data.take(chosen.sort().values)


def classes_taking_turns(labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Every index, in a random order (from `generator`) in which the classes take turns: one image of each class,
    then a second of each, ...; a class that runs out drops out. Any prefix is as class-balanced as it can be."""
    order = torch.randperm(len(labels), generator=generator)
    shuffled_labels = labels[order]
    # rank of each image within its class in the shuffled order; sorting by it interleaves the classes
    rank_in_class = torch.zeros(len(labels), dtype=torch.long)
    for label in shuffled_labels.unique():
        members = (shuffled_labels == label).nonzero().squeeze(1)
        rank_in_class[members] = torch.arange(len(members))
    return order[torch.sort(rank_in_class, stable=True).indices]


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


# --- image folders and Imagenette ---------------------------------------------------------------------------------

STREAMABLE = ("imagefolder", "imagenette")  # photo folders; the other datasets are small tensors in any case


@DATASETS.register("imagefolder")
def _image_folder(r: DatasetRequest) -> DataSplits:
    return folders.load_image_folder(r.root, image_size=r.image_size, storage=r.storage, cache_dir=r.cache_dir,
                                     splits=folders.TEST_ONLY if r.test_only else folders.SPLITS)


def imagenette_archive() -> tuple[str, str, dict[str, tuple[str, ...]]]:
    """The 160 px Imagenette's URL and MD5, and its class names by WordNet id, as torchvision publishes them."""
    from torchvision.datasets import Imagenette
    url, md5 = Imagenette._ARCHIVES["160px"]
    return url, md5, Imagenette._WNID_TO_CLASS


@DATASETS.register("imagenette")
def _imagenette(r: DatasetRequest) -> DataSplits:
    """Imagenette 160 px (10 ImageNet classes, ~9.5k train / ~3.9k val photos): downloaded, MD5-checked and extracted by
    torchvision's utilities, then an image folder (val/ is its test split), streamed unless storage=memory."""
    url, md5, names = imagenette_archive()
    folder = r.root / url.rsplit("/", 1)[1].removesuffix(".tgz")
    if not (folder / "train").is_dir() or not (folder / "val").is_dir():
        fault = f"{printable(folder)} not found"
        if not r.download:
            raise DataError("dataset.root", f"{fault} and dataset.download=false; download {url} and extract it into "
                            f"{printable(r.root)}/, or point dataset.root at a folder holding {folder.name}/")
        fetch(url, md5, r.root, fault=fault, looked_for=folder)
    splits = folders.load_image_folder(folder, image_size=r.image_size, storage=r.storage, cache_dir=r.cache_dir,
                                       splits=("train", "val"))
    for split in (splits.train, splits.test):  # WordNet ids -> the first English name, as torchvision's class does
        split.classes = [names.get(wnid, (wnid,))[0] for wnid in split.classes]
    return splits
