"""One epoch of training and one evaluation pass. Metrics accumulate on the device; the host reads them rarely."""
from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import nullcontext
from dataclasses import dataclass

import torch
from torch import nn

from augrun.run import distributed
from augrun.run.update import Updater


class NonFiniteLoss(RuntimeError):
    def __init__(self, epoch: int, step: int):
        super().__init__(f"loss became non-finite at epoch {epoch}, step {step}; lower optim.lr or check the data "
                         "(the last good checkpoint is kept)")


@dataclass
class EpochState:
    """Where an epoch stands: the next step to run and the sums over the steps already run (on the device)."""
    sums: torch.Tensor  # float64 [loss sum, correct, images]
    next_step: int = 0
    seconds: float = 0.0  # training time already spent in this epoch (before a resume)

    @classmethod
    def fresh(cls, device: torch.device) -> EpochState:
        return cls(torch.zeros(3, dtype=torch.float64, device=device))


def autocast(device: torch.device, dtype: torch.dtype | None):
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()


def count_correct(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    labels = targets.argmax(dim=1) if targets.ndim == 2 else targets  # soft targets from MixUp/CutMix
    return (logits.argmax(dim=1) == labels).sum()


def train_one_epoch(model: nn.Module, batches: Iterable, state: EpochState, *, epoch: int, updater: Updater,
                    loss_fn: Callable, sum_loss: bool, world_size: int, amp_dtype: torch.dtype | None,
                    progress_every: int, on_progress: Callable[[int, torch.Tensor], None],
                    stop_requested: Callable[[], bool]) -> bool:
    """Run the remaining micro-batches of an epoch, updating `state` in place. Returns False when stopped early by a
    signal, which is only heard where an optimizer step ends (a checkpoint holds no half-accumulated gradients).

    `loss_fn` gives per-image losses. The objective is their mean over the optimizer step's images, or with `sum_loss`
    their sum (the book's l.sum().backward()); then it is scaled by the world size, since DDP averages gradients over
    the ranks. With accumulation, each micro-batch adds its share, so k micro-batches give the step one batch of all
    their images would, however unevenly the epoch's last images are split.
    """
    model.train()
    device = state.sums.device
    # the first non-finite step, tracked on the device: checking the loss on the host would stall the GPU every step
    first_bad_step = torch.full((), -1, dtype=torch.long, device=device)
    for step, (images, targets) in enumerate(batches, state.next_step):
        with autocast(device, amp_dtype):
            logits = model(images)
            loss_sum = loss_fn(logits, targets).sum()
        n = images.shape[0]
        updater.backward(loss_sum * world_size if sum_loss else loss_sum / updater.step_images(step, n))
        ends_step = updater.ends_step(step)
        if ends_step:
            updater.step()
        with torch.no_grad():
            # Python scalars, not new tensors: no host-to-device copy per step
            state.sums[0] += loss_sum.detach().double()
            state.sums[1] += count_correct(logits, targets)
            state.sums[2] += n
            bad = ~torch.isfinite(loss_sum.detach()) & (first_bad_step < 0)
            first_bad_step = torch.where(bad, step, first_bad_step)
        state.next_step = step + 1
        if state.next_step % progress_every == 0:
            _raise_if_non_finite(first_bad_step, epoch)
            on_progress(state.next_step, state.sums)
        if ends_step and stop_requested():
            return False
    _raise_if_non_finite(first_bad_step, epoch)
    return True


def _raise_if_non_finite(first_bad_step: torch.Tensor, epoch: int) -> None:
    bad_step = distributed.all_reduce_max(first_bad_step)
    if bad_step >= 0:
        raise NonFiniteLoss(epoch, bad_step + 1)


@torch.no_grad()
def evaluate(model: nn.Module, batches: Iterable, *, amp_dtype: torch.dtype | None, device: torch.device,
             flip_tta: bool = False, stop_requested: Callable[[], bool] = lambda: False) -> dict[str, float] | None:
    """Test accuracy over every rank's shard (each test image counted once): {"test_acc": ...}, and with `flip_tta`
    also "test_acc_tta", scoring each image by the sum of its logits and its horizontal mirror's. None when stopped
    by a signal part-way: a large test set must not hold a stop back for its whole pass."""
    model.eval()
    sums = torch.zeros(3, dtype=torch.float64, device=device)  # correct, correct with tta, images
    for images, labels in batches:
        if stop_requested():
            return None
        with autocast(device, amp_dtype):
            logits = model(images)
            if flip_tta:
                sums[1] += count_correct(logits.float() + model(images.flip(-1)).float(), labels)
        sums[0] += count_correct(logits, labels)
        sums[2] += labels.shape[0]
    correct, correct_tta, count = distributed.all_reduce_sum(sums).tolist()
    accuracy = {"test_acc": correct / max(count, 1.0)}
    if flip_tta:
        accuracy["test_acc_tta"] = correct_tta / max(count, 1.0)
    return accuracy
