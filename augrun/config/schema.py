"""Config schemas (registered in Hydra's ConfigStore) and the range checks types cannot express.

Hydra merges every YAML into these dataclasses while composing, so an unknown key or a wrong type fails at composition;
`check_ranges` then checks values. Both end in a `ConfigError` that names the key and what would be valid.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from augrun.errors import ConfigError


@dataclass
class AugConfig:
    backend: str = "auto"
    train: dict[str, Any] = field(default_factory=dict)
    batch: dict[str, Any] = field(default_factory=dict)
    repeats: int = 1   # repeated augmentation (DeiT): each drawn image this many times per batch, with its own draws


@dataclass
class DatasetConfig:
    name: str = MISSING
    root: str = MISSING
    download: bool = True
    image_size: int = 32
    channels: int = 3
    num_classes: int = 10
    train_size: Optional[int] = None
    test_size: Optional[int] = None
    normalize: bool = False
    mean: list[float] = field(default_factory=list)
    std: list[float] = field(default_factory=list)
    storage: str = "auto"               # image folders: memory | stream | auto (augrun/folders.py)
    cache_dir: Optional[str] = None     # memory storage's decoded copy; null: $XDG_CACHE_HOME/augrun or ~/.cache/augrun
    memory_limit_gb: float = 4.0        # auto: memory only when the decoded dataset fits this
    eval_resize_ratio: float = 0.875    # streamed test images: shorter side to image_size / ratio, then centre crop


@dataclass
class ModelConfig:
    name: str = MISSING
    source: str = "augrun"          # augrun: one of augrun's models; timm: any timm.list_models() name
    width: int = 64
    pretrained: bool = False
    drop_path_rate: float = 0.0     # stochastic depth (timm models)
    options: dict[str, Any] = field(default_factory=dict)  # more of timm.create_model's keyword arguments


@dataclass
class OptimConfig:
    name: str = MISSING
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.9
    nesterov: bool = False


@dataclass
class SchedConfig:
    name: str = "none"
    warmup_epochs: int = 0
    pct_start: float = 0.25


@dataclass
class EmaConfig:
    """An exponential moving average of the weights, evaluated beside them (test_acc_ema) and kept in the checkpoint."""
    decay: float = 0.0      # 0: off; else the weight of the average at each optimizer step, e.g. 0.9998
    warmup: bool = False    # timm's warmup: decay min(decay, (1 + t) / (10 + t)) at update t, so early averages move


@dataclass
class TrainerConfig:
    epochs: int = 10
    batch_size: int = 256
    devices: Any = "auto"
    nprocs: Optional[int] = None
    strategy: str = "ddp"
    workers: int = 4
    precision: str = "auto"
    channels_last: bool = True
    compile: bool = False
    label_smoothing: float = 0.0
    tta: str = "none"
    eval_every: int = 1
    loss_reduction: str = "mean"
    progress_updates: int = 10
    threads: Optional[int] = None
    rendezvous_timeout_s: float = 600.0
    clip_grad_norm: float = 0.0             # clip the gradients' global L2 norm to this before each step; 0: off
    accumulate_grad_batches: int = 1        # micro-batches per optimizer step; batch_size stays the batch of a step
    sync_bn: bool = False                   # batch-norm statistics over every rank's images under DDP
    ema: EmaConfig = field(default_factory=EmaConfig)


@dataclass
class LoggerConfig:
    """The trackers a run logs to beside its own files, picked by `logger=` (conf/logger/), several as a list."""
    tensorboard: bool = False       # TensorBoard event files in the run directory
    mlflow: bool = False            # an MLflow tracking store (augrun.report.mlflow_tracking)
    # MLflow's store: $MLFLOW_TRACKING_URI wins, then this, then sqlite:///<the launch directory>/outputs/mlflow.db
    tracking_uri: Optional[str] = None
    experiment_name: str = "augrun"


@dataclass
class TrainConfig:
    aug: AugConfig = field(default_factory=AugConfig)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    sched: SchedConfig = field(default_factory=SchedConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    seed: int = 0
    resume: bool = False
    logger: LoggerConfig = field(default_factory=LoggerConfig)


def register_schemas() -> None:
    ConfigStore.instance().store(name="train_schema", node=TrainConfig)


CHOICES = {
    "model.source": ("augrun", "timm"),
    "aug.backend": ("auto", "cpu", "gpu"),
    "dataset.storage": ("auto", "memory", "stream"),
    "trainer.strategy": ("ddp", "dp"),
    "trainer.precision": ("auto", "fp32", "bf16", "fp16"),
    "trainer.loss_reduction": ("mean", "sum"),
    "trainer.tta": ("none", "flip"),
}


def check_choice(key: str, value: str) -> None:
    if value not in CHOICES[key]:
        raise ConfigError(key, f"got {value!r}; valid: {', '.join(CHOICES[key])}")


def check_at_least(key: str, value: float | None, minimum: float, *, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if value is None or value < minimum:
        raise ConfigError(key, f"got {value}; must be >= {minimum}" + (" or null" if allow_none else ""))


def check_above(key: str, value: float, minimum: float) -> None:
    if not value > minimum:
        raise ConfigError(key, f"got {value}; valid: > {minimum:g}")


# optimizers that take optim.nesterov (augrun.models.optim): the others build without it
NESTEROV_OPTIMIZERS = ("sgd",)


def check_not_ignored(cfg: TrainConfig) -> None:
    """A setting that the rest of the config switches off would be ignored in silence: the user meant something else."""
    t, o = cfg.trainer, cfg.optim
    ignored = (
        ("trainer.ema.warmup", t.ema.warmup and t.ema.decay == 0,
         "true, but trainer.ema.decay=0 (no moving average to warm up); valid: false, or a trainer.ema.decay > 0, "
         "e.g. 0.9998"),
        ("optim.nesterov", o.nesterov and o.name not in NESTEROV_OPTIMIZERS,
         f"true, but {o.name} has no Nesterov variant; valid: false, or "
         f"{' or '.join(f'optim={name}' for name in NESTEROV_OPTIMIZERS)}"),
    )
    for key, is_ignored, message in ignored:
        if is_ignored:
            raise ConfigError(key, message)


def check_finite(value: Any, key: str = "") -> None:
    """Every float anywhere in the config (op arguments included) is a finite number: YAML and Hydra accept nan and
    inf, and a NaN learning rate would only show as a NaN loss an epoch later."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(key, f"got {value}; valid: a finite number")
    if isinstance(value, dict):
        for name, item in value.items():
            check_finite(item, f"{key}.{name}" if key else str(name))
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            check_finite(item, f"{key}[{index}]")


def check_ranges(cfg: TrainConfig) -> None:
    """The checks that types cannot express. Devices are checked in distributed.resolve_devices, and the names of
    models, datasets, optimizers and schedules by their registries (trainer.prepare)."""
    check_finite(dataclasses.asdict(cfg))
    for key in CHOICES:
        section, _, name = key.rpartition(".")
        check_choice(key, getattr(getattr(cfg, section) if section else cfg, name))
    check_at_least("aug.repeats", cfg.aug.repeats, 1)
    t = cfg.trainer
    check_at_least("trainer.epochs", t.epochs, 1)
    check_at_least("trainer.batch_size", t.batch_size, 1)
    check_at_least("trainer.workers", t.workers, 0)
    check_at_least("trainer.nprocs", t.nprocs, 1, allow_none=True)
    check_at_least("trainer.progress_updates", t.progress_updates, 1)
    check_at_least("trainer.eval_every", t.eval_every, 1)
    check_at_least("trainer.threads", t.threads, 1, allow_none=True)
    check_at_least("trainer.rendezvous_timeout_s", t.rendezvous_timeout_s, 1)
    check_at_least("trainer.accumulate_grad_batches", t.accumulate_grad_batches, 1)
    if t.batch_size % t.accumulate_grad_batches:
        raise ConfigError("trainer.accumulate_grad_batches", f"{t.accumulate_grad_batches} does not divide "
                          f"trainer.batch_size={t.batch_size} (the batch of one optimizer step); valid: a divisor "
                          "of it, e.g. 1, 2 or 4")
    if not t.clip_grad_norm >= 0:
        raise ConfigError("trainer.clip_grad_norm", f"got {t.clip_grad_norm}; valid: a norm > 0, or 0 (off)")
    if not 0.0 <= t.ema.decay < 1.0:
        raise ConfigError("trainer.ema.decay", f"got {t.ema.decay}; valid: 0 (off) or 0 < decay < 1, e.g. 0.9998")
    if not 0.0 <= t.label_smoothing < 1.0:
        raise ConfigError("trainer.label_smoothing", f"got {t.label_smoothing}; valid: 0 <= value < 1")
    o = cfg.optim
    check_above("optim.lr", o.lr, 0.0)  # 0 would train nothing, every epoch
    check_at_least("optim.weight_decay", o.weight_decay, 0.0)
    if not 0.0 <= o.momentum < 1.0:
        raise ConfigError("optim.momentum", f"got {o.momentum}; valid: 0 <= value < 1")
    s = cfg.sched
    check_at_least("sched.warmup_epochs", s.warmup_epochs, 0)
    if not 0.0 < s.pct_start < 1.0:
        raise ConfigError("sched.pct_start", f"got {s.pct_start}; valid: 0 < value < 1")
    d = cfg.dataset
    check_at_least("dataset.image_size", d.image_size, 1)
    check_at_least("dataset.train_size", d.train_size, 1, allow_none=True)
    check_at_least("dataset.test_size", d.test_size, 1, allow_none=True)
    if not d.memory_limit_gb > 0:
        raise ConfigError("dataset.memory_limit_gb", f"got {d.memory_limit_gb}; valid: a number of GB > 0")
    if not 0 < d.eval_resize_ratio <= 1:
        raise ConfigError("dataset.eval_resize_ratio", f"got {d.eval_resize_ratio}; valid: 0 < ratio <= 1 (0.875: "
                          "resize to image_size / 0.875, then centre-crop image_size)")
    if d.channels not in (1, 3):
        raise ConfigError("dataset.channels", f"got {d.channels}; valid: 1, 3")
    check_at_least("dataset.num_classes", d.num_classes, 2)
    if d.normalize and (not d.std or any(s <= 0 for s in d.std)):
        raise ConfigError("dataset.std", f"got {list(d.std)}; every std must be > 0 when normalize is true")
    if d.normalize and not len(d.mean) == len(d.std) == d.channels:
        # named after what the user set: normalising images of this many channels with the statistics given
        raise ConfigError("dataset.normalize", f"true for images of dataset.channels={d.channels}, with "
                          f"{len(d.mean)} dataset.mean and {len(d.std)} dataset.std values; valid: one of each per "
                          f"channel, e.g. dataset.mean={[0.5] * d.channels} dataset.std={[0.25] * d.channels}, or "
                          "dataset.normalize=false")
    check_not_ignored(cfg)
    check_at_least("model.width", cfg.model.width, 1)
    if not 0.0 <= cfg.model.drop_path_rate < 1.0:
        raise ConfigError("model.drop_path_rate", f"got {cfg.model.drop_path_rate}; valid: 0 <= value < 1")
