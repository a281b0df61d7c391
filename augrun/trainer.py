"""A training run: data, model and loop put together from a validated config, on every process of the run.

`prepare` does everything that can fail on bad input before any process starts or any file is written; `run` launches
the processes; `_worker` is what each process runs. Rank 0 alone prints and writes.
"""
from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from augrun import checkpoint, distributed, dryrun, rundir, signals
from augrun.augment import cpu as cpu_backend
from augrun.augment.ops import OpSpec, parse_batch_pipeline, parse_train_pipeline, resolve_backend
from augrun.batches import BatchFinisher, DeviceBatches, WorkerBatches, check_fits_on_device
from augrun.config import ConfigError, TrainConfig
from augrun.data import DATASETS, DataSplits, load_dataset
from augrun.engine import EpochState, evaluate, train_one_epoch
from augrun.models import MODELS, build_model
from augrun.optim import OPTIMIZERS, SCHEDULES, build_optimizer, build_scheduler
from augrun.report import MetricsFiles, RunConsole, TensorBoardLog, check_logger
from augrun.seeding import derive_seed
from augrun.signals import SignalFlag


@dataclass
class Prepared:
    """Everything a process needs, checked and loaded once in the launching process."""
    cfg: TrainConfig
    run_dir: Path
    placement: distributed.Placement
    backend: str
    train_ops: list[OpSpec]
    batch_ops: list[OpSpec]
    data: DataSplits
    resume_state: dict[str, Any] | None
    config_dict: dict[str, Any]


# raised when a signal stopped the run, rank 0 having printed the note; carries the exit status (130, 143)
StopRun = signals.Stopped


def comparable_config(cfg: TrainConfig) -> dict[str, Any]:
    """The config a checkpoint must match to be resumed. What cannot change the numbers may differ: resume itself, the
    logger, progress updates, and the worker count (every image's draws are seeded by its index, not its worker)."""
    plain = dataclasses.asdict(cfg)
    for key in ("resume", "logger"):
        plain.pop(key)
    for key in ("progress_updates", "workers"):
        plain["trainer"].pop(key)
    return plain


def prepare(cfg: TrainConfig, run_dir: Path, *, visible_gpus: int, warn, job_num: int = 0,
            rehearse: bool = False) -> Prepared:
    """Everything a run needs, checked, with its data loaded. `rehearse`: also dry-run one training step on made-up
    images and estimate the data's memory first (the pre-check does; the run itself need not again)."""
    for registry, name in ((MODELS, cfg.model.name), (DATASETS, cfg.dataset.name), (OPTIMIZERS, cfg.optim.name),
                           (SCHEDULES, cfg.sched.name)):
        registry.get(name)  # an unknown name: one line listing the registered ones
    placement = distributed.resolve_devices(cfg.trainer.devices, nprocs=cfg.trainer.nprocs, strategy=cfg.trainer.strategy,
                                            visible_gpus=visible_gpus, job_num=job_num)
    train_ops = parse_train_pipeline(cfg.aug.train)
    batch_ops = parse_batch_pipeline(cfg.aug.batch)
    backend, warning = resolve_backend(cfg.aug.backend, train_ops, device_kind=placement.kind)
    if warning:
        warn(warning)
    check_logger(cfg.logger)
    cores = os.cpu_count() or 1
    if backend == "cpu" and cfg.trainer.workers > cores:
        warn(f"trainer.workers={cfg.trainer.workers} on {cores} CPU cores: workers will compete for them")

    config_dict = comparable_config(cfg)
    # under torchrun only rank 0 reads the checkpoint (the others have a throwaway run directory); it is broadcast
    resume_state = load_resume_state(run_dir, config_dict) if cfg.resume and os.environ.get("RANK", "0") == "0" else None
    d = cfg.dataset
    if rehearse:
        mean, std = (d.mean, d.std) if d.normalize else (None, None)
        dryrun.check_dataset_memory(d.name, d.root, image_size=d.image_size, channels=d.channels,
                                    train_size=d.train_size, test_size=d.test_size)
        dryrun.dry_run(train_ops=train_ops, batch_ops=batch_ops, backend=backend, image_size=d.image_size,
                       channels=d.channels, num_classes=d.num_classes, mean=mean, std=std, model=cfg.model.name,
                       width=cfg.model.width)
    data = load_dataset(d.name, d.root, download=d.download, image_size=d.image_size, channels=d.channels,
                        num_classes=d.num_classes, train_size=d.train_size, test_size=d.test_size)
    for key, configured, actual in (("dataset.image_size", d.image_size, data.image_size),
                                    ("dataset.channels", d.channels, data.channels)):
        if configured != actual:  # the dry run and the model were sized from the config
            raise ConfigError(key, f"got {configured}, but {d.name}'s images have {actual}; valid: {key}={actual}")
    return Prepared(cfg, run_dir, placement, backend, train_ops, batch_ops, data, resume_state, config_dict)


def load_resume_state(run_dir: Path, config_dict: dict[str, Any]) -> dict[str, Any]:
    """The run's checkpoint, refused unless it was written with the same config."""
    state = checkpoint.load(run_dir / checkpoint.CHECKPOINT)
    diffs = checkpoint.config_differences(state["config"], config_dict)
    if diffs:
        raise ConfigError("resume", "the config differs from the checkpoint's: " + "; ".join(diffs)
                          + "; valid: the same overrides as the run being resumed")
    return state


def run(prepared: Prepared) -> None:
    distributed.launch(_worker, prepared.placement, prepared)


# --- inside each process -------------------------------------------------------------------------------------------

def _batch_sources(p: Prepared, *, rank: int, world: int, device: torch.device, compiling: bool):
    cfg, data = p.cfg, p.data
    mean, std = (cfg.dataset.mean, cfg.dataset.std) if cfg.dataset.normalize else (None, None)
    channels_last = cfg.trainer.channels_last and device.type == "cuda"
    batch_ops = [_gpu_batch_op(s, data.num_classes) for s in p.batch_ops]
    finish_train = BatchFinisher(device=device, mean=mean, std=std, batch_ops=batch_ops, channels_last=channels_last,
                                 seed=cfg.seed, rank=rank)
    finish_test = BatchFinisher(device=device, mean=mean, std=std, channels_last=channels_last)
    # torch.compile specialises on the batch shape: a smaller last batch would compile the model again
    shared = dict(batch_size=cfg.trainer.batch_size, seed=cfg.seed, rank=rank, world_size=world)
    if p.backend == "gpu":
        from augrun.augment.gpu import GPU_OPS, GpuPipeline
        if device.type == "cuda":
            nbytes = sum(part.images.nbytes + part.labels.nbytes for part in (data.train, data.test))
            check_fits_on_device(nbytes, torch.cuda.mem_get_info(device)[0], str(device))
        pipeline = GpuPipeline([GPU_OPS[s.name](**s.kwargs) for s in p.train_ops]) if p.train_ops else None
        train = DeviceBatches(data.train, pipeline, finish_train, shuffle=True, drop_last=compiling, **shared)
        test = DeviceBatches(data.test, None, finish_test, shuffle=False, **shared)
    else:
        workers = cfg.trainer.workers
        train = WorkerBatches(data.train, cpu_backend.build_train_transform(p.train_ops, mean=mean, std=std),
                              finish_train, workers=workers, shuffle=True, drop_last=compiling, **shared)
        test = WorkerBatches(data.test, cpu_backend.build_test_transform(mean=mean, std=std), finish_test,
                             workers=workers, shuffle=False, **shared)
    return train, test


def _gpu_batch_op(spec: OpSpec, num_classes: int):
    from augrun.augment.gpu import BATCH_OPS
    kwargs = {"num_classes": num_classes, **spec.kwargs}
    return BATCH_OPS[spec.name](**kwargs)


def _wrap_model(model: nn.Module, p: Prepared, device: torch.device, world: int) -> nn.Module:
    if p.cfg.trainer.channels_last and device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    if world > 1:
        model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    elif p.placement.strategy == "dp":
        model = nn.DataParallel(model, device_ids=list(p.placement.gpu_indices))
    return model


def _amp_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    if precision == "bf16" or (precision == "auto" and device.type == "cuda"):
        return torch.bfloat16
    return None


def _worker(rank: int, world: int, device: torch.device, p: Prepared) -> None:
    cfg, t = p.cfg, p.cfg.trainer
    is_main = rank == 0
    flag = SignalFlag.installed()
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick the fastest kernels once
    elif world > 1:  # ranks sharing the CPU: more threads than cores would make them fight
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    torch.manual_seed(derive_seed(cfg.seed, "init"))
    model = build_model(cfg.model.name, in_channels=p.data.channels, num_classes=p.data.num_classes,
                        width=cfg.model.width).to(device)
    wrapped = _wrap_model(model, p, device, world)
    # Only training is compiled. Evaluation stays eager: compiling it would add two more graphs to compile (eval-mode
    # batch norm, then the smaller last test batch) for a pass that is a small share of an epoch's work.
    trained = torch.compile(wrapped) if t.compile else wrapped
    train_batches, test_batches = _batch_sources(p, rank=rank, world=world, device=device, compiling=t.compile)
    steps = train_batches.steps(1)
    optimizer = build_optimizer(cfg.optim.name, model.parameters(), lr=cfg.optim.lr,
                                weight_decay=cfg.optim.weight_decay, momentum=cfg.optim.momentum,
                                nesterov=cfg.optim.nesterov)
    scheduler = build_scheduler(cfg.sched.name, optimizer, lr=cfg.optim.lr, epochs=t.epochs, steps_per_epoch=steps,
                                warmup_epochs=cfg.sched.warmup_epochs, pct_start=cfg.sched.pct_start)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=t.label_smoothing, reduction="none")
    amp_dtype = _amp_dtype(t.precision, device)
    console = RunConsole() if is_main else None
    # One agreement before anything is written or trained: a signal received while the run was set up (or its ranks
    # started) stops it here, rather than after a step (and a compilation) whose work would be discarded.
    if distributed.any_rank(flag.signum is not None, device):
        if is_main and cfg.resume:
            console.note(f"stopped by signal {flag.signum} before training resumed; the checkpoint is unchanged. "
                         f"{signals.resume_hint(p.run_dir)}")
        elif is_main:
            console.note(signals.before_training_note(flag.signum))
        raise StopRun(flag.signum)
    files = MetricsFiles(p.run_dir) if is_main else None
    tensorboard = TensorBoardLog(p.run_dir) if is_main and cfg.logger == "tensorboard" else None
    if is_main and not cfg.resume:  # the book's 2x4 `apply` grid of this run's train pipeline, from its own seed
        from augrun.drawing import write_run_preview
        write_run_preview(p.data.train.images[0], p.train_ops, p.backend, p.run_dir / rundir.PREVIEW, seed=cfg.seed)

    start_epoch, state, records, total_seconds = 1, EpochState.fresh(device), [], 0.0
    if cfg.resume:
        s = distributed.broadcast_object(p.resume_state)
        model.load_state_dict(s["model"])
        optimizer.load_state_dict(s["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(s["scheduler"])
        checkpoint.restore_rng_states(s["rng"])
        start_epoch, records, total_seconds = s["epoch"], s["records"], s["total_seconds"]
        state = EpochState(s["sums"].to(device) if is_main else torch.zeros_like(s["sums"], device=device),
                           s["next_step"], s["seconds"])
        if is_main:
            files.rewrite(records)  # epochs logged after this checkpoint (a kill before the next one) are redone
            console.note(f"resuming {p.run_dir} at epoch {start_epoch}, step {state.next_step}")

    def save(epoch: int, state: EpochState) -> None:
        sums = distributed.all_reduce_sum(state.sums)  # collective: every rank calls save
        if is_main:
            checkpoint.save_atomic({
                "epoch": epoch, "next_step": state.next_step, "sums": sums.cpu(), "seconds": state.seconds,
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict() if scheduler is not None else None,
                "records": records, "total_seconds": total_seconds, "config": p.config_dict,
                "rng": checkpoint.rng_states()}, p.run_dir / checkpoint.CHECKPOINT)

    def stop(where: str) -> None:
        """Leave after the checkpoint every rank agreed on; rank 0 says so once and marks the run stopped."""
        if is_main:
            files.write_summary(summary("stopped", records, t.epochs, None, p.placement.device_names(), total_seconds))
            console.note(f"stopped by signal {flag.signum} {where}; checkpoint saved. {signals.resume_hint(p.run_dir)}")
        raise StopRun(flag.signum)

    progress_every = max(1, steps // t.progress_updates)
    checks = 0

    def stop_requested() -> bool:
        nonlocal checks
        if world == 1:
            return flag.signum is not None
        checks += 1  # ranks agree every progress_every steps: an all-reduce per step would cost a sync per step
        return checks % progress_every == 0 and distributed.any_rank(flag.signum is not None, device)

    for epoch in range(start_epoch, t.epochs + 1):
        if is_main:
            console.start_epoch(epoch, t.epochs, steps, state.next_step)
        began = time.perf_counter()

        def on_progress(step: int, sums: torch.Tensor) -> None:
            if is_main:
                loss, correct, count = sums.tolist()
                elapsed = state.seconds + time.perf_counter() - began
                console.update(step, loss / max(count, 1), correct / max(count, 1), count * world / max(elapsed, 1e-9))

        finished = train_one_epoch(trained, train_batches.epoch(epoch, state.next_step), state, epoch=epoch,
                                   optimizer=optimizer, scheduler=scheduler, loss_fn=loss_fn,
                                   sum_loss=t.loss_reduction == "sum", world_size=world,
                                   amp_dtype=amp_dtype, progress_every=progress_every, on_progress=on_progress,
                                   stop_requested=stop_requested)
        if device.type == "cuda":
            torch.cuda.synchronize(device)  # once per epoch, so the epoch's time covers its GPU work
        state.seconds += time.perf_counter() - began
        if not finished:
            total_seconds += time.perf_counter() - began
            save(epoch, state)
            stop(f"at epoch {epoch}, step {state.next_step}")
        loss, correct, count = distributed.all_reduce_sum(state.sums).tolist()
        if epoch % t.eval_every == 0 or epoch == t.epochs:
            test = evaluate(wrapped, test_batches.epoch(epoch), amp_dtype=amp_dtype, device=device,
                            flip_tta=t.tta == "flip")
        else:
            test = {"test_acc": None} | ({"test_acc_tta": None} if t.tta == "flip" else {})
        total_seconds += time.perf_counter() - began
        record = {"epoch": epoch, "train_loss": loss / count, "train_acc": correct / count, **test,
                  "lr": optimizer.param_groups[0]["lr"], "seconds": state.seconds,
                  "examples_per_s": count / state.seconds}
        records.append(record)
        state = EpochState.fresh(device)
        save(epoch + 1, state)
        if is_main:
            files.append(record, records[:-1])
            console.epoch_row(record)
            if tensorboard is not None:
                tensorboard.log(record)
            _draw_curves(records, p.run_dir, t.epochs)
        if epoch < t.epochs and distributed.any_rank(flag.signum is not None, device):  # a signal during evaluation
            stop(f"after epoch {epoch}")

    if is_main:
        examples = sum(r["examples_per_s"] * r["seconds"] for r in records)
        examples_per_s = examples / max(sum(r["seconds"] for r in records), 1e-9)
        devices = p.placement.device_names()
        console.final_lines(records[-1], examples_per_s, devices)
        files.write_summary(summary("completed", records, cfg.trainer.epochs, examples_per_s, devices, total_seconds))


def _draw_curves(records: list[dict[str, Any]], run_dir: Path, epochs: int) -> None:
    from augrun.curves import plot_curves
    plot_curves(records, run_dir / rundir.CURVES, epochs=epochs)


def summary(status: str, records: list[dict[str, Any]], epochs: int, examples_per_s: float | None,
            devices: list[str], total_seconds: float, error: str | None = None) -> dict[str, Any]:
    last = records[-1] if records else {}
    return {
        "status": status, "epochs": epochs, "epochs_completed": len(records),
        "final": {k: last[k] for k in ("train_loss", "train_acc", "test_acc", "test_acc_tta") if k in last} or None,
        "best_test_acc": max((r["test_acc"] for r in records if r["test_acc"] is not None), default=None),
        "examples_per_s": examples_per_s, "devices": devices, "total_seconds": total_seconds, "error": error,
    }
