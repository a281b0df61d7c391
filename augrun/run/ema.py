"""An exponential moving average of a model's weights (trainer.ema), as timm's ModelEmaV3 and torchvision's reference
trainer keep one: after each optimizer step, average = decay * average + (1 - decay) * weights, over every floating
parameter; buffers (batch-norm statistics) are copied. With warmup the decay at update t is min(decay, (1 + t) /
(10 + t)), so that the first averages are not held near the random initial weights. Every rank keeps the same average
(DDP's weights are the same on every rank), evaluated like the weights (test_acc_ema) and saved in the checkpoint, so a
resumed run goes on with it exactly."""
from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn


class ModelEma:
    def __init__(self, model: nn.Module, *, decay: float, warmup: bool):
        self.module = copy.deepcopy(model).eval()
        for parameter in self.module.parameters():
            parameter.requires_grad_(False)
        self.decay, self.warmup, self.updates = decay, warmup, 0
        # paired once, not at every step: the floating parameters (averaged) and the buffers (copied)
        pairs = [(a, w) for a, w in zip(self.module.parameters(), model.parameters()) if a.is_floating_point()]
        self._averages, self._weights = [a for a, _ in pairs], [w for _, w in pairs]
        self._buffers, self._sources = list(self.module.buffers()), list(model.buffers())

    def current_decay(self) -> float:
        t = self.updates
        return min(self.decay, (1 + t) / (10 + t)) if self.warmup else self.decay

    @torch.no_grad()
    def update(self) -> None:
        """After an optimizer step of the model it was made from."""
        if self._averages:
            torch._foreach_lerp_(self._averages, self._weights, 1.0 - self.current_decay())
        if self._buffers:
            torch._foreach_copy_(self._buffers, self._sources)
        self.updates += 1

    def state_dict(self) -> dict[str, Any]:
        return {"weights": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state["weights"])
        self.updates = state["updates"]
