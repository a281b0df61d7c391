#!/usr/bin/env python
"""Streamed photos: images/s of the data path, and peak memory against the dataset's size, in one process run.

Generated photo-like JPEGs (smooth colour fields with texture, 500x375 and other aspect ratios, quality 90), the book's
pipeline at 224 px (RandomHorizontalFlip, ColorJitter(0.5, 0.5, 0.5, 0.5), RandomResizedCrop(224, scale=(0.1, 1),
ratio=(0.5, 2))), the same DataLoader workers and batch size for every column:

  a  torchvision's ImageFolder + DataLoader with those transforms (v2, then ToImage + ToDtype(float32, scale=True))
  b  augrun's streamed cpu backend (streaming.StreamBatches: decode + the whole pipeline per image in the workers)
  c  augrun's streamed gpu backend on CPU tensors (workers: decode + RandomResizedCrop to uint8; the flip and
     ColorJitter batched in this process by augrun.augment.gpu, as aug.backend=gpu runs them)

Only the data path is timed (no model): each is a whole epoch, DataLoader start included, over the same files; the
columns run interleaved, epoch by epoch, in rotated order, and the median epoch is reported. Then `--memory`: peak
resident memory (this process and its largest worker) of one streamed epoch (gpu backend) over N and 8N images, each
in a fresh subprocess.

    python benchmarks/stream.py                    # 256 images, 2 workers, 5 rounds, + memory on 256 and 2048 images
    python benchmarks/stream.py --images 128 --rounds 3 --no-memory
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

SHAPES = [(500, 375), (375, 500), (500, 333), (400, 400), (640, 360)]  # (width, height)
SIZE = 224
BOOK = {"RandomHorizontalFlip": {"p": 0.5}, "ColorJitter": {"brightness": 0.5, "contrast": 0.5, "saturation": 0.5,
                                                            "hue": 0.5},
        "RandomResizedCrop": {"size": SIZE, "scale": [0.1, 1.0], "ratio": [0.5, 2.0]}}


def write_photos(root: Path, count: int) -> None:
    rng = np.random.default_rng(0)
    for i in range(count):
        width, height = SHAPES[i % len(SHAPES)]
        folder = root / "train" / f"class_{i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        field = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize((width, height), Image.BICUBIC)
        texture = rng.normal(0, 12, (height, width, 1))
        pixels = np.clip(np.asarray(field, dtype=np.float64) + texture, 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{i}.jpg", quality=90)
    for c in range(2):  # a test split, as augrun's folders need one
        (root / "test" / f"class_{c}").mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (SIZE, SIZE)).save(root / "test" / f"class_{c}" / "0.jpg")


def torchvision_epoch(root: Path, *, workers: int, batch_size: int, epoch: int, device: torch.device) -> int:
    import torchvision
    import torchvision.transforms.v2 as T
    transform = T.Compose([T.RandomHorizontalFlip(0.5), T.ColorJitter(0.5, 0.5, 0.5, 0.5),
                           T.RandomResizedCrop(SIZE, scale=(0.1, 1.0), ratio=(0.5, 2.0)), T.ToImage(),
                           T.ToDtype(torch.float32, scale=True)])
    dataset = torchvision.datasets.ImageFolder(str(root / "train"), transform=transform)
    torch.manual_seed(epoch)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers,
                                         pin_memory=device.type == "cuda")
    return on_device(loader, device)


def on_device(batches, device: torch.device) -> int:
    """Images of an epoch's batches, each moved to `device` as training would, counted once the device is done."""
    count = 0
    for images, labels in batches:
        images.to(device, non_blocking=True)
        count += len(labels)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return count


def augrun_sources(root: Path, backend: str, *, workers: int, batch_size: int, device: torch.device | None = None):
    from augrun.augment.ops import parse_train_pipeline
    from augrun.data.batches import BatchFinisher
    from augrun.data.datasets import load_dataset
    from augrun.data.streaming import stream_sources
    data = load_dataset("imagefolder", str(root), image_size=SIZE, storage="stream")
    device = device or torch.device("cpu")
    return stream_sources(data.train, data.test, backend=backend, train_ops=parse_train_pipeline(BOOK),
                          finish_train=BatchFinisher(device=device, mean=None, std=None),
                          finish_test=BatchFinisher(device=device, mean=None, std=None), mean=None, std=None,
                          eval_resize_ratio=0.875, workers=workers, drop_last=False, batch_size=batch_size, seed=0,
                          rank=0, world_size=1)[0]


def measure(args) -> dict:
    root = Path(args.dir) / f"photos-{args.images}"
    if not root.exists():
        write_photos(root, args.images)
    device = torch.device(args.device)
    sources = {name: augrun_sources(root, backend, workers=args.workers, batch_size=args.batch_size, device=device)
               for name, backend in (("b", "cpu"), ("c", "gpu"))}
    runs = {
        "a": lambda e: torchvision_epoch(root, workers=args.workers, batch_size=args.batch_size, epoch=e,
                                         device=device),
        "b": lambda e: on_device(sources["b"].epoch(e), device),
        "c": lambda e: on_device(sources["c"].epoch(e), device),
    }
    rates: dict[str, list[float]] = {name: [] for name in runs}
    names = list(runs)
    for round_number in range(args.rounds):
        order = names[round_number % 3:] + names[:round_number % 3]
        for name in order:
            began = time.perf_counter()
            count = runs[name](round_number + 1)
            rates[name].append(count / (time.perf_counter() - began))
        print(f"round {round_number + 1}: " + ", ".join(f"{n} {rates[n][-1]:.1f}" for n in names), flush=True)
    medians = {name: statistics.median(values) for name, values in rates.items()}
    return {"device": args.device, "images": args.images, "workers": args.workers, "batch_size": args.batch_size, "rates": rates,
            "medians": medians, "b/a": medians["b"] / medians["a"], "c/a": medians["c"] / medians["a"]}


def memory_child(args) -> None:
    """One streamed epoch (gpu backend, the workers decode); prints peak RSS of this process and its largest worker.
    The photos were written by the parent: writing them here would count the writer's memory."""
    root = Path(args.dir) / f"photos-{args.images}"
    source = augrun_sources(root, "gpu", workers=args.workers, batch_size=args.batch_size)
    count = sum(len(labels) for _, labels in source.epoch(1))
    decoded = sum(w * h * 3 for w, h in (SHAPES[i % len(SHAPES)] for i in range(args.images)))
    print(json.dumps({"images": count, "decoded_mb": decoded / 2**20,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "peak_worker_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--device", default="cpu", help="where the batches go (cuda: the gpu backend's device part runs "
                        "there, as in training)")
    parser.add_argument("--dir", default=None, help="where the JPEGs are written (default: a temporary folder)")
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--memory-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    if args.dir is None:
        args.dir = tempfile.mkdtemp(prefix="augrun-stream-")
    # as augrun train sets it: the cores the DataLoader workers leave (c's batched colour ops run in this process)
    torch.set_num_threads(max(1, (os.cpu_count() or 1) - args.workers))
    if args.memory_child:
        return memory_child(args)
    result = measure(args)
    medians = result["medians"]
    print(f"images/s (median of {args.rounds}, batches to {args.device}): a torchvision {medians['a']:.1f}, b augrun "
          f"cpu {medians['b']:.1f}, c augrun gpu backend {medians['c']:.1f}; b/a {result['b/a']:.2f}, "
          f"c/a {result['c/a']:.2f}; target b >= a: {'PASS' if result['b/a'] >= 1 else 'FAIL'}"
          + (f"; target c >= 2.5 a: {'PASS' if result['c/a'] >= 2.5 else 'FAIL'}" if args.device != "cpu" else ""))
    if not args.no_memory:
        result["memory"] = []
        for count in (args.images, 8 * args.images):
            if not (Path(args.dir) / f"photos-{count}").exists():
                write_photos(Path(args.dir) / f"photos-{count}", count)
            child = subprocess.run([sys.executable, __file__, "--memory-child", "--images", str(count), "--dir",
                                    args.dir, "--workers", str(args.workers), "--batch-size", str(args.batch_size)],
                                   capture_output=True, text=True, check=True, env={**os.environ})
            result["memory"].append(json.loads(child.stdout.strip().splitlines()[-1]))
            print("memory:", result["memory"][-1], flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
