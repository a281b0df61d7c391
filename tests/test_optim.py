"""Optimizers and per-step learning-rate schedules, built from plain arguments and from the real configs."""
from __future__ import annotations

import pytest
import torch
from helpers import compose_train

from augrun.config.compose import to_train_config
from augrun.errors import ConfigError
from augrun.models.optim import build_optimizer, build_scheduler


def sgd(lr: float = 0.1, **kwargs) -> torch.optim.Optimizer:
    options = dict(lr=lr, weight_decay=5e-4, momentum=0.9, nesterov=True) | kwargs
    return build_optimizer("sgd", torch.nn.ParameterList([torch.nn.Parameter(torch.zeros(2))]), **options)


def lr_per_step(optimizer, scheduler, steps: int) -> list[float]:
    """The lr each training step runs with: read before the step's scheduler.step(), as train_one_epoch does."""
    lrs = []
    for _ in range(steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


# --- schedules ------------------------------------------------------------------------------------------------------

def test_none_is_the_books_constant_lr():
    assert build_scheduler("none", sgd(), lr=0.1, epochs=3, steps_per_epoch=5) is None


def test_unknown_schedule_is_refused():
    with pytest.raises(ConfigError, match="sched.name"):
        build_scheduler("step", sgd(), lr=0.1, epochs=3, steps_per_epoch=5)


def test_cosine_warms_up_linearly_then_decays_to_zero():
    lr, epochs, steps, warmup_epochs = 0.1, 5, 10, 1
    optimizer = sgd(lr)
    scheduler = build_scheduler("cosine", optimizer, lr=lr, epochs=epochs, steps_per_epoch=steps,
                                warmup_epochs=warmup_epochs)
    total, warmup = epochs * steps, warmup_epochs * steps
    lrs = lr_per_step(optimizer, scheduler, total)
    assert lrs[0] == pytest.approx(lr / warmup)  # step 0 already trains, at lr / warmup_steps
    assert lrs[warmup - 1] == pytest.approx(lr)  # the end of the warmup reaches lr
    assert lrs[:warmup] == pytest.approx([lr * (s + 1) / warmup for s in range(warmup)])
    assert lrs[warmup] == pytest.approx(lr)  # the decay starts at lr
    assert lrs[warmup + (total - warmup) // 2] == pytest.approx(lr / 2)  # halfway through the decay
    assert lrs[-1] == pytest.approx(0.0, abs=lr * 1e-2)  # the last step runs at ~0
    decay = lrs[warmup:]
    assert all(a >= b for a, b in zip(decay, decay[1:]))


def test_cosine_without_warmup_starts_at_lr():
    optimizer = sgd(0.1)
    scheduler = build_scheduler("cosine", optimizer, lr=0.1, epochs=2, steps_per_epoch=10, warmup_epochs=0)
    lrs = lr_per_step(optimizer, scheduler, 20)
    assert lrs[0] == pytest.approx(0.1) and lrs[10] == pytest.approx(0.05)


def test_onecycle_peaks_at_pct_start():
    lr, epochs, steps, pct_start = 0.4, 4, 10, 0.25
    optimizer = sgd(lr)
    scheduler = build_scheduler("onecycle", optimizer, lr=lr, epochs=epochs, steps_per_epoch=steps,
                                pct_start=pct_start)
    total = epochs * steps
    lrs = lr_per_step(optimizer, scheduler, total)
    assert lrs[0] == pytest.approx(lr / 25)  # torch's div_factor
    peak = int(pct_start * total) - 1  # torch's OneCycleLR ends the rise at step pct_start * total - 1
    assert lrs.index(max(lrs)) == peak and max(lrs) == pytest.approx(lr)
    assert all(a < b for a, b in zip(lrs[:peak], lrs[1:peak + 1]))
    assert all(a > b for a, b in zip(lrs[peak:], lrs[peak + 1:]))
    assert lrs[-1] < lr / 25 / 100  # anneals far below the start (final_div_factor 1e4)


def test_onecycle_with_a_one_step_rise():
    optimizer = sgd(0.4)
    scheduler = build_scheduler("onecycle", optimizer, lr=0.4, epochs=2, steps_per_epoch=2, pct_start=0.25)
    lrs = lr_per_step(optimizer, scheduler, 4)
    assert max(lrs) == pytest.approx(0.4, rel=1e-3) and lrs[-1] < lrs[0]


@pytest.mark.parametrize("sched", ["cosine", "onecycle"])
def test_schedule_config_reaches_the_scheduler(sched):
    """The composed sched and optim groups, passed as the trainer passes them, give the peak lr where they say."""
    cfg = to_train_config(compose_train("optim=sgd", f"sched={sched}", "trainer.epochs=4"))
    optimizer = sgd(cfg.optim.lr)
    steps = 10
    scheduler = build_scheduler(cfg.sched.name, optimizer, lr=cfg.optim.lr, epochs=cfg.trainer.epochs,
                                steps_per_epoch=steps, warmup_epochs=cfg.sched.warmup_epochs,
                                pct_start=cfg.sched.pct_start)
    lrs = lr_per_step(optimizer, scheduler, cfg.trainer.epochs * steps)
    peak = cfg.sched.warmup_epochs * steps - 1 if sched == "cosine" else \
        int(cfg.sched.pct_start * cfg.trainer.epochs * steps) - 1
    assert max(lrs) == pytest.approx(cfg.optim.lr) and lrs[peak] == pytest.approx(cfg.optim.lr)


def test_fast_experiment_schedule_over_its_real_step_count():
    """experiment=fast on CIFAR-10: 50k / 512 -> 97 steps an epoch with compile's drop_last, 40 epochs."""
    cfg = to_train_config(compose_train("experiment=fast"))
    steps = 50_000 // cfg.trainer.batch_size
    optimizer = sgd(cfg.optim.lr)
    scheduler = build_scheduler(cfg.sched.name, optimizer, lr=cfg.optim.lr, epochs=cfg.trainer.epochs,
                                steps_per_epoch=steps, warmup_epochs=cfg.sched.warmup_epochs,
                                pct_start=cfg.sched.pct_start)
    lrs = lr_per_step(optimizer, scheduler, cfg.trainer.epochs * steps)
    assert lrs[0] == pytest.approx(cfg.optim.lr / 25) and max(lrs) == pytest.approx(0.4)
    assert abs(lrs.index(max(lrs)) - (cfg.sched.pct_start * len(lrs) - 1)) < 1  # a quarter of the steps rising


# --- optimizers ----------------------------------------------------------------------------------------------------

def test_sgd_sets_nesterov_momentum_and_weight_decay():
    group = sgd(0.4).param_groups[0]
    assert type(sgd()) is torch.optim.SGD
    assert (group["lr"], group["momentum"], group["nesterov"], group["weight_decay"]) == (0.4, 0.9, True, 5e-4)


def test_sgd_without_momentum_turns_nesterov_off():
    group = sgd(momentum=0.0).param_groups[0]
    assert group["momentum"] == 0.0 and group["nesterov"] is False  # torch refuses nesterov without momentum


def test_optim_configs_reach_the_optimizer():
    for name, cls in (("sgd", torch.optim.SGD), ("adam", torch.optim.Adam)):
        o = to_train_config(compose_train(f"optim={name}")).optim
        optimizer = build_optimizer(o.name, torch.nn.ParameterList([torch.nn.Parameter(torch.zeros(2))]), lr=o.lr,
                                    weight_decay=o.weight_decay, momentum=o.momentum, nesterov=o.nesterov)
        group = optimizer.param_groups[0]
        assert type(optimizer) is cls and group["lr"] == o.lr and group["weight_decay"] == o.weight_decay
        if name == "sgd":
            assert (group["momentum"], group["nesterov"]) == (0.9, True)
        else:
            assert group["betas"] == (0.9, 0.999)  # momentum is Adam's beta1
