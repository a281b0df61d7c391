"""The per-epoch plan and the gpu backend's batch source (DeviceBatches), on CPU and, where there is one, on CUDA."""
from __future__ import annotations

import pytest
import torch

from augrun.augment.gpu import ColorJitter, GpuPipeline, MixUp, RandomHorizontalFlip, RandomResizedCrop
from augrun.data.batches import BatchFinisher, DeviceBatches, batch_lengths, check_fits_on_device, epoch_plan
from augrun.data.datasets import DataError, make_synthetic

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_plan_uses_every_image_once_per_epoch_split_over_ranks(world_size: int):
    # 100 images, global batch 32: three full batches and a last one of 4 (>= world size: kept)
    plans = [epoch_plan(100, 32, seed=0, epoch=1, rank=r, world_size=world_size) for r in range(world_size)]
    assert len({len(plan) for plan in plans}) == 1
    for step in range(len(plans[0])):
        sizes = [len(plan[step]) for plan in plans]
        assert sum(sizes) == (32 if step < 3 else 4) and max(sizes) - min(sizes) <= 1
    everything = torch.cat([torch.cat(plan) for plan in plans])
    assert sorted(everything.tolist()) == list(range(100))


def test_plan_is_a_function_of_seed_and_epoch_and_drop_last_keeps_full_batches():
    same = epoch_plan(100, 32, seed=0, epoch=1)
    assert all(torch.equal(a, b) for a, b in zip(same, epoch_plan(100, 32, seed=0, epoch=1)))
    assert not torch.equal(same[0], epoch_plan(100, 32, seed=0, epoch=2)[0])
    assert not torch.equal(same[0], epoch_plan(100, 32, seed=1, epoch=1)[0])
    assert [len(b) for b in epoch_plan(100, 32, seed=0, epoch=1, drop_last=True)] == [32, 32, 32]
    # a last global batch too small to give each of 8 ranks an image is dropped
    assert len(epoch_plan(100, 32, seed=0, epoch=1, world_size=8)) == 3
    assert torch.equal(torch.cat(epoch_plan(10, 4, seed=0, epoch=1, shuffle=False)), torch.arange(10))


@pytest.mark.parametrize("world_size,drop_last", [(1, False), (3, False), (8, False), (3, True)])
def test_batch_lengths_are_each_ranks_plan_lengths(world_size: int, drop_last: bool):
    """The Updater divides each micro-batch's loss by its step's images from batch_lengths, never by looking ahead."""
    for rank in range(world_size):
        plan = epoch_plan(100, 32, seed=0, epoch=1, rank=rank, world_size=world_size, drop_last=drop_last)
        assert batch_lengths(100, 32, rank=rank, world_size=world_size, drop_last=drop_last) == [len(b) for b in plan]


def device_batches(device: torch.device, *, overlap: bool = True, batch_ops=()) -> DeviceBatches:
    data = make_synthetic(image_size=32, channels=3, num_classes=10, train_size=200, test_size=10).train
    pipeline = GpuPipeline([RandomHorizontalFlip(), ColorJitter(0.5, 0.5, 0.5, 0.5), RandomResizedCrop(32)])
    finish = BatchFinisher(device=device, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), batch_ops=batch_ops,
                           channels_last=device.type == "cuda", seed=3)
    return DeviceBatches(data, pipeline, finish, batch_size=64, seed=3, rank=0, world_size=1, shuffle=True,
                         overlap=overlap)


def assert_same_batches(first: list, second: list, atol: float = 0.0) -> None:
    assert len(first) == len(second)
    for (images_a, targets_a), (images_b, targets_b) in zip(first, second):
        torch.testing.assert_close(images_a, images_b, rtol=0, atol=atol)
        torch.testing.assert_close(targets_a, targets_b, rtol=0, atol=atol)


# Across CUDA streams cuBLAS may pick another kernel for RandomResizedCrop's matmuls (last-bit differences); a batch
# made over memory still in use would differ by whole pixel values, far beyond this.
ACROSS_STREAMS = 1e-5


def test_batches_are_seeded_per_step_so_a_resumed_epoch_continues_exactly():
    batches = device_batches(torch.device("cpu"))
    whole = list(batches.epoch(2))
    assert [len(t) for _, t in whole] == [64, 64, 64, 8] and batches.batch_lengths() == [64, 64, 64, 8]
    assert_same_batches(list(batches.epoch(2, start_step=2)), whole[2:])
    assert list(batches.epoch(2, start_step=4)) == []
    assert all(images.dtype == torch.float32 and images.shape[1:] == (3, 32, 32) for images, _ in whole)
    assert not torch.equal(whole[0][0], next(iter(batches.epoch(3)))[0])


def test_a_dataset_too_large_for_the_device_is_refused_in_one_line():
    check_fits_on_device(900, 1000, "cuda:0")  # leaves a tenth free: fine
    with pytest.raises(DataError) as error:
        check_fits_on_device(3 * 2**30, 2 * 2**30, "cuda:1")
    message = str(error.value)
    assert "\n" not in message and message.startswith("aug.backend=gpu: the dataset (3.0 GiB as uint8)")
    assert "cuda:1's free memory (2.0 GiB)" in message and "valid: aug.backend=cpu" in message


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("batch_ops", [(), (MixUp(num_classes=10),)], ids=["labels", "mixup"])
def test_cuda_side_stream_gives_the_batches_of_the_plain_path(batch_ops):
    device = torch.device("cuda")
    serial = device_batches(device, overlap=False, batch_ops=batch_ops)
    overlapped = device_batches(device, overlap=True, batch_ops=batch_ops)
    assert serial.side_stream is None and overlapped.side_stream is not None
    expected = [(images.clone(), targets.clone()) for images, targets in serial.epoch(1)]
    # hold every batch while the next ones are made, and write over each one after use as a training step's
    # in-place ops could: a batch handed out must never share memory with one being made
    got = []
    for images, targets in overlapped.epoch(1):
        got.append((images.clone(), targets.clone()))
        images.mul_(0)
    assert_same_batches(got, expected, ACROSS_STREAMS)
    assert_same_batches([(i.clone(), t.clone()) for i, t in overlapped.epoch(1, start_step=1)], expected[1:],
                        ACROSS_STREAMS)
    assert expected[0][0].is_contiguous(memory_format=torch.channels_last)
    # an epoch cut short (a stop signal) leaves a batch pending on the side stream: it must complete harmlessly
    cut = overlapped.epoch(2)
    next(cut)
    cut.close()
    torch.empty(1 << 20, device=device).fill_(-1)  # main-stream allocations that could reuse freed index memory
    torch.cuda.synchronize()
    assert_same_batches([(i.clone(), t.clone()) for i, t in overlapped.epoch(3)],
                        [(i.clone(), t.clone()) for i, t in serial.epoch(3)], ACROSS_STREAMS)


@pytest.mark.gpu
@needs_cuda
def test_cuda_batches_are_made_without_host_sync():
    batches = device_batches(torch.device("cuda"), batch_ops=(MixUp(num_classes=10),))
    list(batches.epoch(1))  # first epoch: cached constants copied to the device
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        source = batches.epoch(2)
        next(source)
        next(source)
    finally:
        torch.cuda.set_sync_debug_mode("default")


class Hangs(torch.utils.data.Dataset):
    """A dataset whose worker never returns a batch: a hung file system, as a DataLoader worker sees it."""

    def __len__(self) -> int:
        return 4

    def __getitem__(self, key):
        import time
        time.sleep(3600)


def test_a_worker_that_never_returns_a_batch_fails_the_run_instead_of_waiting_forever(monkeypatch):
    import time

    from augrun.data import batches
    monkeypatch.setattr(batches, "WORKER_BATCH_TIMEOUT_S", 2.0)
    began = time.monotonic()
    loader = batches.worker_batches(Hangs(), 1, 0, plan_args=dict(batch_size=2, seed=0, rank=0, world_size=1,
                                                                  shuffle=False), workers=1, device=torch.device("cpu"))
    with pytest.raises(RuntimeError, match="DataLoader timed out after 2.0 seconds"):
        next(loader)
    assert time.monotonic() - began < 30
    del loader  # its worker is ended with it
