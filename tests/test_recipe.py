"""The DeiT recipe's training parts: the weights' moving average, gradient accumulation, clipping, fp16's loss scale,
AdamW's decay groups; each checked against a hand computation, and together through a killed and resumed run."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import SMOKE, compose_train, read_metrics, run_augrun, without_timing
from torch import nn

from augrun.cli import main
from augrun.config.compose import to_train_config
from augrun.models.networks import build_model
from augrun.models.optim import build_optimizer, decay_groups
from augrun.run import checkpoint
from augrun.run.ema import ModelEma
from augrun.run.engine import EpochState, train_one_epoch
from augrun.run.update import Updater


@pytest.mark.parametrize("warmup", [False, True])
def test_the_averaged_weights_are_the_hand_computed_average(warmup: bool):
    model = nn.Linear(2, 1)
    ema = ModelEma(model, decay=0.9, warmup=warmup)
    expected = [p.detach().clone() for p in model.parameters()]
    for t in range(4):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(t + 1.0)
        decay = min(0.9, (1 + t) / (10 + t)) if warmup else 0.9
        expected = [decay * e + (1 - decay) * p.detach() for e, p in zip(expected, model.parameters())]
        ema.update()
    for average, value in zip(ema.module.parameters(), expected):
        torch.testing.assert_close(average, value)
    assert not any(p.requires_grad for p in ema.module.parameters())


def one_epoch(model: nn.Module, batches: list, *, accumulate: int, sum_loss: bool = False) -> None:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    updater = Updater(model, optimizer, None, None, accumulate, 0.0, None, [len(b[0]) for b in batches])
    train_one_epoch(model, batches, EpochState.fresh(torch.device("cpu")), epoch=1, updater=updater,
                    loss_fn=nn.CrossEntropyLoss(reduction="none"), sum_loss=sum_loss, world_size=1, amp_dtype=None,
                    progress_every=1 << 30, on_progress=lambda *a: None, stop_requested=lambda: False)


@pytest.mark.parametrize("sum_loss", [False, True])
def test_k_micro_batches_give_the_update_of_one_batch_k_times_larger(sum_loss: bool):
    torch.manual_seed(0)
    images, labels = torch.randn(12, 5), torch.randint(0, 3, (12,))
    whole, split = nn.Linear(5, 3), nn.Linear(5, 3)  # no batch statistics
    split.load_state_dict(whole.state_dict())
    one_epoch(whole, [(images, labels)], accumulate=1, sum_loss=sum_loss)
    one_epoch(split, [(images[i:i + 4], labels[i:i + 4]) for i in (0, 4, 8)], accumulate=3, sum_loss=sum_loss)
    for a, b in zip(whole.parameters(), split.parameters()):
        torch.testing.assert_close(a, b)


def test_a_smaller_last_micro_batch_counts_per_image_as_in_one_batch():
    """10 images as micro-batches of 4, 4 and 2: the step is the mean over the 10 images, not over 3 micro-batch means
    (which would weigh each of the last two images twice as much)."""
    torch.manual_seed(0)
    images, labels = torch.randn(10, 5), torch.randint(0, 3, (10,))
    whole, split = nn.Linear(5, 3), nn.Linear(5, 3)
    split.load_state_dict(whole.state_dict())
    one_epoch(whole, [(images, labels)], accumulate=1)
    one_epoch(split, [(images[i:i + 4], labels[i:i + 4]) for i in (0, 4, 8)], accumulate=3)
    for a, b in zip(whole.parameters(), split.parameters()):
        torch.testing.assert_close(a, b)


def test_the_epochs_last_short_window_is_averaged_over_its_own_micro_batches():
    torch.manual_seed(0)
    images, labels = torch.randn(12, 5), torch.randint(0, 3, (12,))
    steps, micro = nn.Linear(5, 3), nn.Linear(5, 3)
    micro.load_state_dict(steps.state_dict())
    # 3 micro-batches with accumulate=2: a step of two, then a step of the last one alone
    one_epoch(steps, [(images[:8], labels[:8]), (images[8:], labels[8:])], accumulate=1)
    one_epoch(micro, [(images[i:i + 4], labels[i:i + 4]) for i in (0, 4, 8)], accumulate=2)
    for a, b in zip(steps.parameters(), micro.parameters()):
        torch.testing.assert_close(a, b)


def test_clip_grad_norm_bounds_the_step():
    model = nn.Linear(4, 1, bias=False)
    before = model.weight.detach().clone()
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    updater = Updater(model, optimizer, None, None, 1, 0.5, None, [1])
    updater.backward((model(torch.full((1, 4), 100.0)) ** 2).sum())  # a gradient norm in the tens of thousands
    updater.step()
    assert torch.linalg.vector_norm(model.weight.detach() - before).item() == pytest.approx(0.5, rel=1e-5)


def test_fp16s_loss_scale_skips_a_step_with_inf_gradients():
    model = nn.Linear(2, 1)
    before = [p.detach().clone() for p in model.parameters()]
    scaler = torch.amp.GradScaler("cpu")
    updater = Updater(model, torch.optim.SGD(model.parameters(), lr=0.1), None, scaler, 1, 0.0, None, [1])
    scale = scaler.get_scale()
    updater.backward(model(torch.tensor([[float("inf"), 1.0]])).sum())
    updater.step()
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))  # skipped
    assert scaler.get_scale() == scale * 0.5  # and the scale backs off


def test_adamw_decays_weights_but_not_norms_biases_or_a_vits_embeddings():
    cfg = to_train_config(compose_train(*SMOKE, "model=vit_tiny_cifar", "+model.options.depth=1", "optim=adamw"))
    model = build_model(cfg.model, in_channels=3, num_classes=10, image_size=32)
    decayed, kept = decay_groups(model, 0.05)
    names = {id(p): n for n, p in model.named_parameters()}
    assert {names[id(p)] for p in kept["params"]} >= {"pos_embed", "cls_token", "norm.weight", "head.bias"}
    assert all(p.ndim >= 2 for p in decayed["params"]) and "head.weight" in {names[id(p)] for p in decayed["params"]}
    optimizer = build_optimizer("adamw", model, lr=5e-4, weight_decay=0.05, momentum=0.9, nesterov=False)
    assert type(optimizer) is torch.optim.AdamW
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.05, 0.0]


def test_accumulation_counts_optimizer_steps_for_the_schedule(in_workdir: Path):
    """The schedule moves once per optimizer step: with micro-batches the lr follows the same one-cycle per epoch."""
    lrs = {}
    for k in (1, 2):
        main(["train", *SMOKE, "trainer.workers=0", "trainer.epochs=2", f"trainer.accumulate_grad_batches={k}",
              "sched=onecycle", "optim=sgd", "optim.lr=0.1", f"hydra.run.dir=run{k}"])
        lrs[k] = [record["lr"] for record in read_metrics(in_workdir / f"run{k}")]
    assert lrs[2] == lrs[1] and lrs[1][0] != lrs[1][1]


# every part at once: what a resume must restore exactly (the average, the loss scale, AdamW's state)
RECIPE = [*SMOKE, "trainer.epochs=3", "trainer.workers=0", "optim=adamw", "trainer.ema.decay=0.9",
          "trainer.ema.warmup=true", "trainer.accumulate_grad_batches=2", "trainer.clip_grad_norm=1.0",
          "trainer.precision=fp16", "aug=flip_color_crop", "aug.repeats=2", "hydra.run.dir=run"]


@pytest.mark.slow
def test_a_killed_recipe_run_resumes_bitwise_with_its_average(tmp_path: Path, monkeypatch):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    whole.mkdir(), killed.mkdir()
    monkeypatch.chdir(whole)
    main(["train", *RECIPE])  # the reference, in this process: only the killed run needs one of its own
    process = subprocess.Popen([sys.executable, "-m", "augrun", "train", *RECIPE], cwd=killed,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (killed / "run" / checkpoint.CHECKPOINT).exists():
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    process.kill()
    process.wait()
    monkeypatch.chdir(killed)
    main(["train", *RECIPE, "resume=true"])
    expected = without_timing(read_metrics(whole / "run"))
    assert without_timing(read_metrics(killed / "run")) == expected
    assert all(record["test_acc_ema"] is not None for record in expected)
    state = torch.load(killed / "run" / checkpoint.CHECKPOINT, weights_only=True)
    assert state["ema"] is not None and state["scaler"]["scale"] > 0


@pytest.mark.slow
def test_the_recipe_runs_under_ddp_and_on_the_gpu_backend(workdir: Path):
    result = run_augrun("train", *RECIPE, "trainer.epochs=1", "trainer.nprocs=2", "aug.backend=gpu", cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert read_metrics(workdir / "run")[-1]["test_acc_ema"] is not None


@pytest.mark.parametrize("override, expected", [
    ("trainer.accumulate_grad_batches=3", "trainer.accumulate_grad_batches: 3 does not divide trainer.batch_size=64"),
    ("trainer.accumulate_grad_batches=0", "trainer.accumulate_grad_batches: "),
    ("trainer.clip_grad_norm=-1", "trainer.clip_grad_norm: got -1.0; valid: a norm > 0, or 0 (off)"),
    ("trainer.ema.decay=1", "trainer.ema.decay: got 1.0; valid: 0 (off) or 0 < decay < 1"),
    ("trainer.precision=fp8", "trainer.precision: got 'fp8'; valid: auto, fp32, bf16, fp16"),
    ("trainer.sync_bn=true trainer.nprocs=2", "trainer.sync_bn: true, but SyncBatchNorm runs on GPUs only"),
    ("trainer.batch_size=4 trainer.accumulate_grad_batches=4 trainer.nprocs=2",
     "trainer.accumulate_grad_batches: a batch of 1 image(s) (trainer.batch_size=4 / accumulate_grad_batches=4) "
     "cannot feed 2 processes"),
    ("trainer.batch_size=1 trainer.nprocs=2", "trainer.batch_size: a batch of 1 image(s)"),
])
def test_bad_recipe_settings_are_one_line(override: str, expected: str, in_workdir: Path):
    from helpers import refusal
    assert refusal(*SMOKE, *override.split()).startswith(expected)


def mix_inputs():
    torch.manual_seed(1)
    return torch.rand(6, 3, 8, 8), torch.arange(6) % 3


@pytest.mark.parametrize("switch_prob, chosen", [(0.0, "mixup"), (1.0, "cutmix")])
def test_mixup_cutmix_runs_the_op_its_switch_draws(switch_prob: float, chosen: str):
    from augrun.augment.gpu import CutMix, MixUp, MixUpCutMix
    images, labels = mix_inputs()
    op = MixUpCutMix(mixup_alpha=0.8, cutmix_alpha=1.0, switch_prob=switch_prob, num_classes=3)
    got = op(images, labels, torch.Generator().manual_seed(5))
    generator = torch.Generator().manual_seed(5)
    torch.rand((), generator=generator)  # the switch
    mixed = MixUp(alpha=0.8, num_classes=3)(images, labels, generator)
    cut = CutMix(alpha=1.0, num_classes=3)(images, labels, generator)
    expected = mixed if chosen == "mixup" else cut
    torch.testing.assert_close(got[0], expected[0])
    torch.testing.assert_close(got[1], expected[1])


def test_mixup_cutmix_switches_as_often_as_switch_prob_says():
    from augrun.augment.gpu import MixUpCutMix
    images, labels = mix_inputs()
    op = MixUpCutMix(switch_prob=0.5, num_classes=3)
    generator = torch.Generator().manual_seed(0)
    # CutMix pastes pixels unchanged: every output pixel is the image's own or its neighbour's
    outputs = [op(images, labels, generator)[0] for _ in range(400)]
    cutmix = sum(bool(((out == images) | (out == images.roll(1, 0))).all()) for out in outputs)
    assert 160 <= cutmix <= 240  # Binomial(400, 0.5): mean 200, sd 10


@pytest.mark.parametrize("world", [1, 2])
def test_repeated_augmentation_shows_each_drawn_image_k_times_across_the_ranks(world: int):
    from collections import Counter

    from augrun.data.batches import epoch_plan, image_index
    n, k = 50, 3
    plans = [epoch_plan(n, 10, seed=0, epoch=2, rank=r, world_size=world, repeats=k) for r in range(world)]
    positions = [i for plan in plans for step in plan for i in step.tolist()]
    assert len(positions) == n and len(set(positions)) == n  # the epoch's length, every copy its own index
    counts = Counter(image_index(i, n) for i in positions)
    assert sorted(counts.values())[1:] == [k] * (len(counts) - 1)  # k copies each (the last one cut by the length)
    first = epoch_plan(n, 10, seed=0, epoch=2, repeats=k)[0].tolist()[:k]
    assert first == [first[0] + copy * n for copy in range(k)]  # an image's copies come together, in one batch


def test_a_repeated_images_copies_get_their_own_draws_on_either_backend():
    from augrun.augment.cpu import build_train_transform
    from augrun.augment.gpu_pipeline import build_pipeline
    from augrun.augment.ops import parse_train_pipeline
    from augrun.data.batches import AugmentedImages, BatchFinisher, DeviceBatches
    from augrun.data.datasets import make_synthetic
    data = make_synthetic(image_size=16, channels=3, num_classes=4, train_size=8, test_size=4).train
    ops = parse_train_pipeline({"RandomResizedCrop": {"size": 16, "scale": [0.2, 1.0]}, "ColorJitter": {"hue": 0.3}})
    images = AugmentedImages(data, build_train_transform(ops, mean=None, std=None), seed=0)
    n = len(data.labels)
    first, copy, again = images[(1, 3)][0], images[(1, 3 + n)][0], images[(1, 3)][0]
    assert torch.equal(first, again) and not torch.equal(first, copy)
    finish = BatchFinisher(device=torch.device("cpu"), mean=None, std=None, channels_last=False)
    batches = DeviceBatches(data, build_pipeline(ops), finish, batch_size=8, seed=0, rank=0, world_size=1,
                            shuffle=True, repeats=2)
    batch = next(iter(batches.epoch(1)))[0]
    assert not torch.equal(batch[0], batch[1])  # the two copies of one image, side by side in the batch
