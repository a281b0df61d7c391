"""Image folders (root/train/<class>/*, root/test/<class>/*): found, checked, and stored one of two ways.

`memory` decodes every image once, resized to image_size x image_size, into one uint8 tensor, cached as a .pt file in
a cache directory (never inside the user's folder); `stream` keeps the file list, and the batch sources decode each
image when it is used, at its own resolution (augrun.data.photos). `choose_storage` decides for `auto`.
"""
from __future__ import annotations

import hashlib
import multiprocessing
import os
import signal
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from augrun import signals
from augrun.data.decoding import ImageFileError, decode_image, read_header
from augrun.data.splits import DataSplits, FileData, ImageData
from augrun.errors import DataError, printable
from augrun.files import atomic_open

# auto keeps images in memory only when they are about image_size already: within this factor of it, both ways
ABOUT_THE_SIZE = 1.5
SIZE_SAMPLE = 32  # files whose headers auto reads to see how large the images are


def default_cache_dir() -> Path:
    """$XDG_CACHE_HOME/augrun, else ~/.cache/augrun (the XDG base-directory default)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "augrun"


SPLITS = ("train", "test")
TEST_ONLY = ("test", "test")  # augrun eval: the test split alone, standing in for both (read once)


def load_image_folder(root: Path, *, image_size: int, storage: str = "memory", cache_dir: Path | None = None,
                      splits: tuple[str, str] = SPLITS) -> DataSplits:
    """The folder's two splits, decoded (`memory`) or as file lists (`stream`); `splits`: the folder names of the
    train and test images (Imagenette calls its test split val; TEST_ONLY reads test/ alone)."""
    files = dict(zip(splits, find_class_files(root, splits)))  # TEST_ONLY: one entry, loaded once for both
    if storage == "stream":
        loaded = {split: _file_data(split_files, image_size) for split, split_files in files.items()}
    else:
        check_cache_dir(root, cache_dir or default_cache_dir())
        cache = _cache_folder(root, cache_dir)
        loaded = {split: _cached_decode(cache, split, split_files, image_size) for split, split_files in files.items()}
    return DataSplits(loaded[splits[0]], loaded[splits[1]])


def find_class_files(root: Path, splits: tuple[str, str] = SPLITS) -> list[dict[str, list[Path]]]:
    if not root.is_dir():
        raise DataError("dataset.root", f"{printable(root)} is not a directory; valid: a folder holding "
                        f"{_holding(splits)}")
    by_split = {split: _class_files(root, split, splits) for split in dict.fromkeys(splits)}  # each read once
    found = [by_split[split] for split in splits]
    if list(found[0]) != list(found[1]):
        only_train = sorted(set(found[0]) - set(found[1]))
        only_test = sorted(set(found[1]) - set(found[0]))
        raise DataError("dataset.root", f"classes differ between {printable(root)}/{splits[0]} and "
                        f"{printable(root)}/{splits[1]} (only in {splits[0]}: {only_train or 'none'}; only in "
                        f"{splits[1]}: {only_test or 'none'})")
    return found


def _image_files(folder: Path) -> list[Path]:
    """The files of a class folder, sorted by name. os.scandir knows each entry's type from the directory listing,
    where Path.is_file() stats every file, and names sort faster than Paths (measured: 0.33-0.39 s against 0.56 s
    for CIFAR-10's 50k training JPEGs; start-up reads the tree twice)."""
    try:
        with os.scandir(folder) as entries:
            names = sorted(entry.name for entry in entries if not entry.name.startswith(".") and _is_file(entry))
    except OSError as error:  # the folder itself: unreadable, gone
        raise DataError("dataset.root", f"cannot list {printable(folder)} ({error.strerror or error}); valid: a "
                        "readable folder of image files") from None
    return [folder / name for name in names]


def _is_file(entry: os.DirEntry) -> bool:
    """Whether an entry of a class folder is a file to read: a link that loops or cannot be followed is named, not a
    traceback (DirEntry.is_file raises where Path.is_file would quietly say False)."""
    try:
        return entry.is_file()
    except OSError as error:
        raise DataError("dataset.root", f"{printable(Path(entry.path))} cannot be followed ({error.strerror or error}); "
                        "valid: remove it, or make it a link to an image file") from None


def _holding(splits: tuple[str, str]) -> str:
    return " and ".join(f"{split}/<class>/" for split in dict.fromkeys(splits))


def _class_files(root: Path, split: str, splits: tuple[str, str]) -> dict[str, list[Path]]:
    folder = root / split
    if not folder.is_dir():
        raise DataError("dataset.root", f"{printable(folder)} is missing; valid: {printable(root)} holding "
                        f"{_holding(splits)}")
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataError("dataset.root", f"{printable(folder)} has no class folders; valid: "
                        f"{printable(folder)}/<class>/<image files>")
    files = {c: _image_files(folder / c) for c in classes}
    for c, paths in files.items():
        if not paths:
            raise DataError("dataset.root", f"class folder {printable(folder / c)} is empty; every class needs at least one "
                            "image")
    return files


def _labels(files: dict[str, list[Path]]) -> torch.Tensor:
    counts = [len(class_paths) for class_paths in files.values()]
    return torch.from_numpy(np.repeat(np.arange(len(files), dtype=np.int64), counts))


def _file_data(files: dict[str, list[Path]], image_size: int) -> FileData:
    paths = [path for class_paths in files.values() for path in class_paths]
    for path in paths:  # headers only (~0.1 ms a file): a non-image or a bomb is named now, not in an epoch's middle
        _header_size(path)
    return FileData(paths, _labels(files), list(files), image_size)


# --- auto -------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class StorageChoice:
    storage: str  # memory or stream
    note: str     # what auto chose and why, said once by the run ("" when the config chose)


def choose_storage(root: Path, *, storage: str, image_size: int, memory_limit_gb: float, train_size: int | None,
                   test_size: int | None, splits: tuple[str, str] = SPLITS) -> StorageChoice:
    """`auto`: memory when the decoded dataset fits dataset.memory_limit_gb and a sample of the images is about
    image_size already (within ABOUT_THE_SIZE); stream otherwise."""
    if storage != "auto":
        return StorageChoice(storage, "")
    files = find_class_files(root, splits)
    counts = [sum(map(len, split_files.values())) for split_files in files]
    count = min(counts[0], train_size or counts[0]) + min(counts[1], test_size or counts[1])
    decoded_gb = count * 3 * image_size * image_size / 1e9
    paths = [p for class_paths in files[0].values() for p in class_paths]
    sample = paths[::max(1, len(paths) // SIZE_SAMPLE)][:SIZE_SAMPLE]
    sides = [side for path in sample for side in _header_size(path)]
    about = all(image_size / ABOUT_THE_SIZE <= side <= image_size * ABOUT_THE_SIZE for side in sides)
    fits = decoded_gb <= memory_limit_gb
    chosen = "memory" if fits and about else "stream"
    size = f"sampled images have sides of {min(sides)}-{max(sides)} px, " + \
        (f"about image_size ({image_size})" if about else f"not within {ABOUT_THE_SIZE:g}x of image_size ({image_size})")
    memory = (f"{count:,} images at {image_size} px take {decoded_gb:.2f} GB decoded, "
              f"{'within' if fits else 'over'} dataset.memory_limit_gb={memory_limit_gb:g}")
    return StorageChoice(chosen, f"dataset.storage=auto chose {chosen}: {size}; {memory} (set dataset.storage=memory "
                         "or stream to choose)")


def _header_size(path: Path) -> tuple[int, int]:
    try:
        return read_header(path)
    except ImageFileError as error:
        raise DataError("dataset.root", f"{error}") from None


# --- memory: decoded once, cached ------------------------------------------------------------------------------

def check_cache_dir(root: Path, cache_dir: Path) -> None:
    """The cache's place, checked like a run directory's: not inside the dataset (its files would become a class),
    not inside a run or sweep (they are theirs), and a folder augrun can write (or one it wrote before)."""
    from augrun import rundir
    cache, data = Path(os.path.abspath(cache_dir)), Path(os.path.abspath(root))
    if cache == data or data in cache.parents:
        raise DataError("dataset.cache_dir", f"{printable(cache_dir)} is inside the dataset folder {printable(root)}, "
                        "whose folders are its splits and classes; valid: a folder outside it (the default: "
                        f"{printable(default_cache_dir())})")
    rundir.check_output_place(cache, "dataset.cache_dir")
    existing = next((p for p in (cache, *cache.parents) if os.path.exists(p)), None)
    if existing is not None and (not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK)):
        why = "is not a folder" if not existing.is_dir() else "is not writable"
        raise DataError("dataset.cache_dir", f"{printable(existing)} {why}; valid: a folder augrun can write its "
                        "decoded copy of the images in")


def _cache_folder(root: Path, cache_dir: Path | None) -> Path:
    """One folder per dataset folder (by its absolute path) in the cache directory: its stale files can be removed
    without touching another dataset's."""
    resolved = str(Path(root).resolve())
    return (cache_dir or default_cache_dir()) / f"imagefolder-{hashlib.sha1(resolved.encode()).hexdigest()[:16]}"


SAMPLED_BYTES = 4096  # of each file's head and tail, in the cache's key: all of a small image (CIFAR's JPEGs: ~900 bytes)


def _fingerprint(files: dict[str, list[Path]], image_size: int) -> str:
    """Changes when any file is added, removed, renamed, resized, touched, or rewritten with the same size and time
    (`cp -p`, `rsync -a`, `tar x`): its head and tail bytes are in the key too. Then the cache is rebuilt."""
    digest = hashlib.blake2b(f"v2 {image_size}".encode(), digest_size=16)
    for c, paths in files.items():
        for p in paths:
            with open(p, "rb") as file:
                stat = os.fstat(file.fileno())
                head = file.read(SAMPLED_BYTES)
                if stat.st_size > 2 * SAMPLED_BYTES:
                    file.seek(-SAMPLED_BYTES, os.SEEK_END)
                tail = file.read(SAMPLED_BYTES)
            digest.update(f"{c}/{p.name} {stat.st_size} {stat.st_mtime_ns}\n".encode())
            digest.update(head)
            digest.update(tail)
    return digest.hexdigest()


def _cached_decode(cache_dir: Path, split: str, files: dict[str, list[Path]], image_size: int) -> ImageData:
    cache = cache_dir / f"{split}-{image_size}-{_fingerprint(files, image_size)}.pt"
    if cache.is_file():
        cached = _read_cache(cache)
        if cached is not None:
            return cached
        print(f"augrun: warning: the decoded copy {printable(cache)} is damaged; decoding the folder again",
              file=sys.stderr)
    data = _decode(files, image_size)
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        for stale in cache_dir.glob(f"{split}-{image_size}-*.pt"):
            stale.unlink()
        with atomic_open(cache) as file:
            torch.save({"images": data.images, "labels": data.labels, "classes": data.classes,
                        "digest": _pixels_digest(data.images)}, file)
    except (OSError, RuntimeError) as error:  # RuntimeError: torch's writer on a full disk
        print(f"augrun: warning: cannot keep a decoded copy in {printable(cache_dir)} ({error}); the folder is "
              "decoded at every start", file=sys.stderr)
    return data


def _read_cache(cache: Path) -> ImageData | None:
    """The cached split, verified against the digest of its pixels stored with it; None when it cannot be trusted."""
    try:
        saved = torch.load(cache, weights_only=True)
        if saved.get("digest") != _pixels_digest(saved["images"]):
            return None
        return ImageData(saved["images"], saved["labels"], list(saved["classes"]))
    except Exception:  # noqa: BLE001 - a damaged file makes torch raise almost any type: decode again
        return None


def _pixels_digest(images: torch.Tensor) -> str:
    return hashlib.blake2b(images.contiguous().numpy().tobytes(), digest_size=16).hexdigest()


def _decode(files: dict[str, list[Path]], image_size: int) -> ImageData:
    paths = [path for class_paths in files.values() for path in class_paths]
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
    return ImageData(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), _labels(files), list(files))


_DECODE_CHUNK = 1024  # images per task of the decoding processes


def _decoder_signal_handlers() -> None:
    """A forked decoding process inherits augrun's SIGTERM handler, which only sets a flag: then the pool could not
    stop it. SIGTERM ends it again; Ctrl-C (SIGINT, sent to the whole process group) and Slurm's time-limit warning
    are left to the main process."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    for signum in signals.IGNORED_BY_WORKERS:
        signal.signal(signum, signal.SIG_IGN)


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
