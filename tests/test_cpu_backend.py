"""The cpu backend gives the book's values: its classes and its ToTensor against d2l's torchvision v1 Compose, bit for
bit, for the same seed, and per image as the workers run it."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision.transforms as V1
from helpers import compose_train
from PIL import Image

from augrun.augment import cpu
from augrun.augment.ops import REGISTRY, TENSOR_OPS, parse_train_pipeline, torchvision_arguments
from augrun.config.compose import to_train_config
from augrun.data.batches import AugmentedImages
from augrun.data.datasets import make_synthetic
from augrun.seeding import derive_seed

SEED_PIPELINES = ["none", "flip_only", "vflip", "crop", "brightness", "hue", "color_jitter", "flip_color_crop"]


def book_compose(specs) -> V1.Compose:
    """d2l 14.1's pipeline: torchvision v1 classes, ToTensor, then the tensor ops."""
    ops = [getattr(V1, s.name)(**torchvision_arguments(s.kwargs)) for s in specs]
    return V1.Compose([op for op, s in zip(ops, specs) if s.name not in TENSOR_OPS] + [V1.ToTensor()]
                      + [op for op, s in zip(ops, specs) if s.name in TENSOR_OPS])


@pytest.fixture(scope="module")
def images():
    return make_synthetic(image_size=32, channels=3, num_classes=4, train_size=24, test_size=1).train


@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_to_tensor_is_v1s_for_every_pixel_value(mode):
    every_value = np.arange(256, dtype=np.uint8).reshape(16, 16)
    channels = [every_value, every_value[::-1], every_value.T]  # each channel its own order
    image = Image.fromarray(every_value if mode == "L" else np.stack(channels, -1))
    ours, book = cpu.ToTensor()(image), V1.ToTensor()(image)
    assert ours.dtype == torch.float32 and ours.shape == book.shape and ours.is_contiguous()
    assert torch.equal(ours, book)
    assert 0.0 <= ours.min() and ours.max() <= 1.0


def test_to_tensor_leaves_other_modes_to_v1():
    image = Image.fromarray(np.arange(64, dtype=np.float32).reshape(8, 8), mode="F")
    assert torch.equal(cpu.ToTensor()(image), V1.ToTensor()(image))


@pytest.mark.parametrize("option", SEED_PIPELINES)
def test_train_transform_equals_the_books_compose_for_the_same_seed(option, images):
    specs = parse_train_pipeline(to_train_config(compose_train(f"aug={option}")).aug.train)
    ours, book = cpu.build_train_transform(specs), book_compose(specs)
    for index, pixels in enumerate(images.images.permute(0, 2, 3, 1).numpy()):
        outputs = []
        for transform in (ours, book):
            torch.manual_seed(index)
            outputs.append(transform(Image.fromarray(pixels)))
        assert outputs[0].dtype == torch.float32 and 0.0 <= outputs[0].min() and outputs[0].max() <= 1.0
        assert torch.equal(*outputs), (option, index)


def test_workers_draw_what_the_books_compose_draws_for_the_images_seed(images):
    """A worker seeds torch's generator by (seed, epoch, index) and then runs the book's draws unchanged."""
    specs = parse_train_pipeline(to_train_config(compose_train("aug=flip_color_crop")).aug.train)
    dataset, book = AugmentedImages(images, cpu.build_train_transform(specs), seed=3), book_compose(specs)
    pixels = images.images.permute(0, 2, 3, 1).numpy()
    for index in range(len(images)):
        torch.manual_seed(derive_seed(3, "aug", 2, index))
        expected = book(Image.fromarray(pixels[index]))
        image, label = dataset[(2, index)]
        assert torch.equal(image, expected) and label == images.labels[index]


def test_test_transform_is_the_books_to_tensor(images):
    pixels = images.images[0].permute(1, 2, 0).numpy()
    assert torch.equal(cpu.build_test_transform()(Image.fromarray(pixels)), V1.ToTensor()(Image.fromarray(pixels)))


def test_every_fastest_class_is_a_registered_op_with_its_arguments():
    for name, cls in cpu.FASTEST_CLASS.items():
        assert name in REGISTRY and REGISTRY[name].alias is None, name
        assert cls.__name__ == name  # the same op, from torchvision v1 or v2
