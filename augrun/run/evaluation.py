"""Saved weights scored on a test split, in one process, on the CPU or the first GPU that trainer.devices names: the
model, the test batches (the augmentation backend's own, normalised as in training) and the precision are made by the
same builders as a training run's evaluation, so that the same weights on the same test set give the same accuracy.
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass

import torch

from augrun import environment
from augrun.augment.ops import parse_batch_pipeline, parse_train_pipeline, resolve_backend
from augrun.config.schema import TrainConfig
from augrun.data.datasets import DATASETS, DataSplits, choose_storage, load_dataset
from augrun.data.photos import split_for_device
from augrun.errors import CheckpointError, ConfigError
from augrun.models.networks import build_model
from augrun.models.weights import first_informative_line
from augrun.run import distributed
from augrun.run.build import amp_dtype, batch_sources, wrap_model
from augrun.run.engine import evaluate


@dataclass
class Scored:
    accuracy: dict[str, float]  # test_acc, and test_acc_tta with trainer.tta=flip
    test_images: int
    device: torch.device
    gpu_indices: tuple[int, ...]
    threads: int


def score_weights(cfg: TrainConfig, weights: dict[str, torch.Tensor], *, source: str,
                  warn: Callable[[str], None]) -> Scored:
    """The test accuracy of `weights` (a state dict of cfg's model, read from `source`, for the error that says they do
    not fit) on cfg's dataset."""
    t = cfg.trainer
    placement = distributed.resolve_devices(t.devices, nprocs=None, strategy=t.strategy,
                                            visible_gpus=torch.cuda.device_count())
    device = placement.device(0)  # one process, no DDP: a test pass is a small share of a training epoch's work
    data = load_data(cfg, warn)
    train_ops, batch_ops = parse_train_pipeline(cfg.aug.train), parse_batch_pipeline(cfg.aug.batch)
    device_ops = split_for_device(train_ops)[1] if data.streamed else train_ops
    # the backend training's evaluation used here; its note on falling back to cpu is about training
    backend, _ = resolve_backend(cfg.aug.backend, device_ops, device_kind=device.type)
    workers = t.workers if backend == "cpu" or data.streamed else 0  # as in training: only these use workers
    threads = environment.intra_op_threads(cores=os.cpu_count() or 1, ranks=1, workers_per_rank=workers,
                                           device_kind=device.type, requested=t.threads)
    if threads is not None:
        torch.set_num_threads(threads)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes, as in training
    # pretrained=false: the checkpoint's weights replace any others, so none are fetched from a hub
    model = build_model(dataclasses.replace(cfg.model, pretrained=False), in_channels=data.channels,
                        num_classes=data.num_classes, image_size=data.image_size)
    try:
        model.load_state_dict(weights)
    except RuntimeError as error:  # shapes that differ: another number of classes than the run's model was built for
        raise CheckpointError("", f"the weights in {source} do not fit {cfg.model.name} for {cfg.dataset.name}'s "
                              f"{data.num_classes} classes and {data.channels} channels "
                              f"({first_informative_line(error, 'mismatch')}); valid: a dataset with the classes "
                              "the run was trained on") from None
    model = wrap_model(model.to(device), channels_last=t.channels_last, device=device, world=1,
                       placement=dataclasses.replace(placement, nprocs=1, strategy="single"))
    _, test_batches = batch_sources(cfg, data, backend=backend, train_ops=train_ops, batch_ops=batch_ops, rank=0,
                                    world=1, device=device)
    # the test plan is not shuffled and the test transform draws nothing: every epoch's test batches are the same
    accuracy = evaluate(model, test_batches.epoch(1), amp_dtype=amp_dtype(t.precision, device), device=device,
                        flip_tta=t.tta == "flip")
    return Scored(accuracy, len(data.test), device, placement.gpu_indices[:1], torch.get_num_threads())


def load_data(cfg: TrainConfig, warn: Callable[[str], None]) -> DataSplits:
    """cfg's dataset, loaded as training loads it (storage, subsets, cache), its images checked against the config
    the model is built for."""
    d = cfg.dataset
    DATASETS.get(d.name)  # an unknown name: one line listing the registered ones
    # test_only: another test split to score (an image folder of test/<class>/ alone) needs no train/
    storage = choose_storage(d.name, d.root, storage=d.storage, image_size=d.image_size,
                             memory_limit_gb=d.memory_limit_gb, train_size=d.train_size, test_size=d.test_size,
                             test_only=True)
    data = load_dataset(d.name, d.root, download=d.download, image_size=d.image_size, channels=d.channels,
                        num_classes=d.num_classes, train_size=d.train_size, test_size=d.test_size,
                        storage=storage.storage, cache_dir=d.cache_dir, memory_limit_gb=d.memory_limit_gb,
                        test_only=True)
    if storage.note:
        warn(storage.note)
    for key, configured, actual in (("dataset.image_size", d.image_size, data.image_size),
                                    ("dataset.channels", d.channels, data.channels)):
        if configured != actual:
            raise ConfigError(key, f"the run's model takes {configured}, but {d.name}'s images have {actual}; "
                              f"valid: a dataset whose images have {configured}, as the run's")
    return data
