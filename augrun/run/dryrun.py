"""A dry run of one training step on a few made-up images, in the pre-check, so that a config the schema accepts but
the run cannot use fails in seconds, with one line naming the config group, before any directory or file exists.

It pushes images of the dataset's shape through each train op in turn (so a failure names its op), the test transform,
the batch ops, and one forward and backward pass of the model on the CPU; and it estimates the memory the decoded
dataset will take. Several random draws per op: an op that fails only for some draws (RandAugment picking an op with
a magnitude table) is still caught.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image

from augrun.augment.ops import TENSOR_OPS, OpSpec, build_torchvision_op
from augrun.config.schema import ModelConfig
from augrun.errors import ConfigError, first_line

DRAWS = 8  # images pushed through the train ops; BatchNorm needs at least 2 for the forward pass
# bytes per pixel and channel while the synthetic data is made: float32 patterns, noise and their sum, then uint8
SYNTHETIC_BYTES_PER_VALUE = 13
MEMORY_SHARE = 0.8  # of the memory available now: the rest is for the model, workers and the system


def dry_run(*, train_ops: Sequence[OpSpec], batch_ops: Sequence[OpSpec], backend: str, image_size: int, channels: int,
            num_classes: int, mean: Sequence[float] | None, std: Sequence[float] | None, model: ModelConfig,
            streamed: bool = False) -> None:
    """Raise a ConfigError naming the op, model or dataset key that cannot train on images of this shape.
    `streamed`: photos of their own sizes, which the train pipeline must bring to image_size."""
    torch.manual_seed(0)
    if streamed:
        train = _streamed_train_batch(train_ops, backend=backend, image_size=image_size, mean=mean, std=std)
    else:
        images = torch.randint(0, 256, (DRAWS, channels, image_size, image_size), dtype=torch.uint8)
        pictures = [_picture(pixels) for pixels in images]
        if backend == "gpu":
            train = _gpu_train_batch(train_ops, images)
        else:
            train = torch.stack(_cpu_train_images(train_ops, pictures, mean=mean, std=std))
    targets = _batch_ops(batch_ops, train, torch.arange(DRAWS) % num_classes, num_classes)
    _train_step(model, train, targets, channels=channels, num_classes=num_classes, image_size=image_size)


def _picture(pixels: torch.Tensor) -> Image.Image:
    return Image.fromarray(pixels.permute(1, 2, 0).squeeze(-1).numpy())


def _streamed_train_batch(specs: Sequence[OpSpec], *, backend: str, image_size: int, mean, std) -> torch.Tensor:
    """Made-up photos of several sizes and aspect ratios through the streamed path (for the gpu backend: the workers'
    ops, then the device's), refused unless every one comes out image_size x image_size."""
    from augrun.data.photos import split_for_device
    worker_ops, device_ops = split_for_device(specs) if backend == "gpu" else (list(specs), [])
    side = image_size
    shapes = [(side, side * 4 // 3), (side * 3 // 2, side), (2 * side, 2 * side), (side * 5 // 4, side * 5 // 3)]
    pictures = [_picture(torch.randint(0, 256, (3, *shapes[i % len(shapes)]), dtype=torch.uint8)) for i in range(DRAWS)]
    normalized = (mean, std) if backend == "cpu" else (None, None)  # the gpu backend normalises on the device
    images = _cpu_train_images(worker_ops, pictures, mean=normalized[0], std=normalized[1], same_size=False)
    sizes = sorted({tuple(t.shape[-2:]) for t in images})
    if sizes != [(side, side)]:
        got = ", ".join("x".join(map(str, s)) for s in sizes)
        crop = next((s.key for s in worker_ops if s.name in ("RandomResizedCrop", "RandomCrop")), None)
        fix = (f"{crop}.size={side}" if crop else f"+aug.train.RandomResizedCrop.size={side}, or "
               f"+aug.train.Resize.size={side} +aug.train.RandomCrop.size={side}")
        raise ConfigError("aug.train", f"dataset.storage=stream: photos of their own sizes must come out of the train "
                          f"pipeline as dataset.image_size ({side}x{side}), but it gives {got}; valid: {fix}")
    batch = torch.stack(images)
    return _gpu_train_batch(device_ops, batch) if backend == "gpu" else batch


def _cpu_train_images(specs: Sequence[OpSpec], pictures: list[Image.Image], *, mean, std,
                      same_size: bool = True) -> list[torch.Tensor]:
    """Each image through each op, as the cpu backend's workers run them (PIL ops, then tensor ops)."""
    import torchvision.transforms.v2 as T

    from augrun.augment.cpu import build_test_transform
    ordered = [s for s in specs if s.name not in TENSOR_OPS] + [s for s in specs if s.name in TENSOR_OPS]
    to_tensor = T.Compose([T.ToImage(), T.ToDtype(torch.float32, scale=True)])
    out = []
    for image in pictures:
        for spec in ordered:
            if spec.name in TENSOR_OPS and isinstance(image, Image.Image):
                image = to_tensor(image)
            image = _apply(spec, build_torchvision_op(spec), image)
        tensor = image if isinstance(image, torch.Tensor) else to_tensor(image)
        if mean is not None:
            tensor = T.Normalize(list(mean), list(std))(tensor)
        out.append(tensor)
    build_test_transform(mean=mean, std=std)(pictures[0])
    sizes = sorted({tuple(t.shape) for t in out})
    if same_size and len(sizes) > 1:
        raise ConfigError("aug.train", f"the pipeline gives images of different sizes ({', '.join('x'.join(map(str, s)) for s in sizes)}), "
                          "which cannot form a batch; valid: end it with an op of fixed output size, e.g. "
                          f"+aug.train.RandomResizedCrop.size={pictures[0].height}")
    return out


def _gpu_train_batch(specs: Sequence[OpSpec], images: torch.Tensor) -> torch.Tensor:
    """The batch through the gpu backend's pipeline (on the CPU: the ops are plain torch), one op at a time, so that a
    failure names its op."""
    from augrun.augment.gpu_pipeline import build_pipeline
    from augrun.augment.pixels import to_float
    batch = to_float(images) if images.dtype == torch.uint8 else images
    generator = torch.Generator().manual_seed(0)
    for spec, op in zip(specs, build_pipeline(specs).ops):
        batch = _apply(spec, lambda b: op(b, generator), batch)
    return batch


def _apply(spec: OpSpec, op, image):
    try:
        return op(image)
    except Exception as error:  # torchvision's own checks (a crop larger than the image, a magnitude out of range)
        raise ConfigError(spec.key, f"fails on a {_shape(image)} image: {_reason(error)}; valid: arguments that fit "
                          "the dataset's images (dataset.image_size)") from None


def _batch_ops(specs: Sequence[OpSpec], images: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    from augrun.augment.gpu_pipeline import build_batch_op
    generator = torch.Generator().manual_seed(0)
    targets = labels
    for spec in specs:
        op = build_batch_op(spec, num_classes=num_classes)
        try:
            images, targets = op(images, labels, generator)
        except Exception as error:
            raise ConfigError(spec.key, f"fails on a batch of {_shape(images)} images: {_reason(error)}") from None
    return targets


def _train_step(model: ModelConfig, images: torch.Tensor, targets: torch.Tensor, *, channels: int,
                num_classes: int, image_size: int) -> None:
    from augrun.models.networks import build_model
    net = build_model(model, in_channels=channels, num_classes=num_classes, image_size=image_size)
    net.train()
    try:
        loss = torch.nn.functional.cross_entropy(net(images[:2].float()), targets[:2])
        loss.backward()
    except Exception as error:
        raise ConfigError("model", f"{model.name} cannot train on {_shape(images[0])} images (dataset.image_size="
                          f"{image_size} after aug.train): {_reason(error)}; valid: a larger dataset.image_size or "
                          "crop size, or another model") from None


def _shape(image) -> str:
    if isinstance(image, Image.Image):
        return f"{image.width}x{image.height}"
    return "x".join(map(str, image.shape[-3:]))


def _reason(error: BaseException) -> str:
    return " ".join(first_line(error).split()).rstrip(".") if str(error).strip() else type(error).__name__


# --- memory -----------------------------------------------------------------------------------------------------------

def check_dataset_memory(name: str, root: str, *, image_size: int, channels: int, train_size: int | None,
                         test_size: int | None, available: int | None = None) -> None:
    """Refuse a dataset whose decoded copy cannot fit in this machine's memory, naming the key that makes it big."""
    needed, key = estimate_dataset_bytes(name, root, image_size=image_size, channels=channels, train_size=train_size,
                                         test_size=test_size)
    available = available_memory() if available is None else available
    if available and needed > MEMORY_SHARE * available:
        gib = 2.0 ** 30
        raise ConfigError(key, f"the decoded dataset needs about {needed / gib:,.1f} GiB, and this machine has "
                          f"{available / gib:,.1f} GiB of memory available; valid: a smaller dataset.image_size, "
                          "dataset.train_size or dataset.test_size")


def estimate_dataset_bytes(name: str, root: str, *, image_size: int, channels: int, train_size: int | None,
                           test_size: int | None) -> tuple[int, str]:
    """The peak bytes of loading the dataset, and the key most to blame. CIFAR and Fashion-MNIST are small and fixed."""
    values = channels * image_size * image_size
    rehearsal = DRAWS * values * SYNTHETIC_BYTES_PER_VALUE  # the dry run's own made-up images
    needed, key = _dataset_bytes(name, root, values, train_size, test_size)
    return max(needed, rehearsal), key if needed >= rehearsal else "dataset.image_size"


def _dataset_bytes(name: str, root: str, values: int, train_size: int | None, test_size: int | None) -> tuple[int, str]:
    if name == "synthetic":
        count = (train_size or 512) + (test_size or 256)
        key = "dataset.image_size" if values > 3 * 512 * 512 else "dataset.train_size"
        return count * values * SYNTHETIC_BYTES_PER_VALUE, key
    if name == "imagefolder":
        count = _count_files(Path(root))
        count = min(count, (train_size or count) + (test_size or count))
        return count * values, "dataset.image_size"
    return 0, "dataset"


def _count_files(root: Path) -> int:
    total = 0
    for split in ("train", "test"):
        try:
            total += sum(1 for c in (root / split).iterdir() if c.is_dir() for f in c.iterdir())
        except OSError:  # a missing folder is reported by the loader, with its own message
            pass
    return total


def available_memory() -> int | None:
    """Bytes of memory available now (Linux's MemAvailable), or None where it cannot be read."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None
