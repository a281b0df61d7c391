"""A run's parts on one process, built from its TrainConfig, the loaded data, the parsed ops and the placement: the
model (laid out, wrapped for DDP or DataParallel, compiled), the optimizer and schedule, the loss, the precision, and
the train and test batch sources. This is where the config is read: each part's own builder (models, optim, augment,
data) takes plain values."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from augrun.augment import cpu as cpu_backend
from augrun.augment.gpu_pipeline import build_batch_op, build_pipeline
from augrun.augment.ops import OpSpec
from augrun.config.schema import TrainConfig
from augrun.data.batches import BatchFinisher, DeviceBatches, WorkerBatches, check_fits_on_device
from augrun.data.datasets import DataSplits
from augrun.models.networks import build_model
from augrun.models.optim import build_optimizer, build_scheduler
from augrun.run.distributed import Placement
from augrun.run.ema import ModelEma
from augrun.run.update import Updater
from augrun.seeding import derive_seed


@dataclass
class BuiltRun:
    model: nn.Module          # the bare model: its state_dict is what a checkpoint holds
    wrapped: nn.Module        # DDP / DataParallel around it: evaluation runs this (eager)
    trained: nn.Module        # `wrapped`, compiled when asked: training runs this
    loss_fn: nn.Module        # per-image losses; the engine reduces them
    amp_dtype: torch.dtype | None
    train_batches: DeviceBatches | WorkerBatches  # or augrun.data.streaming.StreamBatches for streamed photos
    test_batches: DeviceBatches | WorkerBatches
    updater: Updater          # gradients to weights: loss scale, accumulation, clipping, optimizer, schedule, EMA

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        return self.updater.optimizer

    @property
    def scheduler(self) -> torch.optim.lr_scheduler.LRScheduler | None:
        return self.updater.scheduler

    @property
    def steps(self) -> int:
        """Training steps (micro-batches) per epoch on this rank."""
        return self.updater.micro_steps


def build_run(cfg: TrainConfig, data: DataSplits, *, backend: str, train_ops: Sequence[OpSpec],
              batch_ops: Sequence[OpSpec], placement: Placement, rank: int, world: int,
              device: torch.device) -> BuiltRun:
    t = cfg.trainer
    torch.manual_seed(derive_seed(cfg.seed, "init"))  # the same initial weights on every rank and every resume
    model = build_model(cfg.model, in_channels=data.channels, num_classes=data.num_classes,
                        image_size=data.image_size)
    if t.sync_bn and world > 1:  # the pre-check refuses it on the CPU, where SyncBatchNorm cannot run
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model = model.to(device)
    wrapped = wrap_model(model, channels_last=t.channels_last, placement=placement, device=device, world=world)
    # Only training is compiled. Evaluation stays eager: compiling it would add two more graphs to compile (eval-mode
    # batch norm, then the smaller last test batch) for a pass that is a small share of an epoch's work.
    trained = torch.compile(wrapped) if t.compile else wrapped
    train_batches, test_batches = batch_sources(cfg, data, backend=backend, train_ops=train_ops, batch_ops=batch_ops,
                                                rank=rank, world=world, device=device)
    lengths = train_batches.batch_lengths()
    optimizer_steps = -(-len(lengths) // t.accumulate_grad_batches)
    optimizer = build_optimizer(cfg.optim.name, model, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay,
                                momentum=cfg.optim.momentum, nesterov=cfg.optim.nesterov)
    scheduler = build_scheduler(cfg.sched.name, optimizer, lr=cfg.optim.lr, epochs=t.epochs,
                                steps_per_epoch=optimizer_steps, warmup_epochs=cfg.sched.warmup_epochs,
                                pct_start=cfg.sched.pct_start)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=t.label_smoothing, reduction="none")
    ema = ModelEma(model, decay=t.ema.decay, warmup=t.ema.warmup) if t.ema.decay > 0 else None
    scaler = torch.amp.GradScaler(device.type) if t.precision == "fp16" else None
    updater = Updater(model, optimizer, scheduler, scaler, t.accumulate_grad_batches, t.clip_grad_norm, ema,
                      lengths)
    return BuiltRun(model, wrapped, trained, loss_fn, amp_dtype(t.precision, device), train_batches, test_batches,
                    updater)


def batch_sources(cfg: TrainConfig, data: DataSplits, *, backend: str, train_ops: Sequence[OpSpec],
                  batch_ops: Sequence[OpSpec], rank: int, world: int, device: torch.device):
    """The train and test batch sources of this rank, for the resolved augmentation backend."""
    mean, std = (cfg.dataset.mean, cfg.dataset.std) if cfg.dataset.normalize else (None, None)
    channels_last = cfg.trainer.channels_last and device.type == "cuda"
    mixing = [build_batch_op(s, num_classes=data.num_classes) for s in batch_ops]
    finish_train = BatchFinisher(device=device, mean=mean, std=std, channels_last=channels_last, seed=cfg.seed,
                                 rank=rank, batch_ops=mixing)
    finish_test = BatchFinisher(device=device, mean=mean, std=std, channels_last=channels_last)
    compiling = cfg.trainer.compile
    # torch.compile specialises on the batch shape: a smaller last batch would compile the model again
    # with gradient accumulation a batch is one micro-batch of an optimizer step's batch_size
    micro_batch = cfg.trainer.batch_size // cfg.trainer.accumulate_grad_batches
    shared = dict(batch_size=micro_batch, seed=cfg.seed, rank=rank, world_size=world)
    repeats = cfg.aug.repeats  # training only: the test set is seen once
    if data.streamed:  # photo folders decoded per image each epoch (augrun/data/streaming.py)
        from augrun.data.streaming import stream_sources
        return stream_sources(data.train, data.test, backend=backend, train_ops=train_ops, finish_train=finish_train,
                              finish_test=finish_test, mean=mean, std=std, workers=cfg.trainer.workers,
                              eval_resize_ratio=cfg.dataset.eval_resize_ratio, drop_last=compiling, repeats=repeats,
                              **shared)
    if backend == "gpu":
        if device.type == "cuda":
            nbytes = sum(part.images.nbytes + part.labels.nbytes for part in (data.train, data.test))
            check_fits_on_device(nbytes, torch.cuda.mem_get_info(device)[0], str(device))
        pipeline = build_pipeline(train_ops) if train_ops else None  # None: nothing to draw, no per-step reseed
        train = DeviceBatches(data.train, pipeline, finish_train, shuffle=True, drop_last=compiling, repeats=repeats,
                              **shared)
        test = DeviceBatches(data.test, None, finish_test, shuffle=False, **shared)
    else:
        workers = cfg.trainer.workers
        train = WorkerBatches(data.train, cpu_backend.build_train_transform(train_ops, mean=mean, std=std),
                              finish_train, workers=workers, shuffle=True, drop_last=compiling, repeats=repeats,
                              **shared)
        test = WorkerBatches(data.test, cpu_backend.build_test_transform(mean=mean, std=std), finish_test,
                             workers=workers, shuffle=False, **shared)
    return train, test


def wrap_model(model: nn.Module, *, channels_last: bool, placement: Placement, device: torch.device,
               world: int) -> nn.Module:
    if channels_last and device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    if world > 1:
        return nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if placement.strategy == "dp":
        return nn.DataParallel(model, device_ids=list(placement.gpu_indices))
    return model


def amp_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    if precision == "fp16":
        return torch.float16
    if precision == "bf16" or (precision == "auto" and device.type == "cuda"):
        return torch.bfloat16
    return None
