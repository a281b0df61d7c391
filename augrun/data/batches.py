"""Batches for one epoch, from either augmentation backend, sharded over the ranks of a run.

Both backends index the same per-epoch plan (`epoch_plan`): global batches cut from a seeded permutation, each split
evenly over the ranks, so every image is used once per epoch whatever the process count. A batch source yields
(images, targets) already on the training device; `start_step` skips the steps a resumed run has already done.
"""
from __future__ import annotations

import multiprocessing
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence

import torch
from PIL import Image

from augrun import signals
from augrun.augment.pixels import to_float
from augrun.data.datasets import DataError, ImageData
from augrun.seeding import derive_seed, seed_batch_op_draws, seed_image_draws, seed_step_draws

Batch = tuple[torch.Tensor, torch.Tensor]
# Python versions whose forked children may inherit a held interpreter lock (CPython gh-112275: fixed in 3.11.10 and
# 3.12; 3.10 never got the fix)
FORK_UNSAFE_WITH_THREADS = sys.version_info < (3, 11, 10)
# what a worker started by the forkserver needs imported: imported once, in the server
WORKER_PRELOAD = ["torch", "torchvision", "augrun.data.batches", "augrun.data.streaming"]


# The longest a DataLoader worker may take for one batch: a worker stuck for good (a hung network file system) fails the
# run in one line after this, instead of a wait that no signal ends (the training loop acts on a signal between
# batches). Far above any real batch: a worker's first, which waits for a forkserver to import torch, takes seconds.
WORKER_BATCH_TIMEOUT_S = 600.0


def worker_start_method():
    """How DataLoader workers start. Forked where the OS can: a rank started by spawn would otherwise spawn its workers
    too, and each spawned worker spends seconds importing torch again, every epoch. But a fork from a process whose
    other threads run Python code can leave the child holding an interpreter lock that no thread will release
    (gh-112275): a worker that never starts, and a run that hangs. A DDP rank is such a process (its process group's
    threads), so on the Pythons concerned its workers come from a forkserver: a process with no other threads, that
    imported torch once and forks each worker from there."""
    if "fork" not in multiprocessing.get_all_start_methods():
        return None
    if FORK_UNSAFE_WITH_THREADS and torch.distributed.is_available() and torch.distributed.is_initialized():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(WORKER_PRELOAD)
        return context
    return "fork"
# augrun warns once per run when workers outnumber cores; torch would repeat it for every DataLoader of every epoch
warnings.filterwarnings("ignore", message="This DataLoader will create")


def epoch_plan(num_samples: int, batch_size: int, *, seed: int, epoch: int, rank: int = 0, world_size: int = 1,
               shuffle: bool = True, drop_last: bool = False, repeats: int = 1) -> list[torch.Tensor]:
    """This rank's image indices for each step of an epoch. `batch_size` is the global batch.

    A final global batch smaller than the world size cannot give every rank an image, so it is dropped (at most
    world_size - 1 images an epoch); `drop_last` drops any incomplete final batch (a fixed shape for torch.compile).

    `repeats` (aug.repeats, DeiT's repeated augmentation): each drawn image comes `repeats` times in a row, so its
    copies share a batch, and the epoch keeps its length (about num_samples / repeats images, each `repeats` times).
    A copy's index is its image's plus copy * num_samples: its draws are seeded by that number, so the copies differ;
    `image_index` gives the image back.
    """
    if shuffle:
        order = torch.randperm(num_samples, generator=torch.Generator().manual_seed(derive_seed(seed, "order", epoch)))
    else:
        order = torch.arange(num_samples)
    if repeats > 1:
        drawn = order[:-(-num_samples // repeats)]
        copies = torch.arange(repeats).repeat(len(drawn)) * num_samples
        order = (drawn.repeat_interleave(repeats) + copies)[:num_samples]
    plan = []
    for start, length in zip(range(0, num_samples, batch_size), global_batch_lengths(num_samples, batch_size, world_size,
                                                                                 drop_last)):
        plan.append(order[start:start + length].tensor_split(world_size)[rank])
    return plan


def global_batch_lengths(num_samples: int, batch_size: int, world_size: int, drop_last: bool) -> list[int]:
    """The images of each global batch of an epoch plan, every rank's together."""
    lengths = []
    for start in range(0, num_samples, batch_size):
        length = min(batch_size, num_samples - start)
        if length < world_size or (drop_last and length < batch_size):
            break
        lengths.append(length)
    return lengths


def batch_lengths(num_samples: int, batch_size: int, *, rank: int = 0, world_size: int = 1, drop_last: bool = False,
                  **_plan_args) -> list[int]:
    """This rank's images in each batch of an epoch plan: the same every epoch (only the order is drawn). Takes a
    source's plan_args as they are."""
    # tensor_split gives the first (length % world_size) ranks one image more
    return [length // world_size + (rank < length % world_size)
            for length in global_batch_lengths(num_samples, batch_size, world_size, drop_last)]


def image_index(index: int, num_samples: int) -> int:
    """The image a plan's index (a repeated copy's included, see epoch_plan) stands for."""
    return index % num_samples


class BatchFinisher:
    """What both backends do to a batch once it is on the device: normalise, mix labels (MixUp/CutMix), lay out."""

    def __init__(self, *, device: torch.device, mean: Sequence[float] | None, std: Sequence[float] | None,
                 batch_ops: Sequence[Callable] = (), channels_last: bool = False, seed: int = 0, rank: int = 0):
        self.device = device
        self.mean = None if mean is None else torch.tensor(mean, device=device).view(1, -1, 1, 1)
        self.std = None if std is None else torch.tensor(std, device=device).view(1, -1, 1, 1)
        self.batch_ops = list(batch_ops)
        self.channels_last = channels_last
        self.seed, self.rank = seed, rank
        self.generator = torch.Generator(device=device)

    def __call__(self, images: torch.Tensor, labels: torch.Tensor, *, epoch: int, step: int,
                 normalize: bool) -> Batch:
        if normalize and self.mean is not None:
            images = (images - self.mean) / self.std
        targets = labels
        if self.batch_ops:
            seed_batch_op_draws(self.generator, seed=self.seed, epoch=epoch, step=step, rank=self.rank)
            for op in self.batch_ops:
                images, targets = op(images, labels, self.generator)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return images, targets


class AugmentedImages(torch.utils.data.Dataset):
    """Map-style dataset for the cpu backend, indexed by (epoch, image index).

    Each image's transform draws from torch's global RNG, seeded for that image (seeding.seed_image_draws), so the
    draws do not depend on which worker handles the image or how many workers there are.
    """

    def __init__(self, data: ImageData, transform: Callable, seed: int):
        pixels = data.images.permute(0, 2, 3, 1)  # PIL wants H, W, C
        self.pixels = (pixels[..., 0] if pixels.shape[-1] == 1 else pixels).contiguous().numpy()
        self._shared: torch.Tensor | None = None
        # ints: indexing a tensor and collating 0-d tensors costs ~0.7 us an image more; collated alike (int64)
        self.labels = data.labels.tolist()
        self.transform = transform
        self.seed = seed

    def __getstate__(self) -> dict:
        """Sent to a worker that is not forked (augrun.data.batches.worker_start_method): the pixels travel as shared
        memory, moved there once, instead of as a copy for every worker of every epoch. A forked worker shares them
        without this."""
        if self._shared is None:
            self._shared = torch.from_numpy(self.pixels).share_memory_()
            self.pixels = self._shared.numpy()
        return {key: value for key, value in self.__dict__.items() if key != "pixels"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.pixels = self._shared.numpy()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, int]:
        epoch, index = key
        seed_image_draws(seed=self.seed, epoch=epoch, index=index)  # a repeated copy's own index: its own draws
        index = image_index(index, len(self.labels))
        return self.transform(Image.fromarray(self.pixels[index])), self.labels[index]


def worker_batches(dataset: torch.utils.data.Dataset, epoch: int, start_step: int, *, plan_args: dict, workers: int,
                   device: torch.device, collate_fn: Callable | None = None) -> Iterator:
    """The epoch's batches from `dataset` indexed by (epoch, index), made by `workers` DataLoader processes (0: here),
    from step `start_step` of the epoch's plan, with the workers already started."""
    plan = epoch_plan(len(dataset), epoch=epoch, **plan_args)[start_step:]
    # tolist(): int() of each tensor element costs ~3 us: 30 ms per 10k images, before any worker starts
    keys = [[(epoch, i) for i in indices.tolist()] for indices in plan]
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=keys, num_workers=workers, collate_fn=collate_fn,
                                         pin_memory=device.type == "cuda",
                                         multiprocessing_context=worker_start_method() if workers else None,
                                         worker_init_fn=signals.leave_to_parent if workers else None,
                                         timeout=WORKER_BATCH_TIMEOUT_S if workers else 0)
    with signals.held_for_children():  # the workers start here: a signal to the group must wait for their handling
        return iter(loader)


class WorkerBatches:
    """cpu backend: torchvision transforms per image in DataLoader worker processes (the book's data path).

    The workers ignore SIGINT/SIGTERM sent to the process group (signals.leave_to_parent): the training process
    decides, checkpoints with their batches, then shuts them down.
    """

    def __init__(self, data: ImageData, transform: Callable, finish: BatchFinisher, *, batch_size: int, workers: int,
                 seed: int, rank: int, world_size: int, shuffle: bool, drop_last: bool = False, repeats: int = 1):
        self.dataset = AugmentedImages(data, transform, seed)
        self.finish = finish
        self.workers = workers
        self.plan_args = dict(batch_size=batch_size, seed=seed, rank=rank, world_size=world_size, shuffle=shuffle,
                              drop_last=drop_last, repeats=repeats)

    def batch_lengths(self) -> list[int]:
        return batch_lengths(len(self.dataset), **self.plan_args)

    def epoch(self, epoch: int, start_step: int = 0) -> Iterator[Batch]:
        batches = worker_batches(self.dataset, epoch, start_step, plan_args=self.plan_args, workers=self.workers,
                                 device=self.finish.device)
        for step, (images, labels) in enumerate(batches, start_step):
            images = images.to(self.finish.device, non_blocking=True)
            labels = labels.to(self.finish.device, non_blocking=True)
            # the workers already normalised (torchvision Normalize is part of their transform)
            yield self.finish(images, labels, epoch=epoch, step=step, normalize=False)


def check_fits_on_device(nbytes: int, free_bytes: int, device: str) -> None:
    """The gpu backend keeps the whole dataset on the device: refuse, in one line, a dataset that would leave less than
    a tenth of the free memory for the model, instead of failing later with an out-of-memory error."""
    if nbytes > 0.9 * free_bytes:
        gib = 2.0 ** 30
        raise DataError("aug.backend=gpu", f"the dataset ({nbytes / gib:.1f} GiB as uint8) does not fit in {device}'s free "
                        f"memory ({free_bytes / gib:.1f} GiB); valid: aug.backend=cpu, or a smaller dataset.image_size "
                        "or dataset.train_size")


class DeviceBatches:
    """gpu backend: the dataset lives on the device as uint8; each batch is indexed, then augmented per sample there.

    On CUDA the next batch is made on a side stream while the caller trains on the current one (`overlap`): the
    augmentation kernels then fill the SMs that the model's small late-layer kernels leave idle, instead of adding
    their time to every step. The batches are the same either way; only the order of kernels on the GPU changes.
    """

    def __init__(self, data: ImageData, pipeline: Callable | None, finish: BatchFinisher, *, batch_size: int, seed: int,
                 rank: int, world_size: int, shuffle: bool, drop_last: bool = False, overlap: bool = True,
                 repeats: int = 1):
        self.images = data.images.to(finish.device)
        self.labels = data.labels.to(finish.device)
        self.pipeline = pipeline
        self.finish = finish
        self.seed, self.rank = seed, rank
        self.generator = torch.Generator(device=finish.device)
        self.side_stream = torch.cuda.Stream(finish.device) if overlap and finish.device.type == "cuda" else None
        self.plan_args = dict(batch_size=batch_size, seed=seed, rank=rank, world_size=world_size, shuffle=shuffle,
                              drop_last=drop_last, repeats=repeats)

    def batch_lengths(self) -> list[int]:
        return batch_lengths(len(self.labels), **self.plan_args)

    def epoch(self, epoch: int, start_step: int = 0) -> Iterator[Batch]:
        plan = epoch_plan(len(self.labels), epoch=epoch, **self.plan_args)
        if start_step >= len(plan):
            return
        # one host-to-device copy of the epoch's indices, instead of one per step; pinned, so it does not wait for the GPU
        # repeated copies index their image (the step's generator gives each its own draws)
        indices = image_index(torch.cat(plan), len(self.labels))
        if self.finish.device.type == "cuda":
            indices = indices.pin_memory()
        on_device = indices.to(self.finish.device, non_blocking=True)
        if self.side_stream is not None:
            # read by batches made on the side stream: an epoch cut short (a signal) frees it while one may be pending
            on_device.record_stream(self.side_stream)
        per_step = on_device.split([len(step) for step in plan])

        def make(step: int) -> Batch:
            return self._batch(per_step[step], epoch, step)

        steps = range(start_step, len(plan))
        if self.side_stream is None:
            yield from map(make, steps)
        else:
            yield from _one_ahead(make, steps, self.side_stream)

    def _batch(self, indices: torch.Tensor, epoch: int, step: int) -> Batch:
        images = to_float(self.images[indices])  # bit-identical to the cpu backend's ToTensor
        if self.pipeline is not None:
            # reseeded per step (a host-side call, no sync) so a resumed run draws what the original drew
            seed_step_draws(self.generator, seed=self.seed, epoch=epoch, step=step, rank=self.rank)
            images = self.pipeline(images, self.generator)
        return self.finish(images, self.labels[indices], epoch=epoch, step=step, normalize=True)


def _one_ahead(make: Callable[[int], Batch], steps: range, side: torch.cuda.Stream) -> Iterator[Batch]:
    """Yields make(step) for each step, each made on the `side` stream while the caller's work for the previous
    batch runs on the current stream."""
    main = torch.cuda.current_stream(side.device)
    side.wait_stream(main)  # the dataset and this epoch's indices were copied on the current stream

    def launch(step: int) -> Batch:
        with torch.cuda.stream(side):
            return make(step)

    pending = launch(steps[0])
    for following in [*steps[1:], None]:
        main.wait_stream(side)  # batch `pending` is complete before the caller's kernels read it
        batch = pending
        for tensor in batch:
            # made on the side stream, used on the main one: the allocator must not hand its memory back to the
            # side stream until the main stream is done with it
            tensor.record_stream(main)
        if following is not None:
            pending = launch(following)
        yield batch
