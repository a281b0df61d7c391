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
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from augrun.augment.ops import TENSOR_OPS, OpSpec, build_torchvision_op
from augrun.config.schema import ModelConfig, TrainConfig
from augrun.data.batches import global_batch_lengths
from augrun.errors import ConfigError, first_line

DRAWS = 8  # images pushed through the train ops
STEP_IMAGES = 2  # the dry run's training step: the fewest images that batch statistics (BatchNorm) can train on
# what an error says when it is about the input's size (a kernel larger than the feature map, a ViT's fixed size)
SIZE_WORDS = ("size", "shape", "dimension", "height", "width", "kernel", "patch")
# bytes per pixel and channel while the synthetic data is made: float32 patterns, noise and their sum, then uint8
SYNTHETIC_BYTES_PER_VALUE = 13
MEMORY_SHARE = 0.8  # of the memory available now: the rest is for the model, workers and the system


def dry_run(*, train_ops: Sequence[OpSpec], batch_ops: Sequence[OpSpec], backend: str, image_size: int, channels: int,
            num_classes: int, mean: Sequence[float] | None, std: Sequence[float] | None, model: ModelConfig,
            streamed: bool = False, micro_batches: MicroBatches | None = None) -> None:
    """Raise a ConfigError naming the op, model or dataset key that cannot train on images of this shape.
    `streamed`: photos of their own sizes, which the train pipeline must bring to image_size. `micro_batches`: how the
    run splits its batches, so that the step trains on the smallest one a process will see (default: 2 images)."""
    if micro_batches is not None:
        micro_batches.check_repeats()
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
    _train_step(model, train, targets, channels=channels, num_classes=num_classes, image_size=image_size,
                micro_batches=micro_batches)


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


@dataclass(frozen=True)
class MicroBatches:
    """How a run cuts its training set into micro-batches for each process, as data.batches.epoch_plan does: batches
    of batch_size / accumulate_grad_batches images, the last one smaller (dropped under drop_last, or when it cannot
    give every process an image), each split over the processes."""
    batch_size: int
    accumulate: int
    nprocs: int
    train_size: int | None  # None: known only once the dataset is loaded; then only full micro-batches are checked
    drop_last: bool = False
    repeats: int = 1        # aug.repeats: each drawn image this many times in a row
    sync_bn: bool = False   # trainer.sync_bn: batch statistics over every process's share of a micro-batch

    @property
    def micro(self) -> int:
        return self.batch_size // self.accumulate

    @property
    def statistics_share(self) -> int:
        """Over how many processes a micro-batch is split for its batch statistics (one under sync_bn: all of it)."""
        return 1 if self.sync_bn else self.nprocs

    def lengths(self) -> list[int]:
        """Each micro-batch's images, all processes together, from the epoch plan's own arithmetic (train_size unknown:
        the full ones; an epoch without a step, fewer images than processes, is not the dry run's to refuse)."""
        if self.train_size is None:
            return [self.micro]
        return global_batch_lengths(self.train_size, self.micro, self.nprocs, self.drop_last) or [self.micro]

    def smallest(self) -> int:
        """The fewest images that batch statistics see in a training step (tensor_split: the last process's share)."""
        return min(length // self.statistics_share for length in self.lengths())

    def explain(self) -> str:
        """Where the smallest micro-batch comes from, with the arithmetic."""
        smallest, last = self.smallest(), self.lengths()[-1]
        shared = self.sync_bn and self.nprocs > 1  # SyncBatchNorm's statistics: every process's share together
        gives = f"{'holds' if shared else 'gives a process'} {smallest} image{'s' if smallest != 1 else ''}"
        over = f", split over {self.nprocs} processes" if self.statistics_share > 1 else ""
        over = f", over {self.nprocs} processes with trainer.sync_bn" if shared else over
        if last < self.micro and last // self.statistics_share == smallest:
            return (f"the last micro-batch of each epoch {gives} ({self.train_size} = "
                    f"{self.train_size // self.micro} x {self.micro} + {last}{over})")
        return (f"each micro-batch {gives} (trainer.batch_size={self.batch_size} / "
                f"accumulate_grad_batches={self.accumulate}{over})")

    def check_repeats(self) -> None:
        """A process's micro-batch holds at least two images: with repeats above half of it, a batch can be one image
        in copies, and the step learns from a single image."""
        most = self.micro // self.nprocs // 2
        if self.repeats > max(most, 1):
            over = f" over {self.nprocs} processes" if self.nprocs > 1 else ""
            valid = f"1 <= repeats <= {most}" if most else "1 (or a larger trainer.batch_size)"
            raise ConfigError("aug.repeats", f"got {self.repeats}, but a process's micro-batch holds "
                              f"{self.micro // self.nprocs} images (trainer.batch_size={self.batch_size} / "
                              f"accumulate_grad_batches={self.accumulate}{over}), so a batch could be one image "
                              f"repeated; valid: {valid} (half the micro-batch: at least two images a batch)")


def micro_batches(cfg: TrainConfig, *, nprocs: int) -> MicroBatches:
    """The run's micro-batches; torch.compile drops the last, smaller one (trainer.compile: a fixed shape)."""
    t = cfg.trainer
    return MicroBatches(t.batch_size, t.accumulate_grad_batches, nprocs, cfg.dataset.train_size, t.compile,
                        cfg.aug.repeats, t.sync_bn)


def _train_step(model: ModelConfig, images: torch.Tensor, targets: torch.Tensor, *, channels: int,
                num_classes: int, image_size: int, micro_batches: MicroBatches | None = None) -> None:
    """One forward and backward pass on the smallest micro-batch the run will see (at most STEP_IMAGES images)."""
    from augrun.models.networks import build_model
    count = min(STEP_IMAGES, micro_batches.smallest()) if micro_batches else STEP_IMAGES
    try:  # timm checks some of the user's options only as it builds, others only in the step
        net = build_model(model, in_channels=channels, num_classes=num_classes, image_size=image_size)
    except ConfigError:
        raise
    except Exception as error:
        raise _model_error(model, images, image_size, error) from None
    try:
        _step(net, images[:count], targets[:count])
    except Exception as error:
        # a model that trains on STEP_IMAGES but not on the run's fewest needs batch statistics: the batch is to blame
        if count < STEP_IMAGES and _trains(net, images[:STEP_IMAGES], targets[:STEP_IMAGES]):
            raise _batch_error(model, micro_batches, error) from None
        raise _model_error(model, images, image_size, error) from None


def _step(net: torch.nn.Module, images: torch.Tensor, targets: torch.Tensor) -> None:
    net.train()
    net.zero_grad(set_to_none=True)
    torch.nn.functional.cross_entropy(net(images.float()), targets).backward()


def _trains(net: torch.nn.Module, images: torch.Tensor, targets: torch.Tensor) -> bool:
    try:
        _step(net, images, targets)
    except Exception:
        return False
    return True


def _batch_error(model: ModelConfig, micro_batches: MicroBatches, error: Exception) -> ConfigError:
    return ConfigError("trainer.batch_size", f"{micro_batches.explain()}, and {model.name} cannot train on so few "
                       f"({_reason(error)}); valid: a dataset.train_size, trainer.batch_size and "
                       "trainer.accumulate_grad_batches that leave at least 2 images per micro-batch and process, or a "
                       "model without batch statistics")


def _model_error(model: ModelConfig, images: torch.Tensor, image_size: int, error: Exception) -> ConfigError:
    """Blame the image size only for an error about sizes; otherwise the options the user gave the model."""
    reason = _reason(error)
    if model.options and not any(word in reason.lower() for word in SIZE_WORDS):  # only timm models take options
        from augrun.models.timm_models import options_error
        return options_error(model.name, model.options, reason)
    return ConfigError("model", f"{model.name} cannot train on {_shape(images[0])} images (dataset.image_size="
                       f"{image_size} after aug.train): {reason}; valid: a larger dataset.image_size or crop size, "
                       "or another model")


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
