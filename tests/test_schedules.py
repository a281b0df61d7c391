"""Learning-rate schedules, optimizers, label smoothing and per-dataset normalisation, from the real configs."""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch
import torchvision.transforms.v2 as T

from augrun.augment.cpu import build_test_transform, build_train_transform
from augrun.augment.ops import parse_train_pipeline
from augrun.batches import BatchFinisher
from augrun.cli import main
from augrun.compose import to_train_config
from augrun.config import ConfigError
from augrun.optim import build_optimizer, build_scheduler
from conftest import compose_train, read_metrics


def sgd(lr: float = 0.1, **kwargs) -> torch.optim.Optimizer:
    options = dict(lr=lr, weight_decay=5e-4, momentum=0.9, nesterov=True) | kwargs
    return build_optimizer("sgd", [torch.nn.Parameter(torch.zeros(2))], **options)


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
        optimizer = build_optimizer(o.name, [torch.nn.Parameter(torch.zeros(2))], lr=o.lr,
                                    weight_decay=o.weight_decay, momentum=o.momentum, nesterov=o.nesterov)
        group = optimizer.param_groups[0]
        assert type(optimizer) is cls and group["lr"] == o.lr and group["weight_decay"] == o.weight_decay
        if name == "sgd":
            assert (group["momentum"], group["nesterov"]) == (0.9, True)
        else:
            assert group["betas"] == (0.9, 0.999)  # momentum is Adam's beta1


# --- label smoothing ----------------------------------------------------------------------------------------------

def test_label_smoothing_composes_and_is_range_checked():
    assert to_train_config(compose_train("trainer.label_smoothing=0.1")).trainer.label_smoothing == 0.1
    assert to_train_config(compose_train()).trainer.label_smoothing == 0.0  # the book: off
    with pytest.raises(ConfigError, match="trainer.label_smoothing"):
        to_train_config(compose_train("trainer.label_smoothing=1.0"))


def test_label_smoothing_reaches_the_loss(tmp_path: Path, monkeypatch):
    built = []

    class RecordingLoss(torch.nn.CrossEntropyLoss):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            built.append(self)

    monkeypatch.setattr(torch.nn, "CrossEntropyLoss", RecordingLoss)
    monkeypatch.setattr(sys, "argv", list(sys.argv))  # run_hydra replaces sys.argv
    run_dir = tmp_path / "run"
    main(["train", "experiment=smoke", f"hydra.run.dir={run_dir}", "trainer.label_smoothing=0.1", "aug=none",
          "trainer.workers=0", "dataset.train_size=64", "dataset.test_size=32", "trainer.batch_size=32"])
    assert [loss.label_smoothing for loss in built] == [0.1]
    assert len(read_metrics(run_dir)) == 1


# --- flip test-time augmentation -------------------------------------------------------------------------------------

class LeftHeavy(torch.nn.Module):
    """Two classes on 1x2 images [a, b]: logits (2a, b). Mirroring swaps a and b, so plain and flip-tta predictions
    differ in a way that can be worked out by hand."""

    def forward(self, images):
        a, b = images[:, 0, 0, 0], images[:, 0, 0, 1]
        return torch.stack([2 * a, b], dim=1)


def test_flip_tta_scores_the_sum_of_logits_of_image_and_mirror():
    from augrun.engine import evaluate
    pixels = [[0.1, 0.5], [0.5, 0.1], [0.3, 0.9], [0.2, 0.3], [0.1, 0.4]]
    labels = torch.tensor([1, 0, 0, 0, 0])
    # plain logits (2a, b): argmax 1, 0, 1, 0, 1 -> right on images 0, 1, 3
    # tta logits (2a + 2b, b + a): class 0 for all five -> right on images 1, 2, 3, 4
    images = torch.tensor(pixels).view(5, 1, 1, 2)
    batches = [(images[:3], labels[:3]), (images[3:], labels[3:])]
    device = torch.device("cpu")
    assert evaluate(LeftHeavy(), batches, amp_dtype=None, device=device) == {"test_acc": 3 / 5}
    assert evaluate(LeftHeavy(), batches, amp_dtype=None, device=device, flip_tta=True) == \
        {"test_acc": 3 / 5, "test_acc_tta": 4 / 5}


def test_flip_tta_and_eval_every_are_logged(tmp_path: Path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", list(sys.argv))  # run_hydra replaces sys.argv
    run_dir = tmp_path / "run"
    main(["train", "experiment=smoke", f"hydra.run.dir={run_dir}", "trainer.tta=flip", "trainer.eval_every=2",
          "trainer.epochs=3", "trainer.workers=0", "dataset.train_size=64", "dataset.test_size=32",
          "trainer.batch_size=32"])
    records = read_metrics(run_dir)
    # evaluated after epoch 2 (every 2nd) and epoch 3 (the last); epoch 1 logs null test metrics
    assert [(r["test_acc"] is None, r["test_acc_tta"] is None) for r in records] == [(True, True), (False, False),
                                                                                     (False, False)]
    assert all(0 <= r["test_acc_tta"] <= 1 for r in records[1:])
    rows = (run_dir / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    assert header[header.index("test_acc") + 1] == "test_acc_tta"
    assert rows[1].split(",")[header.index("test_acc")] == ""
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["final"]["test_acc_tta"] == records[-1]["test_acc_tta"]
    assert summary["best_test_acc"] == max(records[1]["test_acc"], records[2]["test_acc"])
    lines = [line.split() for line in capsys.readouterr().out.splitlines()]
    header = next(line for line in lines if line[:1] == ["epoch"])
    first_row = next(line for line in lines if line[:1] == ["1"])
    # the console's epoch-1 row has no test numbers
    assert first_row[header.index("test_acc")] == first_row[header.index("test_acc_tta")] == "-"
    with pytest.raises(ConfigError, match="trainer.tta: got 'mirror'; valid: none, flip"):
        to_train_config(compose_train("trainer.tta=mirror"))
    with pytest.raises(ConfigError, match="trainer.eval_every: got 0; must be >= 1"):
        to_train_config(compose_train("trainer.eval_every=0"))
    book = to_train_config(compose_train()).trainer
    assert (book.tta, book.eval_every) == ("none", 1)  # the book: no tta, a test accuracy every epoch


# --- per-dataset normalisation ------------------------------------------------------------------------------------

def test_cifar10_normalisation_constants():
    d = to_train_config(compose_train("dataset=cifar10")).dataset
    assert d.mean == pytest.approx([0.4914, 0.4822, 0.4465]) and d.std == pytest.approx([0.2470, 0.2435, 0.2616])
    assert not d.normalize  # the book does not normalise; experiment=fast does
    assert to_train_config(compose_train("experiment=fast")).dataset.normalize


@pytest.mark.parametrize("dataset, size, channels", [("cifar10", 32, 3), ("cifar100", 32, 3), ("fashion_mnist", 28, 1)])
def test_dataset_sizes_and_channel_counts(dataset, size, channels):
    d = to_train_config(compose_train(f"dataset={dataset}", "dataset.normalize=true")).dataset
    assert d.name == dataset and d.image_size == size
    assert len(d.mean) == len(d.std) == channels and all(0 < s < 1 for s in d.std) and all(0 < m < 1 for m in d.mean)


@pytest.mark.parametrize("dataset, size, channels", [("cifar10", 32, 3), ("cifar100", 32, 3), ("fashion_mnist", 28, 1)])
def test_both_backends_normalise_with_the_datasets_constants(dataset, size, channels):
    from PIL import Image
    d = to_train_config(compose_train(f"dataset={dataset}", "dataset.normalize=true", "aug=standard")).dataset
    image = Image.new("RGB" if channels == 3 else "L", (size, size), (255, 255, 255) if channels == 3 else 255)
    expected = (1 - torch.tensor(d.mean)) / torch.tensor(d.std)  # a white image, per channel
    test_out = build_test_transform(mean=d.mean, std=d.std)(image)
    assert test_out.shape == (channels, size, size)
    assert torch.allclose(test_out[:, 0, 0], expected, atol=1e-6)
    train = build_train_transform(parse_train_pipeline(
        to_train_config(compose_train(f"dataset={dataset}", "aug=standard")).aug.train), mean=d.mean, std=d.std)
    assert type(train.transforms[-1]) is T.Normalize and list(train.transforms[-1].mean) == pytest.approx(d.mean)
    finish = BatchFinisher(device=torch.device("cpu"), mean=d.mean, std=d.std)  # the gpu backend's normalisation
    images, _ = finish(torch.ones(2, channels, size, size), torch.zeros(2, dtype=torch.long), epoch=1, step=0,
                       normalize=True)
    assert torch.allclose(images[:, :, 0, 0], expected.expand(2, channels), atol=1e-6)
    assert not math.isnan(images.sum().item())
