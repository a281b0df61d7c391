"""Batches of streamed photos: DataLoader workers decode each file every epoch and run the per-image part of the
pipeline (augrun.data.photos); for the gpu backend the device runs the rest on the whole batch.

The draws are those of the resident paths: an image's worker-side draws come from a generator seeded by (seed, "aug",
epoch, index) and the device's from (seed, "aug", epoch, step, rank), so the worker count does not matter and a run
resumed mid-epoch draws what the uninterrupted run drew. Memory stays flat whatever the dataset's size: only the
batches in flight are decoded.
"""
from __future__ import annotations

import ctypes
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch

from augrun.augment import cpu as cpu_backend
from augrun.augment.ops import OpSpec
from augrun.augment.pixels import to_float
from augrun.data.batches import Batch, BatchFinisher, batch_lengths, image_index, worker_batches
from augrun.data.decoding import ImageFileError, open_rgb
from augrun.data.photos import eval_transform, split_for_device, worker_transform
from augrun.data.splits import FileData
from augrun.errors import DataError
from augrun.seeding import seed_image_draws, seed_step_draws


def _heap_trimmer() -> Callable[[], object]:
    """glibc's malloc_trim(0), or a no-op where there is no glibc (macOS, musl).

    Why: the batch-sized tensors made here every step (uint8 batches, their float copies, the colour ops'
    intermediates) are freed into glibc's heap, which fragments: measured, a streamed epoch's resident memory grew by
    ~9 MB a batch (1.3 GB after 64 batches of 224 px), with the dataset's size. Trimming once a step hands the free
    pages back and keeps it flat; fixing glibc's mmap threshold instead also kept it flat but halved the gpu backend's
    rate on CPU tensors (every batch-sized tensor a fresh mmap, page-faulted in), trimming cost ~15 %."""
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return lambda *args: None


@dataclass(frozen=True)
class BadFile:
    """A worker's answer for a file it cannot decode: the message travels as data (a DataLoader would re-raise the
    worker's DataError as a RuntimeError holding a traceback), and the training process raises it as itself."""
    message: str


class StreamedImages(torch.utils.data.Dataset):
    """Map-style dataset of files, indexed by (epoch, image index), as the cpu backend's resident AugmentedImages."""

    def __init__(self, data: FileData, transform: Callable, seed: int):
        self.paths = [str(p) for p in data.paths]  # plain strings: cheap to copy into forked workers
        self.labels = data.labels
        self.transform = transform
        self.seed = seed

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, key: tuple[int, int]):
        epoch, index = key
        seed_image_draws(seed=self.seed, epoch=epoch, index=index)  # a repeated copy's own index: its own draws
        index = image_index(index, len(self.paths))
        try:
            photo = open_rgb(self.paths[index])
        except ImageFileError as error:
            return BadFile(str(error))
        return self.transform(photo), self.labels[index]


def collate(items: list) -> Batch | BadFile:
    bad = next((item for item in items if isinstance(item, BadFile)), None)
    return bad if bad is not None else torch.utils.data.default_collate(items)


class StreamBatches:
    """Batches of one split, decoded by `workers` DataLoader processes (0: in this process).

    `device_pipeline` (gpu backend) runs on each uint8 batch once it is on the device; `normalize`: the finisher
    normalises (the cpu backend's workers already did)."""

    def __init__(self, data: FileData, transform: Callable, finish: BatchFinisher, *, device_pipeline: Callable | None,
                 normalize: bool, batch_size: int, workers: int, seed: int, rank: int, world_size: int, shuffle: bool,
                 drop_last: bool = False, repeats: int = 1):
        self.dataset = StreamedImages(data, transform, seed)
        self.finish = finish
        self.device_pipeline = device_pipeline
        self.normalize = normalize
        self.workers = workers
        self.seed, self.rank = seed, rank
        self.generator = torch.Generator(device=finish.device)
        self.plan_args = dict(batch_size=batch_size, seed=seed, rank=rank, world_size=world_size, shuffle=shuffle,
                              drop_last=drop_last, repeats=repeats)
        # the fragmenting batch-sized tensors are host memory only when the batches stay on the CPU; on CUDA they live
        # on the device, and a heap scan per step would be pure cost
        self.trim = _heap_trimmer() if finish.device.type == "cpu" else (lambda *args: None)

    def batch_lengths(self) -> list[int]:
        return batch_lengths(len(self.dataset), **self.plan_args)

    def epoch(self, epoch: int, start_step: int = 0) -> Iterator[Batch]:
        batches = worker_batches(self.dataset, epoch, start_step, plan_args=self.plan_args, workers=self.workers,
                                 device=self.finish.device, collate_fn=collate)
        for step, batch in enumerate(batches, start_step):
            self.trim(0)  # the previous step's tensors are freed by now (see _heap_trimmer)
            if isinstance(batch, BadFile):
                raise DataError("dataset.root", batch.message)
            images, labels = batch
            images = images.to(self.finish.device, non_blocking=True)
            labels = labels.to(self.finish.device, non_blocking=True)
            if images.dtype == torch.uint8:
                images = to_float(images)  # bit-identical to the cpu backend's ToTensor
            if self.device_pipeline is not None:
                # reseeded per step, as the resident gpu backend: a resumed run draws what the original drew
                seed_step_draws(self.generator, seed=self.seed, epoch=epoch, step=step, rank=self.rank)
                images = self.device_pipeline(images, self.generator)
            yield self.finish(images, labels, epoch=epoch, step=step, normalize=self.normalize)


def stream_sources(train: FileData, test: FileData, *, backend: str, train_ops: Sequence[OpSpec],
                   finish_train: BatchFinisher, finish_test: BatchFinisher, mean, std, eval_resize_ratio: float,
                   workers: int, drop_last: bool, repeats: int = 1, **shared) -> tuple[StreamBatches, StreamBatches]:
    """The train and test sources of streamed photos for the resolved backend; `shared`: batch_size, seed, rank and
    world_size."""
    if backend == "gpu":
        from augrun.augment.gpu_pipeline import build_pipeline
        worker_ops, device_ops = split_for_device(train_ops)
        pipeline = build_pipeline(device_ops) if device_ops else None
        train_batches = StreamBatches(train, worker_transform(worker_ops), finish_train, device_pipeline=pipeline,
                                      normalize=True, workers=workers, shuffle=True, drop_last=drop_last,
                                      repeats=repeats, **shared)
    else:
        transform = cpu_backend.build_train_transform(train_ops, mean=mean, std=std)
        train_batches = StreamBatches(train, transform, finish_train, device_pipeline=None, normalize=False,
                                      workers=workers, shuffle=True, drop_last=drop_last, repeats=repeats, **shared)
    test_batches = StreamBatches(test, eval_transform(test.image_size, eval_resize_ratio), finish_test,
                                 device_pipeline=None, normalize=True, workers=workers, shuffle=False, **shared)
    return train_batches, test_batches
