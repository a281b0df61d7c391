"""The augmentation catalogue beyond the book (standard, AutoAugment, RandAugment, TrivialAugment, AugMix, erasing,
MixUp, CutMix) and the `fast` and `aug_ablation` experiments: each option composes, builds the torchvision ops it names with
the arguments it names, transforms a real image, runs end to end, and the sweep expands to the jobs it promises."""
from __future__ import annotations

import itertools
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.transforms as V1
import torchvision.transforms.v2 as T
from helpers import compose_train, read_metrics
from PIL import Image

from augrun.augment import gpu
from augrun.augment.cpu import ToTensor, build_train_transform
from augrun.augment.gpu_pipeline import build_batch_op
from augrun.augment.ops import parse_batch_pipeline, parse_train_pipeline, resolve_backend
from augrun.cli import main
from augrun.config.command_line import run_hydra
from augrun.config.compose import to_train_config
from augrun.data.batches import BatchFinisher
from augrun.errors import ConfigError

NEW_AUGS = ["standard", "autoaugment", "randaugment", "trivialaugment", "augmix", "erasing", "mixup", "cutmix"]
# (class, attributes as torchvision stores them): the cpu backend runs torchvision v1's classes (the book's values)
CROP = (V1.RandomCrop, {"size": (32, 32), "padding": 4, "pad_if_needed": False, "fill": 0, "padding_mode": "constant"})
FLIP = (V1.RandomHorizontalFlip, {"p": 0.5})
STANDARD = [CROP, FLIP]
NEAREST, BILINEAR = T.InterpolationMode.NEAREST, T.InterpolationMode.BILINEAR
EXPECTED_TRAIN = {
    "standard": STANDARD,
    "autoaugment": STANDARD + [(T.AutoAugment, {"policy": T.AutoAugmentPolicy.CIFAR10, "interpolation": NEAREST,
                                                "fill": None})],
    "randaugment": STANDARD + [(T.RandAugment, {"num_ops": 2, "magnitude": 9, "num_magnitude_bins": 31,
                                                "interpolation": NEAREST, "fill": None})],
    "trivialaugment": STANDARD + [(T.TrivialAugmentWide, {"num_magnitude_bins": 31, "interpolation": NEAREST,
                                                          "fill": None})],
    "augmix": STANDARD + [(T.AugMix, {"severity": 3, "mixture_width": 3, "chain_depth": -1, "alpha": 1.0,
                                      "all_ops": True, "interpolation": BILINEAR, "fill": None})],
    "erasing": STANDARD + [(V1.RandomErasing, {"p": 0.5, "scale": (0.02, 0.33), "ratio": (0.3, 3.3), "value": 0,
                                              "inplace": False})],
    "mixup": STANDARD,
    "cutmix": STANDARD,
}
EXPECTED_BATCH = {"mixup": [("MixUp", {"alpha": 0.2, "labels_getter": "default"})],
                  "cutmix": [("CutMix", {"alpha": 1.0, "labels_getter": "default"})]}
# options whose every per-image op has a gpu version
GPU_ABLE = {"standard", "erasing", "mixup", "cutmix"}
# a few seconds on a 2-core CPU: experiment=smoke shrunk further
TINY = ["trainer.workers=0", "dataset.train_size=64", "dataset.test_size=32", "trainer.batch_size=32"]


def aug_config(option: str, *overrides: str):
    return to_train_config(compose_train(f"aug={option}", *overrides)).aug


def same(value, expected) -> bool:
    if isinstance(expected, (list, tuple)):
        return list(value) == list(expected)
    return value == expected


def pil_image(size: int = 32, mode: str = "RGB", seed: int = 0) -> Image.Image:
    shape = (size, size, 3) if mode == "RGB" else (size, size)
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8), mode)


@pytest.fixture
def one_thread():
    """Like a DataLoader worker: torchvision's tensor-path ops (AugMix) run ~30x slower with 2 intra-op threads on 2
    cores than with 1, and trainer.workers=0 applies them in this process."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --- composition and the cpu pipeline -----------------------------------------------------------------------------

@pytest.mark.parametrize("option", NEW_AUGS)
def test_option_builds_the_named_torchvision_ops(option):
    aug = aug_config(option)
    assert aug.backend == "auto"
    transforms = list(build_train_transform(parse_train_pipeline(aug.train)).transforms)
    to_tensor_at = [type(t) for t in transforms].index(ToTensor)
    random_ops = transforms[:to_tensor_at] + transforms[to_tensor_at + 1:]  # RandomErasing runs after ToTensor
    assert [type(op) for op in random_ops] == [cls for cls, _ in EXPECTED_TRAIN[option]]
    for op, (cls, attributes) in zip(random_ops, EXPECTED_TRAIN[option]):
        for name, expected in attributes.items():
            assert same(getattr(op, name), expected), (option, cls.__name__, name, getattr(op, name))
    if option == "erasing":
        assert type(transforms[-1]) is V1.RandomErasing  # a tensor op: after ToTensor
    batch = parse_batch_pipeline(aug.batch)
    assert [(s.name, s.kwargs) for s in batch] == EXPECTED_BATCH.get(option, [])


@pytest.mark.parametrize("option", NEW_AUGS)
def test_option_transforms_a_real_image(option, one_thread):
    transform = build_train_transform(parse_train_pipeline(aug_config(option).train))
    torch.manual_seed(0)
    outputs = [transform(pil_image(seed=i)) for i in range(8)]
    for out in outputs:
        assert out.dtype == torch.float32 and out.shape == (3, 32, 32)
        assert 0.0 <= out.min() and out.max() <= 1.0
    assert any(not torch.equal(a, b) for a, b in itertools.combinations(outputs, 2))


@pytest.mark.parametrize("option", NEW_AUGS)
def test_option_follows_the_datasets_size_and_channels(option, one_thread):
    """Fashion-MNIST: 28x28 grayscale; the crop size comes from dataset.image_size."""
    aug = aug_config(option, "dataset=fashion_mnist")
    transform = build_train_transform(parse_train_pipeline(aug.train), mean=[0.2860], std=[0.3530])
    torch.manual_seed(0)
    out = transform(pil_image(28, "L"))
    assert out.shape == (1, 28, 28) and out.dtype == torch.float32 and torch.isfinite(out).all()


def test_standard_crop_is_a_shifted_window_of_the_zero_padded_image():
    transform = build_train_transform(parse_train_pipeline(aug_config("standard").train))
    torch.manual_seed(0)
    image = pil_image()
    source = T.functional.pad(V1.ToTensor()(image), [4])
    for _ in range(16):
        out = transform(image)
        windows = [source[:, y:y + 32, x:x + 32] for y in range(9) for x in range(9)]
        assert any(torch.equal(out, w) or torch.equal(out, w.flip(-1)) for w in windows)


# --- the gpu backend --------------------------------------------------------------------------------------------

def test_gpu_versions_exist_for_the_standard_and_erasing_ops():
    assert {"RandomCrop", "RandomHorizontalFlip", "RandomErasing"} <= set(gpu.GPU_OPS)
    assert {"MixUp", "CutMix"} <= set(gpu.BATCH_OP_CLASSES)


@pytest.mark.parametrize("option", NEW_AUGS)
def test_backend_auto_picks_gpu_only_where_every_op_has_a_gpu_version(option):
    specs = parse_train_pipeline(aug_config(option).train)
    backend, warning = resolve_backend("auto", specs, device_kind="cuda")
    if option in GPU_ABLE:
        assert (backend, warning) == ("gpu", None)
        assert resolve_backend("gpu", specs, device_kind="cpu") == ("gpu", None)
    else:
        assert backend == "cpu" and "no gpu version" in warning
        with pytest.raises(ConfigError, match="aug.backend"):
            resolve_backend("gpu", specs, device_kind="cuda")
    assert resolve_backend("auto", specs, device_kind="cpu") == ("cpu", None)


@pytest.mark.parametrize("option", ["standard", "erasing"])
def test_gpu_pipeline_runs_on_a_cpu_batch(option):
    specs = parse_train_pipeline(aug_config(option).train)
    pipeline = gpu.GpuPipeline([gpu.GPU_OPS[s.name](**s.kwargs) for s in specs])
    images = torch.rand(64, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 0.9 + 0.1  # no pixel is 0
    out = pipeline(images, torch.Generator().manual_seed(1))
    again = pipeline(images, torch.Generator().manual_seed(1))
    assert out.shape == images.shape and out.dtype == images.dtype and torch.equal(out, again)
    assert 0.0 <= out.min() and out.max() <= 1.0
    zeros = (out == 0).all(dim=1).flatten(1).sum(1)  # black pixels (all channels) per image: padding or erased
    assert (zeros > 0).any() and (zeros == 0).any()  # some images shifted/erased, some not


def test_gpu_standard_crop_is_a_shifted_window_of_the_zero_padded_image():
    specs = parse_train_pipeline(aug_config("standard").train)
    pipeline = gpu.GpuPipeline([gpu.GPU_OPS[s.name](**s.kwargs) for s in specs])
    images = torch.rand(16, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    out = pipeline(images, torch.Generator().manual_seed(1))
    padded = torch.nn.functional.pad(images, [4, 4, 4, 4])
    for source, result in zip(padded, out):
        windows = [source[:, y:y + 32, x:x + 32] for y in range(9) for x in range(9)]
        assert any(torch.equal(result, w) or torch.equal(result, w.flip(-1)) for w in windows)


# --- MixUp / CutMix -----------------------------------------------------------------------------------------------

def mixed_batch(option: str, num_classes: int = 10, n: int = 8):
    (spec,) = parse_batch_pipeline(aug_config(option).batch)
    op = build_batch_op(spec, num_classes=num_classes)  # what the trainer builds: num_classes from the dataset
    assert op.num_classes == num_classes
    images = torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(0)) + 1.0  # [1, 2): all pairs differ
    labels = torch.arange(n) % num_classes  # neighbours have different labels
    finish = BatchFinisher(device=torch.device("cpu"), mean=None, std=None, batch_ops=[op], seed=3)
    mixed, targets = finish(images, labels, epoch=1, step=0, normalize=False)
    return images, labels, mixed, targets


@pytest.mark.parametrize("option", ["mixup", "cutmix"])
def test_batch_op_mixes_images_and_targets_consistently(option):
    images, labels, mixed, targets = mixed_batch(option)
    assert mixed.shape == images.shape and targets.shape == (8, 10) and targets.dtype == torch.float32
    assert (targets >= 0).all() and torch.allclose(targets.sum(1), torch.ones(8))
    lam = targets[torch.arange(8), labels]  # share of each image's own label
    assert torch.allclose(targets[torch.arange(8), labels.roll(1)], 1 - lam)  # the rest: its neighbour's
    assert torch.allclose(lam, lam[0].expand(8))  # one lambda per batch
    partner = images.roll(1, 0)
    if option == "mixup":
        expected = lam[0] * images + (1 - lam[0]) * partner
        assert torch.allclose(mixed, expected, atol=1e-6)
    else:  # each pixel comes from the image or its neighbour; the neighbour's share is the box area
        from_partner = (mixed == partner).all(dim=1)
        assert ((mixed == images).all(dim=1) | from_partner).all()
        assert torch.allclose(from_partner.float().mean((1, 2)), 1 - lam, atol=1e-6)


@pytest.mark.parametrize("option", ["mixup", "cutmix"])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_cross_entropy_with_soft_targets_is_the_hand_computed_value(option, label_smoothing):
    _, _, _, targets = mixed_batch(option)
    logits = torch.randn(8, 10, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    targets = targets.double()
    loss = torch.nn.CrossEntropyLoss(label_smoothing=label_smoothing)(logits, targets)
    smoothed = targets * (1 - label_smoothing) + label_smoothing / 10
    expected = -(smoothed * torch.log_softmax(logits, dim=1)).sum(1).mean()
    assert torch.allclose(loss, expected, rtol=1e-12)


# --- end to end ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("overrides", [[f"aug={a}"] for a in NEW_AUGS]
                         + [["aug=standard", "aug.backend=gpu"], ["aug=mixup", "aug.backend=gpu"]],
                         ids=NEW_AUGS + ["standard-gpu", "mixup-gpu"])
def test_option_trains_one_epoch(overrides, tmp_path: Path, monkeypatch, one_thread):
    monkeypatch.setattr(sys, "argv", list(sys.argv))  # run_hydra replaces sys.argv
    run_dir = tmp_path / "run"
    main(["train", "experiment=smoke", f"hydra.run.dir={run_dir}", *overrides, "trainer.devices=cpu", *TINY])
    (record,) = read_metrics(run_dir)
    assert record["epoch"] == 1 and np.isfinite(record["train_loss"]) and 0 <= record["test_acc"] <= 1
    assert record["examples_per_s"] * record["seconds"] == pytest.approx(64)


# --- experiments --------------------------------------------------------------------------------------------------

def test_fast_experiment_is_the_documented_recipe():
    cfg = to_train_config(compose_train("experiment=fast"))
    assert cfg.model.name == "resnet18" and cfg.dataset.name == "cifar10" and cfg.dataset.normalize
    assert cfg.aug.backend == "gpu" and list(cfg.aug.train) == ["RandomCrop", "RandomHorizontalFlip"]
    assert cfg.aug.train["RandomCrop"]["padding"] == 4 and cfg.aug.train["RandomCrop"]["size"] == 32
    o, s, t = cfg.optim, cfg.sched, cfg.trainer
    assert (o.name, o.lr, o.momentum, o.nesterov, o.weight_decay) == ("sgd", 0.4, 0.9, True, 5e-4)
    assert (s.name, s.pct_start) == ("onecycle", 0.25)
    assert (t.epochs, t.batch_size, t.precision, t.channels_last, t.compile, t.label_smoothing, t.tta, t.eval_every) == \
        (40, 512, "auto", True, True, 0.1, "flip", 5)
    specs = parse_train_pipeline(cfg.aug.train)
    assert resolve_backend(cfg.aug.backend, specs, device_kind="cuda") == ("gpu", None)
    pipeline = gpu.GpuPipeline([gpu.GPU_OPS[s.name](**s.kwargs) for s in specs])
    assert pipeline(torch.rand(4, 3, 32, 32), torch.Generator().manual_seed(0)).shape == (4, 3, 32, 32)


def test_aug_ablation_keeps_the_books_recipe():
    cfg = to_train_config(compose_train("experiment=aug_ablation"))
    assert (cfg.model.name, cfg.optim.name, cfg.optim.lr, cfg.sched.name) == ("resnet18", "adam", 1e-3, "none")
    assert (cfg.trainer.epochs, cfg.trainer.batch_size, cfg.trainer.loss_reduction) == (10, 256, "sum")
    assert cfg.dataset.name == "cifar10" and not cfg.dataset.normalize


def sweep_jobs(tmp_path: Path, monkeypatch, *overrides: str) -> list[tuple[list[str], str, int]]:
    """Hydra's own multirun (basic sweeper and launcher) of a task that only records each job's overrides and config."""
    from hydra.core.hydra_config import HydraConfig
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    jobs = []

    def record(cfg) -> None:
        typed = to_train_config(cfg)
        jobs.append((list(HydraConfig.get().overrides.task), list(typed.aug.train), typed.seed))

    run_hydra(record, "train", ["-m", "experiment=aug_ablation", *overrides, f"hydra.sweep.dir={tmp_path}",
                                "~hydra.callbacks.sweep_report"])
    return jobs


def test_aug_ablation_sweeps_five_pipelines_times_three_seeds(tmp_path: Path, monkeypatch):
    jobs = sweep_jobs(tmp_path, monkeypatch)
    augs = ["none", "flip_only", "color_jitter", "crop", "flip_color_crop"]
    assert [overrides for overrides, _, _ in jobs] == \
        [[f"aug={a}", f"seed={s}", "experiment=aug_ablation"] for a in augs for s in range(3)]
    ops = {"none": [], "flip_only": ["RandomHorizontalFlip"], "color_jitter": ["ColorJitter"],
           "crop": ["RandomResizedCrop"], "flip_color_crop": ["RandomHorizontalFlip", "ColorJitter", "RandomResizedCrop"]}
    assert [(train, seed) for _, train, seed in jobs] == [(ops[a], s) for a in augs for s in range(3)]


def test_precheck_sees_every_job_of_the_ablation_sweep():
    from augrun.config.command_line import parse_command_line
    from augrun.config.compose import expand_jobs
    assert len(expand_jobs(parse_command_line(["-m", "experiment=aug_ablation"]))) == 15
