"""Every config option composes through Hydra and builds exactly the book's pipeline."""
from __future__ import annotations

import pytest
import torchvision.transforms as V1
import torchvision.transforms.v2 as T
from helpers import SMOKE, compose_train, refusal

from augrun.augment.cpu import ToTensor, build_test_transform, build_train_transform
from augrun.augment.ops import parse_train_pipeline
from augrun.config.compose import to_train_config
from augrun.errors import ConfigError
from augrun.run import dryrun

AUG_OPTIONS = ["none", "flip_only", "vflip", "crop", "brightness", "hue", "color_jitter", "flip_color_crop"]
# d2l 14.1's transforms for a 32x32 dataset, in the classes the cpu backend runs them with (cpu.FASTEST_CLASS: the
# book's v1 classes, or v2's where they give the same values faster): (class, attributes as torchvision stores them)
FLIP = (V1.RandomHorizontalFlip, {"p": 0.5})
CROP = (T.RandomResizedCrop, {"size": [32, 32], "scale": (0.1, 1.0), "ratio": (0.5, 2.0)})  # v2's: same values, faster
COLOR = (V1.ColorJitter, {"brightness": (0.5, 1.5), "contrast": (0.5, 1.5), "saturation": (0.5, 1.5), "hue": (-0.5, 0.5)})
BOOK = {
    "none": [],
    "flip_only": [FLIP],
    "vflip": [(V1.RandomVerticalFlip, {"p": 0.5})],
    "crop": [CROP],
    "brightness": [(V1.ColorJitter, {"brightness": (0.5, 1.5), "contrast": None, "saturation": None, "hue": None})],
    "hue": [(V1.ColorJitter, {"brightness": None, "contrast": None, "saturation": None, "hue": (-0.5, 0.5)})],
    "color_jitter": [COLOR],
    "flip_color_crop": [FLIP, COLOR, CROP],
}


def train_transforms(*overrides: str) -> list:
    cfg = to_train_config(compose_train(*overrides))
    return list(build_train_transform(parse_train_pipeline(cfg.aug.train)).transforms)


@pytest.mark.parametrize("option", AUG_OPTIONS)
def test_aug_option_builds_the_books_pipeline(option):
    transforms = train_transforms(f"aug={option}")
    random_ops, to_tensor = transforms[:-1], transforms[-1]
    assert type(to_tensor) is ToTensor  # ToTensor (v1's values), last, as in the book
    assert len(random_ops) == len(BOOK[option])
    for op, (cls, attributes) in zip(random_ops, BOOK[option]):
        assert type(op) is cls
        for name, expected in attributes.items():
            value = getattr(op, name)
            assert (list(value) if isinstance(value, (list, tuple)) else value) == \
                (list(expected) if isinstance(expected, (list, tuple)) else expected), (option, name)


def test_default_aug_is_flip_only_and_backend_auto():
    cfg = to_train_config(compose_train())
    assert list(cfg.aug.train) == ["RandomHorizontalFlip"] and cfg.aug.backend == "auto"
    assert (cfg.trainer.epochs, cfg.trainer.batch_size, cfg.optim.name, cfg.optim.lr) == (10, 256, "adam", 1e-3)


def test_crop_size_follows_the_dataset():
    (crop, *_), = [train_transforms("aug=crop", "dataset=fashion_mnist")[:1]]
    assert list(crop.size) == [28, 28]


def test_pipeline_overrides_add_and_remove_ops_from_the_command_line():
    ops = parse_train_pipeline(to_train_config(compose_train(
        "aug=flip_color_crop", "aug.train.ColorJitter.hue=0.1", "+aug.train.RandomVerticalFlip.p=0.25",
        "~aug.train.RandomHorizontalFlip")).aug.train)
    assert [o.name for o in ops] == ["ColorJitter", "RandomResizedCrop", "RandomVerticalFlip"]
    assert ops[0].kwargs["hue"] == 0.1 and ops[2].kwargs == {"p": 0.25}


def test_test_transform_is_never_random():
    transforms = build_test_transform().transforms
    assert [type(t) for t in transforms] == [ToTensor]
    normalised = build_test_transform(mean=[0.5] * 3, std=[0.25] * 3).transforms
    assert type(normalised[-1]) is T.Normalize


@pytest.mark.parametrize("experiment", ["d2l_seed", "smoke"])
def test_experiments_compose(experiment):
    cfg = to_train_config(compose_train(f"experiment={experiment}"))
    if experiment == "d2l_seed":  # the book's exact recipe
        t = cfg.trainer
        assert list(cfg.aug.train) == ["RandomHorizontalFlip"] and cfg.aug.backend == "cpu"
        assert (cfg.model.name, cfg.optim.name, cfg.optim.lr, cfg.sched.name) == ("resnet18", "adam", 1e-3, "none")
        assert (t.epochs, t.batch_size, t.workers, t.precision, t.loss_reduction) == (10, 256, 4, "fp32", "sum")
        assert cfg.dataset.name == "cifar10" and not cfg.dataset.normalize
    else:
        assert cfg.dataset.name == "synthetic" and cfg.model.name == "small_cnn" and cfg.trainer.epochs == 1


@pytest.mark.parametrize("overrides, expected", [
    (["aug=mixup", "+aug.batch.MixUp.num_classes=5"],
     "aug.batch.MixUp.num_classes: is set by augrun (the dataset's classes, dataset.num_classes); valid: leave it out "
     "of aug.batch.MixUp"),
    (["optim.lr=0"], "optim.lr: got 0.0; valid: > 0"),
    (["trainer.ema.warmup=true"], "trainer.ema.warmup: true, but trainer.ema.decay=0 (no moving average to warm up)"),
    (["optim=adamw", "optim.nesterov=true"], "optim.nesterov: true, but adamw has no Nesterov variant; valid: false, "
                                             "or optim=sgd"),
])
def test_settings_augrun_sets_or_would_ignore_are_one_line(overrides: list[str], expected: str, in_workdir):
    assert refusal(*SMOKE, *overrides).startswith(expected)


def repeats_check(*overrides: str, nprocs: int = 1) -> None:
    cfg = to_train_config(compose_train(*SMOKE, *overrides))
    dryrun.micro_batches(cfg, nprocs=nprocs).check_repeats()


@pytest.mark.parametrize("overrides, nprocs, most", [
    (["aug.repeats=33"], 1, 32),                                        # batch 64: half of it
    (["aug.repeats=17"], 2, 16),                                        # 32 images a process
    (["aug.repeats=9", "trainer.accumulate_grad_batches=4"], 1, 8),     # micro-batches of 16
])
def test_repeats_that_could_fill_a_batch_with_one_image_are_refused(overrides, nprocs: int, most: int):
    with pytest.raises(ConfigError) as caught:
        repeats_check(*overrides, nprocs=nprocs)
    message = str(caught.value)
    assert message.startswith("aug.repeats: got") and f"valid: 1 <= repeats <= {most} (half the micro-batch" in message


def test_repeats_up_to_half_a_processs_micro_batch_are_accepted():
    repeats_check("aug.repeats=32")
    repeats_check("aug.repeats=16", nprocs=2)
    repeats_check("trainer.batch_size=1")  # no repeats: a batch of one is the batch size's business
