"""timm's models: the presets at their image sizes, forward and backward on the CPU; runs with both backends, two-process
DDP (gloo), and torch.compile on the GPU machine; an unknown name and pretrained weights offline refused in one line."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import SMOKE, assert_user_error, compose_train, read_metrics, refusal, run_augrun

from augrun.cli import main
from augrun.config.compose import to_train_config
from augrun.models.networks import build_model

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
    ("+model.options.bogus=1", "model.options: resnet18 refuses them"),
    ("model.drop_path_rate=1.5", "model.drop_path_rate: got 1.5; valid: 0 <= value < 1"),
    ("model.source=keras", "model.source: got 'keras'; valid: augrun, timm"),
    ("+model.options.num_classes=5", "model.options.num_classes: is set by augrun (the dataset's classes)"),
])
def test_bad_timm_settings_are_one_line(override: str, expected: str, in_workdir: Path):
    assert refusal(*SMOKE, "model=timm", "model.name=resnet18", override).startswith(expected)


def test_timm_settings_on_augrun_models_are_refused(in_workdir: Path):
    assert refusal(*SMOKE, "model.drop_path_rate=0.1").startswith("model.drop_path_rate: 0.1 is for timm's models")


def test_pretrained_weights_offline_are_one_line_and_exit_2(workdir: Path):
    offline = {"HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_CACHE": str(workdir / "hub")}  # nothing listens there
    result = run_augrun("train", *SMOKE, "model=timm", "model.name=resnet18", "model.pretrained=true",
                        "hydra.run.dir=run", cwd=workdir, env=offline)
    assert_user_error(result, "model.pretrained: true, but resnet18's weights are not cached and "
                              "http://127.0.0.1:9 cannot be reached")
    assert not (workdir / "run").exists()
