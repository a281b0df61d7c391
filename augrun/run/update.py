"""How a training step's gradients become an update of the weights: the loss scale of fp16 (GradScaler), gradient
accumulation over micro-batches, clipping, the optimizer and schedule step, and the weights' moving average."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from augrun.run.ema import ModelEma


@dataclass
class Updater:
    model: nn.Module                      # the bare model: its parameters are clipped and averaged
    optimizer: torch.optim.Optimizer
    scheduler: object | None              # stepped once per optimizer step
    scaler: torch.amp.GradScaler | None   # fp16: the loss is scaled, and a step with inf/NaN gradients is skipped
    accumulate: int                       # micro-batches per optimizer step (trainer.accumulate_grad_batches)
    clip_grad_norm: float                 # 0: off (as every off switch of the config)
    ema: ModelEma | None
    batch_lengths: list[int]              # this rank's images in each micro-batch of an epoch

    @property
    def micro_steps(self) -> int:
        return len(self.batch_lengths)

    def step_images(self, step: int, images: int) -> int:
        """This rank's images in the optimizer step that micro-batch `step` (of `images` images) belongs to. Each
        micro-batch's loss sum is divided by it, so the step's gradient is the mean over its images however they were
        split: the epoch's last step may have fewer micro-batches, and its last micro-batch fewer images."""
        if self.accumulate == 1:  # the batch itself (so a caller without an epoch plan, like the benchmark, needs none)
            return images
        start = step // self.accumulate * self.accumulate
        return sum(self.batch_lengths[start:start + self.accumulate])

    def ends_step(self, step: int) -> bool:
        """Whether micro-batch `step` (of its epoch) is the last of its optimizer step."""
        return (step + 1) % self.accumulate == 0 or step + 1 == self.micro_steps

    def backward(self, objective: torch.Tensor) -> None:
        (self.scaler.scale(objective) if self.scaler is not None else objective).backward()

    def step(self) -> None:
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)  # clipping needs the true gradients
        if self.clip_grad_norm > 0:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.clip_grad_norm)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.scheduler is not None:
            self.scheduler.step()
        if self.ema is not None:
            self.ema.update()
