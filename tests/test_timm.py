"""timm's models: the presets at their image sizes, forward and backward on the CPU; runs with both backends, two-process
DDP (gloo), and torch.compile on the GPU machine; an unknown name and pretrained weights offline refused in one line."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import SMOKE, assert_user_error, compose_train, read_metrics, refusal, run_augrun

from augrun.cli import main
from augrun.config.compose import to_train_config
from augrun.data.batches import epoch_plan
from augrun.errors import ConfigError
from augrun.models.networks import build_model
from augrun.run import dryrun

pytest.importorskip("timm", reason="timm is not installed (pip install 'augrun[timm]')")

# a ViT as vit_tiny_cifar builds it (timm's class, 4x4 patches, the dataset's size), shrunk to train in seconds
SMALL_VIT = ["model=vit_tiny_cifar", "+model.options.depth=2", "+model.options.embed_dim=48",
             "+model.options.num_heads=2", "trainer.workers=0", "trainer.epochs=1"]


@pytest.mark.parametrize("preset, size, parameters", [
    ("vit_tiny_cifar", 32, 5_362_762),
    ("deit_tiny", 224, 5_526_346),
])
def test_each_preset_trains_at_its_image_size(preset: str, size: int, parameters: int):
    cfg = to_train_config(compose_train(*SMOKE, f"model={preset}", f"dataset.image_size={size}"))
    net = build_model(cfg.model, in_channels=3, num_classes=10, image_size=size)
    assert sum(p.numel() for p in net.parameters()) == parameters
    assert net.patch_embed.img_size == (size, size)  # sized for the dataset, not timm's 224 default
    images = torch.rand(2, 3, size, size)
    net(images).sum().backward()
    assert all(p.grad is not None for p in net.parameters() if p.requires_grad)
    assert net.blocks[-1].drop_path1.drop_prob == pytest.approx(0.1)  # stochastic depth, rising to the last block


def test_a_model_without_an_image_size_is_built_without_one():
    cfg = to_train_config(compose_train(*SMOKE, "model=timm", "model.name=resnet18"))
    net = build_model(cfg.model, in_channels=1, num_classes=7, image_size=32)
    assert net(torch.rand(2, 1, 32, 32)).shape == (2, 7)  # the dataset's channels and classes


@pytest.mark.parametrize("backend", ["cpu", "gpu"])
def test_a_vit_trains_on_either_backend(backend: str, in_workdir: Path):
    main(["train", *SMOKE, *SMALL_VIT, f"aug.backend={backend}", "hydra.run.dir=run"])
    (record,) = read_metrics(in_workdir / "run")
    assert record["train_loss"] > 0 and 0 <= record["test_acc"] <= 1


@pytest.mark.slow
def test_a_vit_trains_with_two_process_ddp(workdir: Path):
    result = run_augrun("train", *SMOKE, *SMALL_VIT, "trainer.nprocs=2", "hydra.run.dir=ddp", cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert read_metrics(workdir / "ddp")[-1]["epoch"] == 1


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_vit_trains_compiled(workdir: Path):
    """torch.compile of a ViT: on the GPU machine (on two CPU cores its compilation alone takes about 20 s)."""
    result = run_augrun("train", *SMOKE, *SMALL_VIT, "trainer.compile=true", "hydra.run.dir=compiled", cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert read_metrics(workdir / "compiled")[-1]["epoch"] == 1


def test_an_unknown_timm_name_is_one_line_with_close_matches(in_workdir: Path):
    message = refusal(*SMOKE, "model=timm", "model.name=vit_tiny")
    assert message.startswith("model.name: 'vit_tiny' is not a timm model; did you mean vit_tiny_patch16_224")


@pytest.mark.parametrize("override, expected", [
    ("+model.options.bogus=1", "model.options: resnet18 fails with bogus=1 (ResNet.__init__() got an unexpected"),
    ("model.drop_path_rate=1.5", "model.drop_path_rate: got 1.5; valid: 0 <= value < 1"),
    ("model.source=keras", "model.source: got 'keras'; valid: augrun, timm"),
    ("+model.options.num_classes=5", "model.options.num_classes: is set by augrun (the dataset's classes)"),
])
def test_bad_timm_settings_are_one_line(override: str, expected: str, in_workdir: Path):
    assert refusal(*SMOKE, "model=timm", "model.name=resnet18", override).startswith(expected)


@pytest.mark.parametrize("options, reason", [
    # timm refuses these as it builds the model, each with an exception of its own
    (["+model.options.depth=-1"], "(number of steps must be non-negative)"),
    (["+model.options.depth=1", "+model.options.num_heads=5"],
     "(AssertionError: dim should be divisible by num_heads)"),
    (["+model.options.num_heads=0"], "(ZeroDivisionError: integer modulo by zero)"),
    (["+model.options.embed_dim=-8"], "(Trying to create tensor with negative dimension -8"),
    (["model.options.patch_size=0"], "(ZeroDivisionError: integer division or modulo by zero)"),
    (["+model.options.global_pool=xyz"], "(AssertionError: Only avg, avgmax, max, token, map or prr pooling"),
    (["+model.options.act_layer=foo"], "(KeyError: 'foo')"),
])
def test_options_timm_refuses_while_building_are_one_line(options: list[str], reason: str, in_workdir: Path):
    message = refusal(*SMOKE, "model=vit_tiny_cifar", *options)
    assert message.startswith("model.options: vit_tiny_patch16_224 fails with patch_size=") and reason in message


def test_an_option_that_fails_only_in_training_names_the_options_not_the_image_size(in_workdir: Path):
    message = refusal(*SMOKE, "model=timm", "model.name=resnet10t", "+model.options.drop_rate=2")
    assert message.startswith("model.options: resnet10t fails with drop_rate=2 (dropout probability has to be "
                              "between 0 and 1"), message


@pytest.mark.parametrize("name", ["dla46_c", "densenet121"])
def test_a_model_without_stochastic_depth_names_drop_path_rate(name: str, in_workdir: Path):
    message = refusal(*SMOKE, "model=timm", f"model.name={name}", "model.drop_path_rate=0.1")
    assert message.startswith(f"model.drop_path_rate: {name} has no stochastic depth (") and \
        message.endswith("; valid: 0.0")


def test_a_model_without_stochastic_depth_builds_when_none_is_asked_for():
    cfg = to_train_config(compose_train(*SMOKE, "model=timm", "model.name=dla46_c"))
    net = build_model(cfg.model, in_channels=3, num_classes=10, image_size=32)
    assert net(torch.rand(2, 3, 32, 32)).shape == (2, 10)


def smallest_in_plan(train_size: int, batch_size: int, accumulate: int, nprocs: int, drop_last: bool) -> int:
    """The fewest images any process trains a step on, from the run's own plan of an epoch."""
    micro = batch_size // accumulate
    return min(len(piece) for rank in range(nprocs) for piece in epoch_plan(
        train_size, micro, seed=0, epoch=1, rank=rank, world_size=nprocs, drop_last=drop_last))


def test_the_dry_runs_smallest_micro_batch_is_the_plans():
    for train_size in (5, 64, 97, 129, 130, 200):
        for batch_size, accumulate in ((1, 1), (8, 1), (64, 1), (64, 4), (64, 64), (48, 3)):
            for nprocs in (1, 2, 3):
                for drop_last in (False, True):
                    if batch_size // accumulate < nprocs or (drop_last and train_size < batch_size // accumulate):
                        continue  # refused by trainer.prepare / an epoch without a step
                    batches = dryrun.MicroBatches(batch_size, accumulate, nprocs, train_size, drop_last)
                    assert batches.smallest() == smallest_in_plan(train_size, batch_size, accumulate, nprocs,
                                                                  drop_last), batches


def dry_run(*overrides: str, nprocs: int = 1) -> None:
    """The pre-check's dry run (one training step) as trainer.prepare calls it, for the smoke config and overrides."""
    cfg = to_train_config(compose_train(*SMOKE, *overrides))
    d = cfg.dataset
    dryrun.dry_run(train_ops=[], batch_ops=[], backend="cpu", image_size=d.image_size, channels=d.channels,
                   num_classes=d.num_classes, mean=None, std=None, model=cfg.model,
                   micro_batches=dryrun.micro_batches(cfg, nprocs=nprocs))


@pytest.mark.parametrize("overrides, arithmetic", [
    (["dataset.train_size=129"], "the last micro-batch of each epoch gives a process 1 image (129 = 2 x 64 + 1)"),
    (["dataset.train_size=97", "trainer.accumulate_grad_batches=4"],
     "the last micro-batch of each epoch gives a process 1 image (97 = 6 x 16 + 1)"),
    (["trainer.batch_size=1"], "each micro-batch gives a process 1 image (trainer.batch_size=1 / "
                               "accumulate_grad_batches=1)"),
    (["dataset.train_size=128", "trainer.accumulate_grad_batches=64"],
     "each micro-batch gives a process 1 image (trainer.batch_size=64 / accumulate_grad_batches=64)"),
])
def test_a_micro_batch_too_small_for_batch_statistics_names_the_batch_size(overrides: list[str], arithmetic: str):
    with pytest.raises(ConfigError) as caught:
        dry_run("model=timm", "model.name=resnet10t", *overrides)
    assert str(caught.value).startswith(f"trainer.batch_size: {arithmetic}, and resnet10t cannot train on so few "
                                        "(Expected more than 1 value per channel when training")


def test_a_last_micro_batch_of_one_per_process_is_found_under_ddp():
    with pytest.raises(ConfigError, match=r"gives a process 1 image \(131 = 2 x 64 \+ 3, split over 2 processes\)"):
        dry_run("model=timm", "model.name=resnet10t", "dataset.train_size=131", nprocs=2)


@pytest.mark.parametrize("overrides", [
    ["model=timm", "model.name=resnet10t", "dataset.train_size=130"],  # two images in the last micro-batch
    ["model=timm", "model.name=resnet10t", "dataset.train_size=129", "trainer.compile=true"],  # the last is dropped
    ["dataset.train_size=129"],  # small_cnn's batch statistics are over 32x32 pixels: one image is enough
])
def test_micro_batches_a_model_can_train_on_pass_the_dry_run(overrides: list[str]):
    dry_run(*overrides)


def test_timm_settings_on_augrun_models_are_refused(in_workdir: Path):
    assert refusal(*SMOKE, "model.drop_path_rate=0.1").startswith("model.drop_path_rate: 0.1 is for timm's models")


def test_pretrained_weights_offline_are_one_line_and_exit_2(workdir: Path):
    offline = {"HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_CACHE": str(workdir / "hub")}  # nothing listens there
    result = run_augrun("train", *SMOKE, "model=timm", "model.name=resnet18", "model.pretrained=true",
                        "hydra.run.dir=run", cwd=workdir, env=offline)
    assert_user_error(result, "model.pretrained: true, but resnet18's weights are not cached and "
                              "http://127.0.0.1:9 cannot be reached")
    assert not (workdir / "run").exists()


def test_sync_bn_counts_the_whole_micro_batch():
    # 131 = 2 x 64 + 3: a process's share of the last micro-batch is 1 image, but SyncBatchNorm's statistics see 3
    assert dryrun.MicroBatches(64, 1, 2, 131).smallest() == 1
    assert dryrun.MicroBatches(64, 1, 2, 131, sync_bn=True).smallest() == 3


def test_the_pre_check_refuses_a_micro_batch_or_repeats_the_run_cannot_train_on(in_workdir: Path):
    """The checks above, through the real pre-check (trainer.prepare passes the run's micro-batches to the dry run)."""
    assert refusal(*SMOKE, "model=timm", "model.name=resnet10t", "dataset.train_size=129").startswith(
        "trainer.batch_size: the last micro-batch of each epoch gives a process 1 image (129 = 2 x 64 + 1)")
    assert refusal(*SMOKE, "aug.repeats=64").startswith("aug.repeats: got 64, but a process's micro-batch holds 64")
