"""Per-dataset normalisation: the configured constants, image sizes and channels, and both backends applying them."""
from __future__ import annotations

import math

import pytest
import torch
import torchvision.transforms.v2 as T
from helpers import compose_train

from augrun.augment.cpu import build_test_transform, build_train_transform
from augrun.augment.ops import parse_train_pipeline
from augrun.config.compose import to_train_config
from augrun.data.batches import BatchFinisher

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
