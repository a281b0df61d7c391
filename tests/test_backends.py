"""Choosing the augmentation backend, and the gpu backend training on CPU tensors."""
from __future__ import annotations

from pathlib import Path

import pytest
from helpers import SMOKE, read_metrics, run_augrun

from augrun.augment.ops import parse_train_pipeline, resolve_backend
from augrun.errors import ConfigError

FLIP_COLOR_CROP = parse_train_pipeline({"RandomHorizontalFlip": {"p": 0.5},
                                        "ColorJitter": {"brightness": 0.5, "contrast": 0.5, "saturation": 0.5, "hue": 0.5},
                                        "RandomResizedCrop": {"size": 32, "scale": [0.1, 1.0], "ratio": [0.5, 2.0]}})
WITH_ROTATION = parse_train_pipeline({"RandomHorizontalFlip": {"p": 0.5}, "RandomRotation": {"degrees": 10}})


def test_auto_is_gpu_on_cuda_and_cpu_elsewhere():
    assert resolve_backend("auto", FLIP_COLOR_CROP, device_kind="cuda") == ("gpu", None)
    assert resolve_backend("auto", FLIP_COLOR_CROP, device_kind="cpu") == ("cpu", None)
    assert resolve_backend("gpu", FLIP_COLOR_CROP, device_kind="cpu") == ("gpu", None)  # explicit: on CPU tensors


def test_auto_falls_back_to_cpu_with_one_warning_when_an_op_has_no_gpu_version():
    backend, warning = resolve_backend("auto", WITH_ROTATION, device_kind="cuda")
    assert backend == "cpu" and "RandomRotation has no gpu version" in warning


def test_gpu_backend_with_an_op_it_lacks_is_an_error_naming_it():
    with pytest.raises(ConfigError, match="aug.backend: gpu has no version of RandomRotation"):
        resolve_backend("gpu", WITH_ROTATION, device_kind="cuda")


def test_gpu_backend_trains_on_cpu_tensors(workdir: Path):
    result = run_augrun("train", *SMOKE, "aug=flip_color_crop", "aug.backend=gpu", "trainer.devices=cpu",
                        "hydra.run.dir=run", cwd=workdir)
    assert result.returncode == 0, result.stderr
    (record,) = read_metrics(workdir / "run")
    assert record["examples_per_s"] * record["seconds"] == pytest.approx(320)
    assert "examples/sec on ['cpu']" in result.stdout


def test_cpu_backend_draws_per_image_and_epoch_not_per_worker():
    import torch

    from augrun.augment.cpu import build_train_transform
    from augrun.data.batches import AugmentedImages
    from augrun.data.datasets import make_synthetic
    data = make_synthetic(image_size=32, channels=3, num_classes=4, train_size=8, test_size=4).train
    images = AugmentedImages(data, build_train_transform(FLIP_COLOR_CROP), seed=0)
    first, _ = images[(1, 3)]
    torch.manual_seed(123)  # whatever the worker's own RNG state was
    again, _ = images[(1, 3)]
    assert torch.equal(first, again)  # (seed, epoch, index) alone decides the draws
    assert not torch.equal(first, images[(2, 3)][0])  # a new epoch draws anew
    assert not torch.equal(first, AugmentedImages(data, build_train_transform(FLIP_COLOR_CROP), seed=1)[(1, 3)][0])
