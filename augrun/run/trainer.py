"""A training run: data, model and loop put together from a validated config, on every process of the run.

`prepare` does everything that can fail on bad input before any process starts or any file is written; `run` launches
the processes; `_worker` is what each process runs. Rank 0 alone prints and writes.
"""
from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from augrun import environment, rundir, signals
from augrun.augment.ops import OpSpec, parse_batch_pipeline, parse_train_pipeline, resolve_backend
from augrun.config.schema import TrainConfig
from augrun.data.datasets import DATASETS, DataSplits, choose_storage, load_dataset
from augrun.data.photos import split_for_device
from augrun.errors import ConfigError, first_line
from augrun.models.networks import MODELS
from augrun.models.optim import OPTIMIZERS, SCHEDULES
from augrun.models.timm_models import check_timm_model
from augrun.report.drawing import write_run_preview
from augrun.report.mlflow_tracking import MlflowTracker
from augrun.report.run_outputs import NoOutputs, RunOutputs
from augrun.report.tracker import Tracker
from augrun.report.trackers import TensorBoardLog, check_logger
from augrun.run import checkpoint, distributed, dryrun, launchers
from augrun.run.build import BuiltRun, build_run
from augrun.run.engine import evaluate, train_one_epoch
from augrun.run.progress import Checkpointer, Progress
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
    resume_state: dict[str, Any] | None  # read by run(), in the launching process
    config_dict: dict[str, Any]
    command: str = ""  # as the user typed it, for summary.json (set by `run`, in the launching process)


# raised when a signal stopped the run, rank 0 having printed the note; carries the exit status (130, 143)
StopRun = signals.Stopped


def comparable_config(cfg: TrainConfig) -> dict[str, Any]:
    """The config a checkpoint must match to be resumed. What cannot change the run's draws may differ: resume itself,
    the logger, progress updates, the worker count (every image's draws are seeded by its index, not its worker) and
    the thread count (null resolves to each machine's own anyway). The last two can change the order of float sums,
    so a resume with other values is exact in its draws, not always in the last digits of its losses."""
    plain = dataclasses.asdict(cfg)
    for key in ("resume", "logger"):
        plain.pop(key)
    for key in ("progress_updates", "workers", "threads", "rendezvous_timeout_s"):
        plain["trainer"].pop(key)
    plain["dataset"].pop("cache_dir")  # where a decoded copy is kept changes no pixel
    return plain


def prepare(cfg: TrainConfig, run_dir: Path, *, visible_gpus: int, warn, job_num: int = 0,
            rehearse: bool = False, loaded: dict | None = None) -> Prepared:
    """Everything a run needs, checked, with its data loaded. `rehearse`: also dry-run one training step on made-up
    images and estimate the data's memory first (the pre-check does; a job prepared in another process need not
    again). `loaded`: datasets already loaded by this command, by their arguments, taken from and added to."""
    for registry, name in ((DATASETS, cfg.dataset.name), (OPTIMIZERS, cfg.optim.name), (SCHEDULES, cfg.sched.name),
                           *([(MODELS, cfg.model.name)] if cfg.model.source == "augrun" else [])):
        registry.get(name)  # an unknown name: one line listing the registered ones
    if cfg.model.source == "timm":
        check_timm_model(cfg.model.name, pretrained=cfg.model.pretrained)
    placement = distributed.resolve_devices(cfg.trainer.devices, nprocs=cfg.trainer.nprocs, strategy=cfg.trainer.strategy,
                                            visible_gpus=visible_gpus, job_num=job_num)
    train_ops = parse_train_pipeline(cfg.aug.train)
    batch_ops = parse_batch_pipeline(cfg.aug.batch)
    d = cfg.dataset
    storage = choose_storage(d.name, d.root, storage=d.storage, image_size=d.image_size,
                             memory_limit_gb=d.memory_limit_gb, train_size=d.train_size, test_size=d.test_size)
    streamed = storage.storage == "stream"
    # streamed photos: the workers run the leading crop, so only the ops after it need a gpu version
    device_ops = split_for_device(train_ops)[1] if streamed else train_ops
    backend, warning = resolve_backend(cfg.aug.backend, device_ops, device_kind=placement.kind)
    if warning:
        warn(warning)
    check_logger(cfg.logger)
    t = cfg.trainer
    if t.batch_size // t.accumulate_grad_batches < placement.nprocs:  # a process without images cannot step
        key = "trainer.accumulate_grad_batches" if t.accumulate_grad_batches > 1 else "trainer.batch_size"
        raise ConfigError(key, f"a batch of {t.batch_size // t.accumulate_grad_batches} image(s) (trainer.batch_size="
                          f"{t.batch_size} / accumulate_grad_batches={t.accumulate_grad_batches}) cannot feed "
                          f"{placement.nprocs} processes; valid: trainer.batch_size >= "
                          f"{t.accumulate_grad_batches * placement.nprocs}, or fewer micro-batches or processes")
    if cfg.trainer.sync_bn and placement.kind == "cpu" and placement.nprocs > 1:
        raise ConfigError("trainer.sync_bn", f"true, but SyncBatchNorm runs on GPUs only, and this run has "
                          f"{placement.nprocs} processes on the CPU; valid: trainer.sync_bn=false on the CPU")
    cores = os.cpu_count() or 1
    if (backend == "cpu" or streamed) and cfg.trainer.workers > cores:  # streamed photos: workers decode, either backend
        warn(f"trainer.workers={cfg.trainer.workers} on {cores} CPU cores: workers will compete for them")

    config_dict = comparable_config(cfg)
    if cfg.resume and launchers.writes_run_dir():  # rank 0 reads the checkpoint and broadcasts it to the others
        check_resume(run_dir, cfg)
    if rehearse:
        mean, std = (d.mean, d.std) if d.normalize else (None, None)
        if not streamed:  # streamed photos are decoded a batch at a time: their memory does not grow with the data
            dryrun.check_dataset_memory(d.name, d.root, image_size=d.image_size, channels=d.channels,
                                        train_size=d.train_size, test_size=d.test_size)
        dryrun.dry_run(train_ops=train_ops, batch_ops=batch_ops, backend=backend, image_size=d.image_size,
                       channels=d.channels, num_classes=d.num_classes, mean=mean, std=std, model=cfg.model,
                       streamed=streamed, micro_batches=dryrun.micro_batches(cfg, nprocs=placement.nprocs))
    request = dict(name=d.name, root=d.root, download=d.download, image_size=d.image_size, channels=d.channels,
                   num_classes=d.num_classes, train_size=d.train_size, test_size=d.test_size, storage=storage.storage,
                   cache_dir=d.cache_dir, memory_limit_gb=d.memory_limit_gb)
    key = tuple(request.items())
    data = loaded.get(key) if loaded is not None else None
    if data is None:
        data = load_dataset(**request)
        if loaded is not None:
            loaded[key] = data
    if storage.note:
        warn(storage.note)
    for key, configured, actual in (("dataset.image_size", d.image_size, data.image_size),
                                    ("dataset.channels", d.channels, data.channels)):
        if configured != actual:  # the dry run and the model were sized from the config
            raise ConfigError(key, f"got {configured}, but {d.name}'s images have {actual}; valid: {key}={actual}")
    return Prepared(cfg, run_dir, placement, backend, train_ops, batch_ops, data, None, config_dict)


def check_resume(run_dir: Path, cfg: TrainConfig) -> None:
    """Refuse to resume from a checkpoint written with another config (the state itself is read when the run starts:
    a sweep's plan holds no checkpoints)."""
    load_resume_state(run_dir, comparable_config(cfg))


def load_resume_state(run_dir: Path, config_dict: dict[str, Any]) -> dict[str, Any]:
    """The run's checkpoint, refused unless it was written with the same config."""
    state = checkpoint.load(run_dir / checkpoint.CHECKPOINT)
    diffs = checkpoint.config_differences(state["config"], config_dict)
    if diffs:
        raise ConfigError("resume", "the config differs from the checkpoint's: " + "; ".join(diffs)
                          + "; valid: the same overrides as the run being resumed")
    return state


def run(prepared: Prepared) -> None:
    """Train the prepared run in every process of it (the checkpoint to resume is read here, once)."""
    cfg = prepared.cfg
    reads = cfg.resume and launchers.writes_run_dir()
    resume_state = load_resume_state(prepared.run_dir, prepared.config_dict) if reads else None
    # the command line is read here: a spawned rank's own is multiprocessing's
    launched = dataclasses.replace(prepared, resume_state=resume_state, command=environment.command_line())
    distributed.run_on_every_rank(_worker, prepared.placement, launched,
                                  rendezvous_timeout_s=cfg.trainer.rendezvous_timeout_s)


# --- inside each process -------------------------------------------------------------------------------------------

def _worker(rank: int, world: int, device: torch.device, p: Prepared) -> None:
    """One process of the run: build it, restore it, train and evaluate epoch by epoch, stop cleanly on a signal."""
    cfg, t = p.cfg, p.cfg.trainer
    flag = SignalFlag.installed()
    workers = t.workers if p.backend == "cpu" or p.data.streamed else 0  # streamed photos: workers decode
    _set_up_process(device, world, workers_per_rank=workers, requested=t.threads)
    run = build_run(cfg, p.data, backend=p.backend, train_ops=p.train_ops, batch_ops=p.batch_ops,
                    placement=p.placement, rank=rank, world=world, device=device)
    outputs = _main_outputs(p, device) if rank == 0 else NoOutputs()
    progress_every = max(1, run.steps // t.progress_updates)
    stops = distributed.StopAgreement(lambda: flag.signum is not None, world=world, device=device, every=progress_every)
    # One agreement before anything is written or trained: a signal received while the run was set up (or its ranks
    # started) stops it here, rather than after a step (and a compilation) whose work would be discarded.
    if stops.now():
        outputs.note(f"stopped by signal {flag.signum} before training resumed; the checkpoint is unchanged. "
                     f"{signals.resume_hint(p.run_dir)}" if cfg.resume else signals.before_training_note(flag.signum))
        raise StopRun(flag.signum)
    checkpointer = Checkpointer(p.run_dir / rundir.CHECKPOINT, run, config=p.config_dict, is_main=rank == 0)
    # rank 0 alone reads the run directory: whether the run resumes is its decision (a requeued Slurm job decides by
    # what the directory holds), and its checkpoint is every rank's
    resume_state = distributed.broadcast_object(p.resume_state)
    if resume_state is not None:
        progress = checkpointer.restore(resume_state, device)
        outputs.resumed(progress.records, progress.epoch, progress.state.next_step, resume_state.get("tracking"))
    else:
        progress = Progress.fresh(device)
        if rank == 0:  # the book's 2x4 `apply` grid of this run's train pipeline, from its own seed
            write_run_preview(p.data.train.images[0], p.train_ops, p.backend, p.run_dir / rundir.PREVIEW, seed=cfg.seed)
        outputs.started()
    checkpointer.tracking = outputs.tracking_state()

    def stop(where: str) -> None:
        outputs.stopped(flag.signum, where, progress.records, progress.total_seconds)
        raise StopRun(flag.signum)

    try:
        while progress.epoch <= t.epochs:
            epoch = progress.epoch
            record = _run_epoch(run, progress, cfg, outputs, stops, world=world, device=device, every=progress_every)
            if record is None:  # stopped by a signal part-way: the epoch continues from this step on resume
                checkpointer.save(progress)
                step = progress.state.next_step
                stop(f"at epoch {epoch}, step {step}" if step < run.steps else f"in epoch {epoch}'s test pass")
            progress.finish_epoch(record, device)
            checkpointer.save(progress)
            outputs.epoch_finished(progress.records)
            if epoch < t.epochs and stops.now():  # a signal during evaluation
                stop(f"after epoch {epoch}")
    except Exception as error:  # the trackers hear of it; the launching process says it and writes the summary
        outputs.failed(f"{type(error).__name__}: {first_line(error)}")
        raise
    outputs.completed(progress.records, progress.total_seconds)


def _main_outputs(p: Prepared, device: torch.device) -> RunOutputs:
    """Rank 0's outputs, with where the run runs (once per run, after the thread count is set); a CPU run also
    projects its duration at its first progress update."""
    where = environment.gather(device_kind=device.type, gpu_indices=p.placement.gpu_indices,
                               threads=torch.get_num_threads(), command=p.command)
    return RunOutputs(p.run_dir, epochs=p.cfg.trainer.epochs, devices=p.placement.device_names(),
                      trackers=_trackers(p, where), environment=where,
                      cpu_images_per_epoch=len(p.data.train) if device.type == "cpu" else None)


def _trackers(p: Prepared, where: dict[str, Any]) -> list[Tracker]:
    """The trackers logger= chose (several at once as a list)."""
    return ([TensorBoardLog(p.run_dir)] if p.cfg.logger.tensorboard else []) + (
        [_mlflow_tracker(p, where)] if p.cfg.logger.mlflow else [])


def _mlflow_tracker(p: Prepared, where: dict[str, Any]) -> MlflowTracker:
    """The run in MLflow: its whole resolved config as params, and tags to filter runs by."""
    cfg = p.cfg
    choices = _hydra_choices(p.run_dir)
    tags = {"augrun.aug": choices.get("aug") or "custom", "augrun.dataset": cfg.dataset.name,
            "augrun.model": cfg.model.name, "augrun.seed": str(cfg.seed), "augrun.version": str(where.get("augrun")),
            "augrun.git_commit": str(where.get("git_commit")), "augrun.run_dir": str(p.run_dir.absolute()),
            "augrun.overrides": " ".join(_recorded_overrides(p.run_dir))}
    return MlflowTracker(p.run_dir, configured_uri=cfg.logger.tracking_uri, experiment_name=cfg.logger.experiment_name,
                         config=dataclasses.asdict(cfg), tags=tags)


def _hydra_choices(run_dir: Path) -> dict[str, Any]:
    """The config group options Hydra composed the run from (aug=flip_only, ...), as it recorded them."""
    import yaml
    try:
        return yaml.safe_load((run_dir / rundir.CONFIG_DIR / rundir.HYDRA_CONFIG).read_text())["hydra"]["runtime"][
            "choices"] or {}
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return {}


def _recorded_overrides(run_dir: Path) -> list[str]:
    import yaml
    try:
        return [str(o) for o in yaml.safe_load((run_dir / rundir.CONFIG_DIR / rundir.OVERRIDES).read_text()) or []]
    except (OSError, yaml.YAMLError, TypeError):
        return []


def _set_up_process(device: torch.device, world: int, *, workers_per_rank: int, requested: int | None) -> None:
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick the fastest kernels once
    # ranks and DataLoader workers sharing the CPU: more threads than cores would make them fight
    threads = environment.intra_op_threads(cores=os.cpu_count() or 1, ranks=world, workers_per_rank=workers_per_rank,
                                           device_kind=device.type, requested=requested)
    if threads is not None:
        torch.set_num_threads(threads)


def _test_pass(run: BuiltRun, epoch: int, *, flip_tta: bool, device: torch.device,
               stop_requested: Callable[[], bool]) -> dict[str, float] | None:
    """The epoch's test accuracies (and the averaged weights', on the same images), or None if a signal stopped it."""
    test = evaluate(run.wrapped, run.test_batches.epoch(epoch), amp_dtype=run.amp_dtype, device=device,
                    flip_tta=flip_tta, stop_requested=stop_requested)
    if test is None or run.updater.ema is None:
        return test
    averaged = evaluate(run.updater.ema.module, run.test_batches.epoch(epoch), amp_dtype=run.amp_dtype, device=device,
                        stop_requested=stop_requested)
    return None if averaged is None else test | {"test_acc_ema": averaged["test_acc"]}


def _run_epoch(run: BuiltRun, progress: Progress, cfg: TrainConfig, outputs, stops: distributed.StopAgreement, *,
               world: int, device: torch.device, every: int) -> dict[str, Any] | None:
    """Train the rest of the current epoch and evaluate it (every trainer.eval_every epochs and the last); its metrics
    record, or None when a signal stopped it part-way (its progress then says where)."""
    t, epoch, state = cfg.trainer, progress.epoch, progress.state
    outputs.epoch_started(epoch, run.steps, state.next_step)
    began = time.perf_counter()

    def on_progress(step: int, sums: torch.Tensor) -> None:
        # a host read, on a step where the engine has just synced anyway (its non-finite check)
        loss, correct, count = sums.tolist()
        elapsed = state.seconds + time.perf_counter() - began
        outputs.step_progress(step, loss / max(count, 1), correct / max(count, 1), count * world / max(elapsed, 1e-9))

    finished = train_one_epoch(run.trained, run.train_batches.epoch(epoch, state.next_step), state, epoch=epoch,
                               updater=run.updater, loss_fn=run.loss_fn,
                               sum_loss=t.loss_reduction == "sum", world_size=world, amp_dtype=run.amp_dtype,
                               progress_every=every, on_progress=on_progress, stop_requested=stops.after_step)
    if device.type == "cuda":
        torch.cuda.synchronize(device)  # once per epoch, so the epoch's time covers its GPU work
    state.seconds += time.perf_counter() - began
    if not finished:
        progress.total_seconds += time.perf_counter() - began
        return None
    loss, correct, count = distributed.all_reduce_sum(state.sums).tolist()
    if epoch % t.eval_every == 0 or epoch == t.epochs:
        test = _test_pass(run, epoch, flip_tta=t.tta == "flip", device=device, stop_requested=stops.after_step)
        if test is None:  # stopped in the test pass: the epoch's training is kept, and its test pass runs on resume
            progress.total_seconds += time.perf_counter() - began
            return None
    else:
        test = {"test_acc": None} | ({"test_acc_tta": None} if t.tta == "flip" else {}) | (
            {"test_acc_ema": None} if run.updater.ema is not None else {})
    progress.total_seconds += time.perf_counter() - began
    return {"epoch": epoch, "train_loss": loss / count, "train_acc": correct / count, **test,
            "lr": run.optimizer.param_groups[0]["lr"], "seconds": state.seconds, "examples_per_s": count / state.seconds}
