#!/usr/bin/env python
"""Training throughput of augrun's two augmentation backends against the model's own ceiling, in one process run.

For each pipeline (`flip_only`, `flip_color_crop`) and batch size it measures images/s of:

  a      the book's path: cpu backend (torchvision per image in 4 DataLoader workers, augrun.data.batches.WorkerBatches),
         fp32, NCHW, cudnn.benchmark off
  b      augrun's gpu backend: uint8 data resident on the device, per-sample batched aug (DeviceBatches + GpuPipeline),
         bf16 autocast, channels_last and cudnn.benchmark on CUDA (fp32 on CPU, as precision=auto); --compile: compiled
  b1     (CUDA only) b with each batch made on the training stream, not one step ahead on a side stream: what the
         side stream buys
  c      the model step alone on one resident, already augmented batch (the ceiling for b; same model and settings as b)
  aug    GpuPipeline alone on a resident float batch (no model)
  feed   DeviceBatches alone: index + aug + finish, no model

Every training step is augrun's own `engine.train_one_epoch` fed from augrun's batch sources, so what is timed is what
`augrun train` runs. Data: `augrun.data.datasets.make_synthetic` (CIFAR-shaped, 32x32x3, 10 classes), so nothing is downloaded.
Warm-up steps are not timed; the clock is read after torch.cuda.synchronize; each number is the median over repeats.
b, c, aug and feed are timed in interleaved rounds, so slow drift (other jobs, clocks) hits them alike. a runs on its
own, in fresh epochs (a DataLoader each, as the book has; interleaving would let its workers prefetch while the others
are timed): the first round of batches of each epoch is untimed, then whole rounds of batches are timed.

    python benchmarks/throughput.py                       # CUDA: batch 256 and 1024, resnet18
    python benchmarks/throughput.py --compile             # b and c compiled
    python benchmarks/throughput.py --ddp-overhead        # + DDP(1 process) against no wrapper, side by side
    python benchmarks/throughput.py --quick --device cpu  # small_cnn, small data, few steps: < 3 min on 2 cores
    python benchmarks/throughput.py --quick --device cpu --skip-main --threads-compare  # b: 1/auto/default threads

The ratios b/a and b/c are the result; absolute numbers depend on the card (or on what else the CPU is doing).
"""
from __future__ import annotations

import argparse
import copy
import datetime
import importlib.util
import inspect
import itertools
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch import nn

if importlib.util.find_spec("augrun") is None:  # run from a checkout without installing: the root holds the package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from augrun.augment import cpu as cpu_backend  # noqa: E402
from augrun.augment.gpu import GpuPipeline  # noqa: E402
from augrun.augment.gpu_pipeline import build_pipeline  # noqa: E402
from augrun.augment.ops import OpSpec, parse_train_pipeline  # noqa: E402
from augrun.config.schema import ModelConfig  # noqa: E402
from augrun.data.batches import BatchFinisher, DeviceBatches, WorkerBatches  # noqa: E402
from augrun.data.datasets import ImageData, make_synthetic  # noqa: E402
from augrun.environment import intra_op_threads  # noqa: E402
from augrun.models.networks import build_model  # noqa: E402
from augrun.models.optim import build_optimizer  # noqa: E402
from augrun.run.engine import EpochState, train_one_epoch  # noqa: E402
from augrun.run.update import Updater  # noqa: E402

# The two pipelines, written as conf/aug/*.yaml writes them (RandomResizedCrop size = dataset.image_size = 32).
PIPELINES: dict[str, dict] = {
    "flip_only": {"RandomHorizontalFlip": {"p": 0.5}},
    "flip_color_crop": {
        "RandomHorizontalFlip": {"p": 0.5},
        "ColorJitter": {"brightness": 0.5, "contrast": 0.5, "saturation": 0.5, "hue": 0.5},
        "RandomResizedCrop": {"size": 32, "scale": [0.1, 1.0], "ratio": [0.5, 2.0]},
    },
}
IMAGE_SIZE, CHANNELS, NUM_CLASSES = 32, 3, 10
MODEL_WIDTH = {"resnet18": 64, "small_cnn": 32}  # conf/model/*.yaml
LR = 1e-3  # conf/optim/adam.yaml, the book's optimizer; no schedule (the book's constant lr)
SEED = 0
# the targets: (name, pipeline, batch, quantity, threshold, where it applies)
GPU_TARGETS = [
    ("gpu backend >= 90% of the model-step ceiling", "flip_color_crop", 256, "b/c", 0.90),
    ("gpu backend >= 6x the book's path", "flip_color_crop", 256, "b/a", 6.0),
    ("gpu backend >= 1.5x the book's path", "flip_only", 256, "b/a", 1.5),
]
COMPILE_TARGET_IMAGES_PER_S = 55_000  # batch 1024, compiled, on an H200
DDP_MAX_OVERHEAD = 0.05
TORCH_DEFAULT_THREADS = torch.get_num_threads()  # read before --threads or --threads-compare change it


# --- command line -------------------------------------------------------------------------------------------------

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="small_cnn, a few thousand images, batch 128, few steps: a CPU-friendly run (< 3 min on 2 cores)")
    parser.add_argument("--device", choices=["cuda", "cpu"], default=None, help="default: cuda when available")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=None, help="default 256 1024 (--quick: 128)")
    parser.add_argument("--model", choices=list(MODEL_WIDTH), default=None, help="default resnet18 (--quick: small_cnn)")
    parser.add_argument("--pipelines", nargs="+", choices=list(PIPELINES), default=list(PIPELINES))
    parser.add_argument("--compile", action="store_true", help="torch.compile the model of b and c (and of --ddp-overhead)")
    parser.add_argument("--compile-mode", default="default", help="torch.compile mode (default, max-autotune, ...)")
    parser.add_argument("--ddp-overhead", action="store_true",
                        help="also time the gpu-backend step with the model in DDP (a 1-process group) against no wrapper")
    parser.add_argument("--ddp-pipeline", choices=list(PIPELINES), default="flip_color_crop",
                        help="the pipeline of the --ddp-overhead section")
    parser.add_argument("--skip-main", action="store_true", help="skip the a/b/c table (e.g. with --ddp-overhead alone)")
    parser.add_argument("--skip-book", action="store_true",
                        help="skip a, the book's path (e.g. in a --compile run, when an eager run has measured it)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per repeat (default 20, --quick 2)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed repeats; the median is reported (default 5; the book's path: at most 3 epochs)")
    parser.add_argument("--warmup", type=int, default=None,
                        help="untimed steps first (default 10, --quick 1)")
    parser.add_argument("--workers", type=int, default=4, help="DataLoader workers of the book's path (the book: 4)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch.set_num_threads for the training process (default: torch's own choice)")
    parser.add_argument("--threads-compare", action="store_true",
                        help="also time the gpu-backend step on the CPU at 1 thread, augrun's automatic choice "
                             "(trainer.threads=null) and torch's default, side by side")
    parser.add_argument("--train-size", type=int, default=None, help="synthetic images (default 50000, --quick 4096)")
    parser.add_argument("--sync-profile", choices=["auto", "on", "off"], default="auto",
                        help="count host syncs and copies per gpu-backend step with torch.profiler (auto: on CUDA)")
    parser.add_argument("--json", type=Path, default=None, help="write every number here (rewritten as rows finish)")
    parser.add_argument("--summarize", type=Path, nargs="+", default=None, metavar="JSON",
                        help="only print the summary and target verdicts of earlier --json files")
    args = parser.parse_args(argv)
    if args.summarize:
        return args
    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is visible; valid here: --device cpu")
    if args.threads_compare and args.device != "cpu":
        parser.error("--threads-compare times the CPU step; valid with it: --device cpu")
    quick = args.quick
    defaults = dict(batch_sizes=[128] if quick else [256, 1024], model="small_cnn" if quick else "resnet18",
                    steps=2 if quick else 20, repeats=5, warmup=1 if quick else 10,
                    train_size=4096 if quick else 50_000)
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.compile and args.warmup < 2:  # the first call compiles, and must not be timed
        args.warmup = 2
    for key in ("steps", "repeats", "train_size"):
        if getattr(args, key) < 1:
            parser.error(f"--{key.replace('_', '-')}: got {getattr(args, key)}; valid: >= 1")
    if args.warmup < 0 or args.workers < 0 or min(args.batch_sizes) < 1 or (args.threads is not None and args.threads < 1):
        parser.error("--warmup, --workers: valid >= 0; --batch-sizes, --threads: valid >= 1")
    if max(args.batch_sizes) > args.train_size:
        parser.error(f"--batch-sizes: {max(args.batch_sizes)} is larger than --train-size {args.train_size}")
    return args


# --- timing -------------------------------------------------------------------------------------------------------

class Clock:
    """perf_counter after the device has finished what was queued (CUDA runs ahead of the host)."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def __call__(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter()


def summarize(rates: list[float]) -> dict:
    return {"median": statistics.median(rates), "min": min(rates), "max": max(rates), "runs": rates}


def time_blocks(clock: Clock, variants: dict[str, tuple[Callable[[int], None], int]], *, warmup: int, repeats: int,
                steps: int) -> dict[str, dict]:
    """Warm each variant up, then time `repeats` rounds of `steps` steps each, rotating the order every round.

    variants: name -> (block(n) running n steps, images per step). Returns name -> images/s summary.
    """
    for block, _ in variants.values():
        if warmup:
            block(warmup)
    rates: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    for r in range(repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            block, images = variants[name]
            start = clock()
            block(steps)
            rates[name].append(steps * images / (clock() - start))
    return {name: summarize(values) for name, values in rates.items()}


# --- building blocks: augrun's own components, assembled as build.batch_sources and build.build_run do -------------------

def pipeline_specs(name: str) -> list[OpSpec]:
    return parse_train_pipeline(PIPELINES[name])


def forever(batches) -> Iterator:
    """A batch source's epochs one after another (DeviceBatches/WorkerBatches.epoch)."""
    for epoch in itertools.count(1):
        yield from batches.epoch(epoch)


class Trainer:
    """One model + optimizer, stepped by engine.train_one_epoch on `steps` batches of a source at a time."""

    def __init__(self, model: nn.Module, device: torch.device, *, amp_dtype: torch.dtype | None, compile_mode: str | None,
                 params_of: nn.Module | None = None):
        self.model = torch.compile(model, mode=compile_mode, dynamic=False) if compile_mode else model
        self.optimizer = build_optimizer("adam", params_of or model, lr=LR, weight_decay=0.0, momentum=0.9,
                                         nesterov=False)
        # one optimizer step per batch, no clipping, scaling or average: the book's plain step
        # (no epoch plan: with one micro-batch per step the Updater needs no batch lengths)
        self.updater = Updater(params_of or model, self.optimizer, None, None, 1, 0.0, None, [])
        self.amp_dtype = amp_dtype
        self.state = EpochState.fresh(device)
        self.loss_kwargs = loss_arguments()

    def block(self, source: Iterator, steps: int) -> None:
        # progress never fires inside a block; train_one_epoch's closing non-finite check reads one number (one sync)
        train_one_epoch(self.model, itertools.islice(source, steps), self.state, epoch=1, updater=self.updater,
                        amp_dtype=self.amp_dtype, progress_every=1 << 62,
                        on_progress=lambda step, sums: None, stop_requested=lambda: False, **self.loss_kwargs)


def loss_arguments() -> dict:
    """The loss arguments of train_one_epoch for the book's mean cross-entropy in one process, in either form the
    engine has had: per-image losses + sum_loss/world_size (trainer: reduction="none"), or a mean loss + loss_scale."""
    parameters = inspect.signature(train_one_epoch).parameters
    if "sum_loss" in parameters:
        return {"loss_fn": nn.CrossEntropyLoss(reduction="none"), "sum_loss": False, "world_size": 1}
    return {"loss_fn": nn.CrossEntropyLoss(), "loss_scale": 1.0}


def new_model(name: str, device: torch.device, *, channels_last: bool) -> nn.Module:
    torch.manual_seed(SEED)
    model = build_model(ModelConfig(name, width=MODEL_WIDTH[name]), in_channels=CHANNELS, num_classes=NUM_CLASSES,
                        image_size=IMAGE_SIZE).to(device)
    return model.to(memory_format=torch.channels_last) if channels_last else model


def device_batches(data: ImageData, pipeline: GpuPipeline | None, device: torch.device, batch: int, *,
                   channels_last: bool, overlap: bool = True) -> DeviceBatches:
    finish = BatchFinisher(device=device, mean=None, std=None, channels_last=channels_last, seed=SEED)
    return DeviceBatches(data, pipeline, finish, batch_size=batch, seed=SEED, rank=0, world_size=1, shuffle=True,
                         drop_last=True, overlap=overlap)


# --- the a/b/c table ------------------------------------------------------------------------------------------------

def time_book_path(args, clock: Clock, host: ImageData, specs: list[OpSpec], batch: int, book: Trainer,
                   resident_batch, pipeline_name: str, notes: list[str]) -> dict:
    """a: images/s of the book's path, in `repeats` fresh epochs (a DataLoader per epoch, as the book has).

    The model is warmed up first on a resident batch, so no slow first step lets the workers fill their prefetch queue
    (2 batches each) ahead of the clock. In each epoch the first round of batches (one per worker, all started at
    once) is untimed, then whole rounds are timed: from the end of one round to the end of a later one, which is the
    workers' steady rate when they are the bottleneck and the model's when it is.
    """
    torch.backends.cudnn.benchmark = False  # the book's setting; b and c turn it on
    if args.warmup:
        book.block(itertools.repeat((resident_batch[0].contiguous(), resident_batch[1]), args.warmup), args.warmup)
    round_ = max(1, args.workers)
    skip = round_
    steps = -(-max(round_, args.steps * 256 // batch) // round_) * round_  # about --steps at batch 256, whole rounds
    per_epoch = args.train_size // batch
    if skip + steps > per_epoch:
        steps = max(1, per_epoch - skip)
        notes.append(f"{pipeline_name}@{batch}: a timed {steps} steps per epoch, not whole rounds of {round_} "
                     "(raise --train-size)")
    finish = BatchFinisher(device=book.state.sums.device, mean=None, std=None, channels_last=False, seed=SEED)
    workers = WorkerBatches(host, cpu_backend.build_train_transform(specs), finish, batch_size=batch,
                            workers=args.workers, seed=SEED, rank=0, world_size=1, shuffle=True, drop_last=True)
    repeats = min(args.repeats, 3)
    rates = []
    for epoch in range(1, repeats + 1):
        source = workers.epoch(epoch)
        book.block(source, skip)
        start = clock()
        book.block(source, steps)
        rates.append(steps * batch / (clock() - start))
        source.close()  # ends this epoch's workers before anything else runs
    return {**summarize(rates), "steps": steps, "untimed_per_epoch": skip, "epochs": repeats}


def measure_row(args, device: torch.device, clock: Clock, host: ImageData, resident: ImageData, pipeline_name: str,
                batch: int, book: Trainer, fast: Trainer, notes: list[str]) -> dict:
    cuda = device.type == "cuda"
    specs = pipeline_specs(pipeline_name)
    pipeline = build_pipeline(specs)
    row: dict = {"pipeline": pipeline_name, "batch": batch}
    resident_batch = next(forever(device_batches(resident, pipeline, device, batch, channels_last=cuda)))
    row["a"] = None if args.skip_book else time_book_path(args, clock, host, specs, batch, book, resident_batch,
                                                          pipeline_name, notes)

    # b, c, aug, feed: interleaved rounds
    torch.backends.cudnn.benchmark = cuda
    source_b = forever(device_batches(resident, pipeline, device, batch, channels_last=cuda))
    source_feed = forever(device_batches(resident, pipeline, device, batch, channels_last=cuda))
    raw = resident.images[:batch].float().div_(255)
    generator = torch.Generator(device=device).manual_seed(SEED)

    def aug_block(n: int) -> None:
        for _ in range(n):
            pipeline(raw, generator)

    def feed_block(n: int) -> None:
        for _ in itertools.islice(source_feed, n):
            pass

    variants = {
        "b": (lambda n: fast.block(source_b, n), batch),
        "c": (lambda n: fast.block(itertools.repeat(resident_batch, n), n), batch),
        "aug": (aug_block, batch),
        "feed": (feed_block, batch),
    }
    if cuda:
        source_b1 = forever(device_batches(resident, pipeline, device, batch, channels_last=True, overlap=False))
        variants["b1"] = (lambda n: fast.block(source_b1, n), batch)
    row.update(time_blocks(clock, variants, warmup=args.warmup, repeats=args.repeats, steps=args.steps))
    row["b/a"] = None if row["a"] is None else row["b"]["median"] / row["a"]["median"]
    row["b/c"] = row["b"]["median"] / row["c"]["median"]
    return row


# --- host syncs and copies per gpu-backend step -------------------------------------------------------------------

WATCHED = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize", "cudaMemcpyAsync", "cudaMemcpy",
           "aten::_local_scalar_dense", "aten::nonzero", "aten::item")


def sync_profile(clock: Clock, device: torch.device, run_steps: Callable[[int], None], lengths=(5, 15)) -> dict:
    """Counts of sync-prone calls and copies in blocks of two lengths; their difference / steps is the per-step cost,
    free of what each block pays once (train_one_epoch's closing .item(), our own synchronize)."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    counts = []
    for steps in lengths:
        clock()
        with profile(activities=activities) as prof:
            run_steps(steps)
            clock()
        counts.append(Counter(e.name for e in prof.events() if e.name in WATCHED or e.name.startswith("Memcpy")))
    names = sorted(set(counts[0]) | set(counts[1]))
    per_step = {n: (counts[1][n] - counts[0][n]) / (lengths[1] - lengths[0]) for n in names}
    return {"per_step": per_step, "per_block": {n: counts[0][n] - lengths[0] * per_step[n] for n in names},
            "lengths": list(lengths)}


# --- DDP in a 1-process group against no wrapper -----------------------------------------------------------------

def ddp_overhead(args, device: torch.device, clock: Clock, resident: ImageData, report) -> list[dict]:
    from augrun.run.distributed import process_group

    cuda = device.type == "cuda"
    backend = "nccl" if cuda else "gloo"
    if cuda:
        torch.cuda.set_device(device)
    rows = []
    with tempfile.TemporaryDirectory(prefix="augrun-ddp-") as tmp, \
            process_group(backend, init_method=f"file://{tmp}/store", rank=0, world_size=1,
                          device_id=device if cuda else None):
        torch.backends.cudnn.benchmark = cuda
        for batch in args.batch_sizes:
            row = measure_ddp(args, device, clock, resident, batch, backend)
            rows.append(row)
            report(row)
    return rows


def measure_ddp(args, device: torch.device, clock: Clock, resident: ImageData, batch: int, backend: str) -> dict:
    """One batch size: the DDP model lives in this frame only, so that it is gone before its process group."""
    cuda = device.type == "cuda"
    pipeline = build_pipeline(pipeline_specs(args.ddp_pipeline))
    amp = torch.bfloat16 if cuda else None
    mode = args.compile_mode if args.compile else None
    plain_model = new_model(args.model, device, channels_last=cuda)
    inner = copy.deepcopy(plain_model)
    # as build.wrap_model: channels_last first, then DDP, then compile
    wrapped = nn.parallel.DistributedDataParallel(inner, device_ids=[device.index] if cuda else None)
    plain = Trainer(plain_model, device, amp_dtype=amp, compile_mode=mode)
    ddp = Trainer(wrapped, device, amp_dtype=amp, compile_mode=mode, params_of=inner)
    source_plain = forever(device_batches(resident, pipeline, device, batch, channels_last=cuda))
    source_ddp = forever(device_batches(resident, pipeline, device, batch, channels_last=cuda))
    timed = time_blocks(clock, {"plain": (lambda n: plain.block(source_plain, n), batch),
                                "ddp": (lambda n: ddp.block(source_ddp, n), batch)},
                        warmup=args.warmup, repeats=max(args.repeats, 6), steps=args.steps)
    row = {"pipeline": args.ddp_pipeline, "batch": batch, "backend": backend, **timed,
           "ddp/plain": timed["ddp"]["median"] / timed["plain"]["median"]}
    row["overhead"] = 1.0 - row["ddp/plain"]
    return row


# --- intra-op threads on the CPU ------------------------------------------------------------------------------------

def thread_counts() -> dict[str, int]:
    """The thread counts compared: 1, what augrun picks for one CPU process of the gpu backend (no DataLoader
    workers), and torch's default."""
    auto = intra_op_threads(cores=os.cpu_count() or 1, ranks=1, workers_per_rank=0, device_kind="cpu", requested=None)
    return {"1": 1, "auto": auto, "default": TORCH_DEFAULT_THREADS}


def threads_comparison(args, device: torch.device, clock: Clock, resident: ImageData, report) -> list[dict]:
    """b (the gpu-backend step, fp32 on the CPU) at each thread count, in interleaved rounds of one model."""
    counts = thread_counts()
    rows = []
    for batch in args.batch_sizes:
        for pipeline_name in args.pipelines:
            model = Trainer(new_model(args.model, device, channels_last=False), device, amp_dtype=None,
                            compile_mode=None)
            source = forever(device_batches(resident, build_pipeline(pipeline_specs(pipeline_name)), device, batch,
                                            channels_last=False))

            def at(threads: int) -> Callable[[int], None]:
                def block(n: int) -> None:
                    torch.set_num_threads(threads)
                    model.block(source, n)
                return block

            timed = time_blocks(clock, {name: (at(threads), batch) for name, threads in counts.items()},
                                warmup=args.warmup, repeats=args.repeats, steps=args.steps)
            row = {"pipeline": pipeline_name, "batch": batch, "counts": counts, **timed,
                   **{f"{name}/default": timed[name]["median"] / timed["default"]["median"] for name in ("1", "auto")}}
            rows.append(row)
            report(row)
    torch.set_num_threads(TORCH_DEFAULT_THREADS if args.threads is None else args.threads)
    return rows


# --- targets, printing, JSON -------------------------------------------------------------------------------------

def evaluate_targets(args, results: dict) -> list[dict]:
    cuda = args.device == "cuda"
    rows = {(r["pipeline"], r["batch"]): r for r in results["rows"]}
    targets = []

    def add(name: str, value: float, threshold: float, *, at_most: bool = False, applies: bool = True, note: str = ""):
        passed = value <= threshold if at_most else value >= threshold
        targets.append({"target": name, "value": value, "threshold": threshold, "passed": passed,
                        "applies": applies, "note": note})

    if cuda:
        for name, pipeline, batch, quantity, threshold in GPU_TARGETS:
            if (pipeline, batch) in rows and rows[(pipeline, batch)][quantity] is not None:
                add(f"{pipeline}@{batch}: {name} ({quantity})", rows[(pipeline, batch)][quantity], threshold)
        if args.compile:
            h200 = "H200" in results["meta"]["device_name"]
            for (pipeline, batch), row in rows.items():
                if batch == 1024:
                    add(f"{pipeline}@1024 compiled: gpu backend >= 55k images/s on an H200 (b)", row["b"]["median"],
                        COMPILE_TARGET_IMAGES_PER_S, applies=h200,
                        note="" if h200 else "the target is for an H200; this card is informational")
    else:
        for (pipeline, batch), row in rows.items():
            if row["b/a"] is None:
                continue
            add(f"{pipeline}@{batch}: gpu backend on CPU tensors no slower than the cpu backend, {args.model} (b/a)",
                row["b/a"], 1.0, applies=args.model == "small_cnn",
                note="" if args.model == "small_cnn" else "the CPU target is stated for small_cnn")
    for row in results["ddp"]:
        add(f"{row['pipeline']}@{row['batch']}: DDP in 1 process costs < 5% against no wrapper (overhead)",
            row["overhead"], DDP_MAX_OVERHEAD, at_most=True, applies=cuda,
            note="" if cuda else "issue 4 states it as a GPU check; on CPU (gloo) informational")
    return targets


def fmt(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), 22 if i == 0 else 9, *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    line = lambda cells: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])


MAIN_HEADER = ["pipeline @ batch", "a book/s", "b gpu/s", "b1 no side stream/s", "c model/s", "aug-only/s", "feed/s",
               "b/a", "b/c"]


def main_row(r: dict) -> list[str]:
    def median(name: str) -> str:
        return fmt(r[name]["median"]) if r.get(name) else "-"

    return [f"{r['pipeline']} @ {r['batch']}", *map(median, ("a", "b", "b1", "c", "aug", "feed")),
            "-" if r["b/a"] is None else f"{r['b/a']:.2f}", f"{r['b/c']:.2f}"]


THREADS_HEADER = ["pipeline @ batch", "1 thread/s", "auto/s", "default/s", "1/default", "auto/default"]


def threads_row(r: dict) -> list[str]:
    return [f"{r['pipeline']} @ {r['batch']}", *(fmt(r[name]["median"]) for name in ("1", "auto", "default")),
            f"{r['1/default']:.2f}", f"{r['auto/default']:.2f}"]


def threads_title(counts: dict[str, int]) -> str:
    return f"intra-op threads (gpu backend on the CPU; auto = {counts['auto']}, torch's default = {counts['default']}):"


DDP_HEADER = ["pipeline @ batch", "no wrapper/s", "DDP(1 proc)/s", "DDP/plain", "overhead"]


def ddp_row(r: dict) -> list[str]:
    return [f"{r['pipeline']} @ {r['batch']}", fmt(r["plain"]["median"]), fmt(r["ddp"]["median"]), f"{r['ddp/plain']:.3f}",
            f"{100 * r['overhead']:+.1f}%"]


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"cpu: {line.split(':', 1)[1].strip()} ({os.cpu_count()} logical cores)"
    except OSError:
        pass
    return f"cpu: {platform.processor() or platform.machine()} ({os.cpu_count()} logical cores)"


def metadata(args, device: torch.device) -> dict:
    import torchvision

    cuda = device.type == "cuda"
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": str(device), "device_name": device_name(device),
        "torch": torch.__version__, "torchvision": torchvision.__version__, "python": platform.python_version(),
        "cuda": torch.version.cuda if cuda else None,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "hostname": platform.node(),
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "env": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "MKL_NUM_THREADS", "CUDA_VISIBLE_DEVICES")
                if k in os.environ},
        "argv": sys.argv[1:],
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "variants": {
            "a": f"cpu backend (WorkerBatches, {args.workers} workers), fp32, NCHW, cudnn.benchmark off, eager",
            "b": "gpu backend (DeviceBatches + GpuPipeline) + train step" + (
                ", bf16 autocast, channels_last, cudnn.benchmark" if cuda else ", fp32 (precision=auto on CPU)")
                 + (f", torch.compile(mode={args.compile_mode})" if args.compile else ", eager"),
            "b1": "b with each batch made on the training stream (no side stream), CUDA only",
            "c": "the same train step as b on one resident, already augmented batch (the ceiling)",
            "aug": "GpuPipeline alone on a resident float batch",
            "feed": "DeviceBatches alone (index, float, aug, finish), no model",
        },
        "units": "images/s; median over repeats (min, max and every run are kept)",
        "tf32": {"cudnn": torch.backends.cudnn.allow_tf32, "matmul": torch.backends.cuda.matmul.allow_tf32},
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.summarize:
        status = 0
        for path in args.summarize:
            try:
                print_summary(json.loads(path.read_text()))
            except (OSError, ValueError, KeyError) as error:
                print(f"{path}: no results ({type(error).__name__}: {error})")
                status = 1
        return status
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda", torch.cuda.current_device()) if args.device == "cuda" else torch.device("cpu")
    cuda = device.type == "cuda"
    clock = Clock(device)
    began = time.perf_counter()
    results = {"meta": metadata(args, device), "rows": [], "ddp": [], "threads": [], "sync_profile": None, "targets": [],
               "notes": []}

    def save() -> None:  # rewritten after every row, so a run cut short by a timeout still leaves its numbers
        results["meta"]["seconds"] = round(time.perf_counter() - began, 1)
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            tmp = args.json.with_suffix(args.json.suffix + ".tmp")
            tmp.write_text(json.dumps(results, indent=2) + "\n")
            os.replace(tmp, args.json)

    meta = results["meta"]
    print(f"augrun throughput | {meta['device_name']} | torch {meta['torch']} | {args.model} | "
          f"batches {args.batch_sizes} | compile={args.compile} | {args.train_size} synthetic images | "
          f"{args.warmup} warm-up + median of {args.repeats} x {args.steps} steps | {meta['date']}", flush=True)
    splits = make_synthetic(image_size=IMAGE_SIZE, channels=CHANNELS, num_classes=NUM_CLASSES,
                            train_size=args.train_size, test_size=16)
    host = splits.train
    # one device copy shared by every DeviceBatches (their .to(device) is then a no-op)
    resident = ImageData(host.images.to(device), host.labels.to(device), host.classes)
    save()

    if not args.skip_main:
        amp = torch.bfloat16 if cuda else None  # precision=auto
        book = Trainer(new_model(args.model, device, channels_last=False), device, amp_dtype=None, compile_mode=None)
        fast = Trainer(new_model(args.model, device, channels_last=cuda), device, amp_dtype=amp,
                       compile_mode=args.compile_mode if args.compile else None)
        print(table(MAIN_HEADER, []), flush=True)
        for batch in args.batch_sizes:
            for pipeline_name in args.pipelines:
                row = measure_row(args, device, clock, host, resident, pipeline_name, batch, book, fast,
                                  results["notes"])
                results["rows"].append(row)
                print(table(MAIN_HEADER, [main_row(row)]).splitlines()[-1], flush=True)
                save()
        want_profile = args.sync_profile == "on" or (args.sync_profile == "auto" and cuda)
        if want_profile:
            name = "flip_color_crop" if "flip_color_crop" in args.pipelines else args.pipelines[0]
            batch = args.batch_sizes[0]
            source = forever(device_batches(resident, build_pipeline(pipeline_specs(name)), device, batch,
                                            channels_last=cuda))
            fast.block(source, max(args.warmup, 2))
            try:
                profile = sync_profile(clock, device, lambda n: fast.block(source, n))
                results["sync_profile"] = {"pipeline": name, "batch": batch, **profile}
            except Exception as error:  # the profiler is a diagnostic; it must not cost the numbers
                results["sync_profile"] = {"error": f"{type(error).__name__}: {error}"}
            save()

    if args.ddp_overhead:
        print(f"\nDDP overhead ({'nccl' if cuda else 'gloo'}, 1 process, {args.ddp_pipeline}):", flush=True)
        print(table(DDP_HEADER, []), flush=True)

        def report(row: dict) -> None:
            print(table(DDP_HEADER, [ddp_row(row)]).splitlines()[-1], flush=True)

        results["ddp"] = ddp_overhead(args, device, clock, resident, report)
        save()

    if args.threads_compare:
        print("\n" + threads_title(thread_counts()), flush=True)
        print(table(THREADS_HEADER, []), flush=True)

        def report_threads(row: dict) -> None:
            print(table(THREADS_HEADER, [threads_row(row)]).splitlines()[-1], flush=True)

        results["threads"] = threads_comparison(args, device, clock, resident, report_threads)
        save()

    results["targets"] = evaluate_targets(args, results)
    save()  # also stamps meta.seconds
    print_summary(results)
    return 0


def print_summary(results: dict) -> None:
    meta = results["meta"]
    print(f"\n== augrun throughput, {meta['device_name']}, torch {meta['torch']}, {meta['date']}, "
          f"{meta['settings']['model']}, compile={meta['settings']['compile']} (images/s, median)")
    if results["rows"]:
        print(table(MAIN_HEADER, [main_row(r) for r in results["rows"]]))
        print("a: " + meta["variants"]["a"] + "\nb: " + meta["variants"]["b"] + "\nc: " + meta["variants"]["c"])
    if results["ddp"]:
        print(table(DDP_HEADER, [ddp_row(r) for r in results["ddp"]]))
    if results.get("threads"):  # absent from the JSON of earlier versions
        print(threads_title(results["threads"][0]["counts"]))
        print(table(THREADS_HEADER, [threads_row(r) for r in results["threads"]]))
    profile = results["sync_profile"]
    if profile:
        if "error" in profile:
            print(f"sync profile failed: {profile['error']}")
        else:
            # on CUDA only runtime syncs and copies matter: aten::item on CPU tensors (Adam's step counts) is no sync
            cuda = meta["device"].startswith("cuda")
            per_step = {k: v for k, v in profile["per_step"].items() if v and not (cuda and k.startswith("aten::"))}
            per_block = {k: v for k, v in profile["per_block"].items() if v and not (cuda and k.startswith("aten::"))}
            print(f"syncs and copies per gpu-backend step ({profile['pipeline']} @ {profile['batch']}, profiler): "
                  + (", ".join(f"{k} {v:g}" for k, v in per_step.items()) or "none")
                  + "; once per block of steps: " + (", ".join(f"{k} {v:g}" for k, v in per_block.items()) or "none"))
    for note in results["notes"]:
        print(f"note: {note}")
    for t in results["targets"]:
        verdict = ("PASS" if t["passed"] else "FAIL") if t["applies"] else ("info: " + ("met" if t["passed"] else "not met"))
        value = f"{t['value']:,.0f}" if t["threshold"] > 100 else f"{t['value']:.3f}"
        print(f"[{verdict}] {t['target']}: {value} (threshold {t['threshold']:g})" + (f" - {t['note']}" if t["note"] else ""))
    print(f"({meta.get('seconds', '?')} s)", flush=True)


if __name__ == "__main__":
    sys.exit(main())
