"""Optimizers and per-step learning-rate schedules from plain arguments, registered by the names configs use."""
from __future__ import annotations

import math

import torch
from torch import nn

from augrun.registry import Registry

OPTIMIZERS = Registry("optim.name", "optimizer")
SCHEDULES = Registry("sched.name", "schedule")


@OPTIMIZERS.register("adam")
def adam(params, *, lr: float, weight_decay: float, momentum: float, nesterov: bool) -> torch.optim.Optimizer:
    # momentum is Adam's beta1 so both optimizers share one schema; Adam has no Nesterov variant here
    return torch.optim.Adam(params, lr=lr, betas=(momentum, 0.999), weight_decay=weight_decay)


@OPTIMIZERS.register("sgd")
def sgd(params, *, lr: float, weight_decay: float, momentum: float, nesterov: bool) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=nesterov and momentum > 0,
                           weight_decay=weight_decay)


@OPTIMIZERS.register("adamw")
def adamw(params, *, lr: float, weight_decay: float, momentum: float, nesterov: bool) -> torch.optim.Optimizer:
    # decoupled weight decay (Loshchilov & Hutter), as DeiT and timm train ViTs; params arrive as decay groups
    return torch.optim.AdamW(params, lr=lr, betas=(momentum, 0.999), weight_decay=weight_decay)


# optimizers whose weight decay skips norms, biases and the model's own exceptions (timm's rule)
DECAY_GROUPS = {"adamw"}


def decay_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """The parameters as two groups, as timm's param_groups_weight_decay makes them: no decay for one-dimensional
    ones (norm weights, biases) and those the model names in no_weight_decay() (a ViT's position embedding and class
    token), weight_decay for the rest."""
    skip = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            (no_decay if parameter.ndim <= 1 or name.endswith(".bias") or name in skip else decay).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(name: str, model: nn.Module, *, lr: float, weight_decay: float, momentum: float,
                    nesterov: bool) -> torch.optim.Optimizer:
    builder = OPTIMIZERS.get(name)
    params = decay_groups(model, weight_decay) if name in DECAY_GROUPS else model.parameters()
    return builder(params, lr=lr, weight_decay=weight_decay, momentum=momentum, nesterov=nesterov)


@SCHEDULES.register("none")
def constant(optimizer, *, lr: float, total: int, warmup: int, pct_start: float):
    return None  # the book's constant lr: no scheduler to step


@SCHEDULES.register("onecycle")
def onecycle(optimizer, *, lr: float, total: int, warmup: int, pct_start: float):
    if math.isclose(pct_start * total, 1.0):  # torch divides by pct_start * total - 1: peak at step 0 instead
        pct_start = (1 - 1e-6) / total
    return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=total, pct_start=pct_start)


@SCHEDULES.register("cosine")
def cosine(optimizer, *, lr: float, total: int, warmup: int, pct_start: float):
    def factor(step: int) -> float:
        if step < warmup:  # linear warmup reaches lr at the end of the warmup steps
            return (step + 1) / warmup
        progress = (step - warmup) / max(total - warmup, 1)
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def build_scheduler(name: str, optimizer: torch.optim.Optimizer, *, lr: float, epochs: int, steps_per_epoch: int,
                    warmup_epochs: int = 0, pct_start: float = 0.25):
    """A scheduler stepped once per training step, or None for the book's constant lr."""
    total = max(epochs * steps_per_epoch, 1)
    warmup = min(warmup_epochs * steps_per_epoch, total - 1)
    return SCHEDULES.get(name)(optimizer, lr=lr, total=total, warmup=warmup, pct_start=pct_start)
