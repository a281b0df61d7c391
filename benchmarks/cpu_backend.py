#!/usr/bin/env python
"""augrun's cpu backend against the book's data path: images/s side by side, no model.

Default mode: for each pipeline in conf/aug/ that the cpu backend runs, images/s of

  book    the d2l book's path: a Dataset over uint8 HWC numpy images (as torchvision's CIFAR10 serves them) doing
          Image.fromarray + torchvision.transforms (v1) Compose([the pipeline's classes..., ToTensor()]), in
          DataLoader(batch_size=256, num_workers=2, shuffle=True)
  augrun  the cpu backend exactly as `augrun train aug.backend=cpu` builds it: WorkerBatches (AugmentedImages, each
          image's draws seeded by its index) with build_train_transform, the same batch size and worker count

A round times one whole epoch of each path (a fresh iterator and fresh workers, as every epoch of training has), the
order alternating between rounds so that drift hits both alike; augrun/book is taken per round, the median reported.
Data: augrun's synthetic CIFAR-shaped images (32x32x3), or --image-folder (train/<class>/ files, decoded once by
augrun.data.datasets as training does).

    python benchmarks/cpu_backend.py                                # every pipeline, 10k synthetic images, ~5 min
    python benchmarks/cpu_backend.py --image-folder /tmp/cifar10-jpeg --pipelines flip_only flip_color_crop
    python benchmarks/cpu_backend.py --per-op                       # each op: torchvision v1 against v2
    python benchmarks/cpu_backend.py --per-item                     # one item of each path, one thread, no DataLoader

--per-op times each op per 32x32 image in one thread (a DataLoader worker's setting), v1 and v2 in interleaved
rounds, and checks whether they give identical outputs for the same seed; then the ToTensor routes against v1's
ToTensor. augrun.augment.cpu.FASTEST_CLASS records the choice these numbers led to.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch
import torchvision
import torchvision.transforms as V1
import torchvision.transforms.functional as F1
import torchvision.transforms.v2 as V2
from omegaconf import OmegaConf
from PIL import Image
from torch.utils.data import DataLoader, Dataset, default_collate

if importlib.util.find_spec("augrun") is None:  # run from a checkout without installing: the root holds the package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from augrun.augment import cpu as cpu_backend  # noqa: E402
from augrun.augment.ops import TENSOR_OPS, OpSpec, parse_train_pipeline, torchvision_arguments  # noqa: E402
from augrun.data.batches import AugmentedImages, BatchFinisher, WorkerBatches  # noqa: E402
from augrun.data.datasets import ImageData, load_dataset, make_synthetic  # noqa: E402

AUG_DIR = Path(__file__).resolve().parents[1] / "conf" / "aug"
IMAGE_SIZE, NUM_CLASSES, SEED = 32, 10, 0
# the book's pipelines, then the catalogue beyond it (ARCHITECTURE.md's order); others follow by name
PIPELINE_ORDER = {name: i for i, name in enumerate(
    ["none", "flip_only", "vflip", "crop", "brightness", "hue", "color_jitter", "flip_color_crop",
     "standard", "autoaugment", "randaugment", "trivialaugment", "augmix", "erasing"])}


# --- command line -------------------------------------------------------------------------------------------------

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pipelines", nargs="+", default=None, help="names in conf/aug/ (default: every one the cpu "
                        "backend runs)")
    parser.add_argument("--images", type=int, default=10_000, help="images per epoch (default 10000)")
    parser.add_argument("--image-folder", type=Path, default=None,
                        help="a folder holding train/<class>/<images> (e.g. the JPEG copy of CIFAR-10) instead of "
                             "synthetic images")
    parser.add_argument("--rounds", type=int, default=9, help="epochs of each path per pipeline (default 9)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers of both paths (default 2)")
    parser.add_argument("--per-op", action="store_true", help="each op, torchvision v1 against v2, per image")
    parser.add_argument("--per-item", action="store_true",
                        help="one item of each path per image, in this process, one thread (where the time goes)")
    return parser.parse_args(argv)


# --- pipelines ----------------------------------------------------------------------------------------------------

def cpu_pipelines() -> dict[str, dict]:
    """conf/aug/*.yaml's `train` mappings, resolved for a 32x32 dataset, the book's first; a pipeline whose per-image
    part repeats another's (mixup, cutmix: standard's; their batch op runs on the training device) is left out."""
    configs = {}
    for path in AUG_DIR.glob("*.yaml"):
        config = OmegaConf.merge({"dataset": {"image_size": IMAGE_SIZE}}, {"aug": OmegaConf.load(path)})
        configs[path.stem] = OmegaConf.to_container(config.aug, resolve=True)

    def listed(name: str) -> tuple:
        return bool(configs[name].get("batch")), PIPELINE_ORDER.get(name, len(PIPELINE_ORDER)), name

    pipelines: dict[str, dict] = {}
    for name in sorted(configs, key=listed):
        train = configs[name].get("train") or {}
        if train not in pipelines.values():
            pipelines[name] = train
    return pipelines


def book_transform(specs: list[OpSpec]) -> V1.Compose:
    """The book's Compose: torchvision v1 classes of the same names and arguments, tensor ops after ToTensor."""
    image_ops = [getattr(V1, s.name)(**torchvision_arguments(s.kwargs)) for s in specs if s.name not in TENSOR_OPS]
    tensor_ops = [getattr(V1, s.name)(**torchvision_arguments(s.kwargs)) for s in specs if s.name in TENSOR_OPS]
    return V1.Compose(image_ops + [V1.ToTensor()] + tensor_ops)


# --- data ---------------------------------------------------------------------------------------------------------

def training_images(args: argparse.Namespace) -> ImageData:
    if args.image_folder is None:
        return make_synthetic(image_size=IMAGE_SIZE, channels=3, num_classes=NUM_CLASSES, train_size=args.images,
                              test_size=1).train
    # decoded once and kept in memory, as `augrun train dataset=imagefolder` does for small images
    return load_dataset("imagefolder", str(args.image_folder), image_size=IMAGE_SIZE, train_size=args.images,
                        storage="memory").train


class BookImages(Dataset):
    """The book's training set, as torchvision's CIFAR10 serves it: HWC uint8 numpy -> PIL -> transform; int label."""

    def __init__(self, data: ImageData, transform: Callable):
        self.pixels = data.images.permute(0, 2, 3, 1).contiguous().numpy()
        self.labels = data.labels.tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        return self.transform(Image.fromarray(self.pixels[index])), self.labels[index]


# --- the side-by-side table ---------------------------------------------------------------------------------------

def cpu_seconds() -> float:
    """CPU time of this process and of its reaped children: an epoch's DataLoader workers, once they have exited."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def time_epoch(batches: Iterable) -> tuple[float, float]:
    """One whole epoch, from asking for its first batch (its workers start) to its last (they exit): images per
    second of wall time, and images per CPU-second of all its processes (what a busy machine changes least)."""
    wall, cpu, count = time.perf_counter(), cpu_seconds(), 0
    for images, _ in batches:
        count += len(images)
    return count / (time.perf_counter() - wall), count / (cpu_seconds() - cpu)


def compare_pipeline(args, data: ImageData, name: str, train: dict) -> dict:
    specs = parse_train_pipeline(train)
    book = DataLoader(BookImages(data, book_transform(specs)), batch_size=args.batch_size, shuffle=True,
                      num_workers=args.workers)
    finish = BatchFinisher(device=torch.device("cpu"), mean=None, std=None, seed=SEED)
    ours = WorkerBatches(data, cpu_backend.build_train_transform(specs), finish, batch_size=args.batch_size,
                         workers=args.workers, seed=SEED, rank=0, world_size=1, shuffle=True)
    book_epochs, our_epochs = [], []
    for round_ in range(args.rounds):  # the two paths alternate who goes first
        if round_ % 2 == 0:
            book_epochs.append(time_epoch(book))
        our_epochs.append(time_epoch(ours.epoch(round_)))
        if round_ % 2 == 1:
            book_epochs.append(time_epoch(book))
    ratios = [o[0] / b[0] for o, b in zip(our_epochs, book_epochs)]
    cpu_ratios = [o[1] / b[1] for o, b in zip(our_epochs, book_epochs)]
    return {"pipeline": name, "book": statistics.median(b[0] for b in book_epochs),
            "augrun": statistics.median(o[0] for o in our_epochs), "ratio": statistics.median(ratios),
            "ratio_min": min(ratios), "ratio_max": max(ratios), "cpu_ratio": statistics.median(cpu_ratios)}


def print_table(rows: list[dict]) -> None:
    print(f"\n{'pipeline':16} {'book img/s':>11} {'augrun img/s':>13} {'ratio':>6} {'(min-max)':>11} "
          f"{'cpu-time ratio':>15}")
    for row in rows:
        print(f"{row['pipeline']:16} {row['book']:11.0f} {row['augrun']:13.0f} {row['ratio']:6.2f} "
              f"{row['ratio_min']:5.2f}-{row['ratio_max']:<5.2f} {row['cpu_ratio']:15.2f}")


def run_table(args: argparse.Namespace) -> None:
    data = training_images(args)
    pipelines = cpu_pipelines()
    names = args.pipelines or list(pipelines)
    print(f"{len(data)} images ({'synthetic' if args.image_folder is None else args.image_folder}), batch "
          f"{args.batch_size}, {args.workers} workers, {args.rounds} rounds of one epoch per path; "
          "ratio = augrun/book, median of the rounds")
    rows = []
    for name in names:
        rows.append(compare_pipeline(args, data, name, pipelines[name]))
        row = rows[-1]
        print(f"  {name}: book {row['book']:.0f}, augrun {row['augrun']:.0f} img/s, ratio {row['ratio']:.2f}, "
              f"cpu-time ratio {row['cpu_ratio']:.2f}", flush=True)
    print_table(rows)


# --- per item, one thread -----------------------------------------------------------------------------------------

def interleaved_rates(candidates: dict[str, Callable[[int], object]], count: int, rounds: int) -> dict[str, float]:
    """Median calls/s of each candidate over `rounds` rounds, the candidates taking turns within each round."""
    rates: dict[str, list[float]] = {name: [] for name in candidates}
    for round_ in range(rounds):
        order = list(candidates)[round_ % len(candidates):] + list(candidates)[:round_ % len(candidates)]
        for name in order:
            function = candidates[name]
            start = time.perf_counter()
            for index in range(count):
                function(index)
            rates[name].append(count / (time.perf_counter() - start))
    return {name: statistics.median(values) for name, values in rates.items()}


def run_per_item(args: argparse.Namespace) -> None:
    torch.set_num_threads(1)  # a DataLoader worker's setting
    data = training_images(args)
    count = min(len(data), 2048)
    pipelines = cpu_pipelines()
    print(f"per item, one thread, {count} images, 7 interleaved rounds: items/s (collate: per image of a batch of "
          f"{args.batch_size})")
    print(f"{'pipeline':16} {'book':>8} {'augrun':>8} {'ratio':>6} {'book collate':>13} {'augrun collate':>15}")
    for name in args.pipelines or list(pipelines):
        specs = parse_train_pipeline(pipelines[name])
        book = BookImages(data, book_transform(specs))
        ours = AugmentedImages(data, cpu_backend.build_train_transform(specs), seed=SEED)
        rates = interleaved_rates({"book": lambda i: book[i], "augrun": lambda i: ours[(1, i)]}, count, rounds=7)
        batch = range(args.batch_size)
        collate = interleaved_rates({"book": lambda _: default_collate([book[i] for i in batch]),
                                     "augrun": lambda _: default_collate([ours[(1, i)] for i in batch])}, 8, rounds=7)
        print(f"{name:16} {rates['book']:8.0f} {rates['augrun']:8.0f} {rates['augrun'] / rates['book']:6.2f} "
              f"{collate['book'] * args.batch_size:13.0f} {collate['augrun'] * args.batch_size:15.0f}")


# --- per op, v1 against v2 ----------------------------------------------------------------------------------------

CROP = {"size": IMAGE_SIZE, "padding": 4, "pad_if_needed": False, "fill": 0, "padding_mode": "constant"}
# each registered op with the arguments conf/aug/ gives it (the ones no pipeline names: typical arguments)
PER_OP_CASES: list[tuple[str, str, dict]] = [
    ("RandomHorizontalFlip", "RandomHorizontalFlip", {"p": 0.5}),
    ("RandomVerticalFlip", "RandomVerticalFlip", {"p": 0.5}),
    ("ColorJitter brightness", "ColorJitter", {"brightness": 0.5, "contrast": 0, "saturation": 0, "hue": 0}),
    ("ColorJitter hue", "ColorJitter", {"brightness": 0, "contrast": 0, "saturation": 0, "hue": 0.5}),
    ("ColorJitter all four", "ColorJitter", {"brightness": 0.5, "contrast": 0.5, "saturation": 0.5, "hue": 0.5}),
    ("RandomResizedCrop", "RandomResizedCrop", {"size": IMAGE_SIZE, "scale": [0.1, 1.0], "ratio": [0.5, 2.0]}),
    ("RandomCrop pad 4", "RandomCrop", CROP),
    ("RandomGrayscale", "RandomGrayscale", {"p": 0.5}),
    ("RandomRotation", "RandomRotation", {"degrees": 15}),
    ("RandomAffine", "RandomAffine", {"degrees": 15, "translate": [0.1, 0.1], "scale": [0.9, 1.1]}),
    ("GaussianBlur", "GaussianBlur", {"kernel_size": 3, "sigma": [0.1, 2.0]}),
    ("AutoAugment", "AutoAugment", {"policy": "cifar10", "interpolation": "nearest", "fill": None}),
    ("RandAugment", "RandAugment", {"num_ops": 2, "magnitude": 9, "num_magnitude_bins": 31,
                                    "interpolation": "nearest", "fill": None}),
    ("TrivialAugmentWide", "TrivialAugmentWide", {"num_magnitude_bins": 31, "interpolation": "nearest", "fill": None}),
    ("AugMix", "AugMix", {"severity": 3, "mixture_width": 3, "chain_depth": -1, "alpha": 1.0, "all_ops": True,
                          "interpolation": "bilinear", "fill": None}),
    ("RandomErasing (tensor)", "RandomErasing", {"p": 0.5, "scale": [0.02, 0.33], "ratio": [0.3, 3.3], "value": 0}),
    ("Normalize (tensor)", "Normalize", {"mean": [0.4914, 0.4822, 0.4465], "std": [0.2470, 0.2435, 0.2616]}),
]
TENSOR_CASES = {"RandomErasing", "Normalize"}


def same_outputs(first: Callable, second: Callable, inputs: list, draws: int = 200) -> bool:
    """Whether two ops give the same output for the same seed, on `draws` images."""
    for index, image in enumerate(inputs[:draws]):
        outputs = []
        for op in (first, second):
            torch.manual_seed(index)
            out = op(image)
            outputs.append(torch.from_numpy(np.array(out)) if isinstance(out, Image.Image) else out)
        if not torch.equal(*outputs):
            return False
    return True


def to_tensor_routes() -> dict[str, Callable]:
    return {
        "v1 ToTensor": V1.ToTensor(),
        "F.pil_to_tensor(x).float().div(255)": lambda image: F1.pil_to_tensor(image).float().div(255),
        "v2 ToImage + ToDtype(scale=True)": V2.Compose([V2.ToImage(), V2.ToDtype(torch.float32, scale=True)]),
        "augrun cpu.ToTensor": cpu_backend.ToTensor(),
    }


def run_per_op(args: argparse.Namespace) -> None:
    torch.set_num_threads(1)  # a DataLoader worker's setting
    pixels = training_images(args).images[:512].permute(0, 2, 3, 1).contiguous().numpy()
    images = [Image.fromarray(p) for p in pixels]
    tensors = [V1.ToTensor()(image) for image in images]
    print(f"per op, one thread, {len(images)} {IMAGE_SIZE}x{IMAGE_SIZE} images (tensors for tensor ops), 7 interleaved "
          "rounds: images/s; identical = same output for the same seed on 200 images")
    print(f"{'op':24} {'v1':>9} {'v2':>9} {'v2/v1':>6}  identical")
    for label, name, kwargs in PER_OP_CASES:
        inputs = tensors if name in TENSOR_CASES else images
        v1, v2 = (getattr(module, name)(**torchvision_arguments(kwargs)) for module in (V1, V2))
        rates = interleaved_rates({"v1": lambda i: v1(inputs[i]), "v2": lambda i: v2(inputs[i])}, len(inputs), 7)
        print(f"{label:24} {rates['v1']:9.0f} {rates['v2']:9.0f} {rates['v2'] / rates['v1']:6.2f}  "
              f"{same_outputs(v1, v2, inputs)}")
    routes = to_tensor_routes()
    reference = routes["v1 ToTensor"]
    rates = interleaved_rates({label: (lambda i, f=f: f(images[i])) for label, f in routes.items()}, len(images), 7)
    print(f"\n{'ToTensor route':40} {'images/s':>9} {'x v1':>6}  bitwise v1")
    for label, route in routes.items():
        exact = all(torch.equal(route(image), reference(image)) for image in images)
        print(f"{label:40} {rates[label]:9.0f} {rates[label] / rates['v1 ToTensor']:6.2f}  {exact}")


# --- main ---------------------------------------------------------------------------------------------------------

def describe_machine() -> str:
    cpu = platform.processor() or "?"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    return (f"{cpu}, {os.cpu_count()} logical cores, load average {load}; torch {torch.__version__}, torchvision "
            f"{torchvision.__version__}, Pillow {Image.__version__}, Python {platform.python_version()}")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    print(describe_machine())
    if args.per_op:
        run_per_op(args)
    elif args.per_item:
        run_per_item(args)
    else:
        run_table(args)
    print(f"load average after: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
