"""Devices and processes: which devices a run uses, one process per device (DDP), and the collectives it needs.

augrun starts its own processes (torch.multiprocessing.spawn) for a plain `augrun train` on several devices; in a
launcher's group (augrun.run.launchers: torchrun) it starts nothing and joins the group the launcher made, which is how multi-node
runs work. With one process every collective here is the identity, so single-device code pays nothing.
"""
from __future__ import annotations

import contextlib
import gc
import multiprocessing
import os
import signal
import socket
import sys
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from multiprocessing import resource_tracker
from typing import Any

import torch
import torch.distributed as dist
from torch.multiprocessing import ProcessExitedException, ProcessRaisedException

from augrun import signals
from augrun.errors import INPUT_ERROR_STATUS, ConfigError, UserError
from augrun.run import launchers, rendezvous


@dataclass(frozen=True)
class Placement:
    """What a run asked for, resolved against what this machine has."""
    kind: str                 # "cuda" or "cpu"
    gpu_indices: tuple[int, ...]
    nprocs: int
    strategy: str             # "ddp", "dp" or "single"

    def device(self, index: int) -> torch.device:
        """The device of the process with this index among the run's processes on this machine (its rank, or under a
        launcher its local rank): the one rule for which GPU a process takes."""
        return torch.device(f"cuda:{self.gpu_indices[index]}") if self.kind == "cuda" else torch.device("cpu")

    def device_names(self) -> list[str]:
        if self.kind == "cpu":
            return ["cpu"] * self.nprocs
        if launchers.group_member() is not None:  # a multi-node group: name devices by rank, each node has its own
            return [f"rank{r}:cuda" for r in range(self.nprocs)]
        return [f"cuda:{i}" for i in self.gpu_indices]


def resolve_devices(devices: Any, *, nprocs: int | None, strategy: str, visible_gpus: int,
                    job_num: int = 0) -> Placement:
    """Turn trainer.devices / nprocs / strategy into a placement, or a ConfigError naming what would be valid.

    In a launcher's group (torchrun) the group's size is the launcher's: every process is one rank on one device.
    """
    placement = _resolve(devices, nprocs=nprocs, strategy=strategy, visible_gpus=visible_gpus, job_num=job_num)
    member = launchers.group_member()
    if member is None:
        return placement
    indices = placement.gpu_indices
    if placement.kind == "cuda" and len(indices) > 1 and member.local_rank >= len(indices):
        raise ConfigError("trainer.devices", f"{member.launcher} started {member.local_rank + 1} or more processes on "
                          f"this node, which sees {len(indices)} GPUs; valid: one GPU per process (Slurm: "
                          "--gpus-per-task=1, or gpus_per_node equal to tasks_per_node), or trainer.devices=cpu")
    world = member.world_size
    return Placement(placement.kind, indices, world, "ddp" if world > 1 else "single")


def member_device(placement: Placement, member: launchers.GroupMember) -> torch.device:
    """A launcher's rank takes the node's GPU of its local rank, or the one GPU it sees (Slurm binds one per task)."""
    return placement.device(member.local_rank if len(placement.gpu_indices) > 1 else 0)


def _resolve(devices: Any, *, nprocs: int | None, strategy: str, visible_gpus: int, job_num: int) -> Placement:
    valid = f"valid: auto, cpu, cuda, per_job, a count 1..{visible_gpus} or a list of indices 0..{visible_gpus - 1}" \
        if visible_gpus else "valid here (no CUDA device visible): auto, cpu, per_job"
    if devices == "per_job":  # parallel sweep jobs (joblib launcher) each take their own GPU, round robin
        devices = [job_num % visible_gpus] if visible_gpus else "cpu"
    if devices == "auto":
        indices = tuple(range(visible_gpus))
    elif devices == "cpu":
        indices = ()
    elif devices == "cuda":
        if not visible_gpus:
            raise ConfigError("trainer.devices", f"cuda requested but no CUDA device is visible; {valid}")
        indices = tuple(range(visible_gpus))
    elif isinstance(devices, int) and not isinstance(devices, bool):
        if not 1 <= devices <= visible_gpus:
            raise ConfigError("trainer.devices", f"{devices} GPUs requested, {visible_gpus} visible; {valid}")
        indices = tuple(range(devices))
    elif isinstance(devices, (list, tuple)) and devices and all(isinstance(i, int) for i in devices):
        missing = [i for i in devices if not 0 <= i < visible_gpus]
        if missing or len(set(devices)) != len(devices):
            raise ConfigError("trainer.devices", f"GPU index {missing or list(devices)} does not exist or repeats; {valid}")
        indices = tuple(devices)
    else:
        raise ConfigError("trainer.devices", f"got {devices!r}; {valid}")

    if not indices:  # cpu: one process unless asked for more (gloo DDP on the CPU)
        count = nprocs or 1
        return Placement("cpu", (), count, "ddp" if count > 1 else "single")
    if strategy == "dp":
        if nprocs not in (None, 1):
            raise ConfigError("trainer.nprocs", f"got {nprocs}; nn.DataParallel (strategy=dp) runs in 1 process")
        return Placement("cuda", indices, 1, "dp" if len(indices) > 1 else "single")
    if nprocs not in (None, len(indices)):
        raise ConfigError("trainer.nprocs", f"got {nprocs} for {len(indices)} GPUs; valid: null or {len(indices)} "
                          "(one process per GPU)")
    return Placement("cuda", indices, len(indices), "ddp" if len(indices) > 1 else "single")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_on_every_rank(worker: Callable[..., Any], placement: Placement, *args: Any,
                      rendezvous_timeout_s: float = 600.0) -> None:
    """Run worker(rank, world_size, device, *args) in every process of the run. In a launcher's group, the ranks
    meet first (augrun.run.rendezvous: bounded by rendezvous_timeout_s, and interruptible)."""
    member = launchers.group_member()
    if member is not None:
        store = rendezvous.meet(member.init_method, rank=member.rank, world=member.world_size,
                                timeout_s=rendezvous_timeout_s)
        _run_in_group(worker, member.rank, member.world_size, member_device(placement, member), args, store=store)
    elif placement.nprocs > 1:
        # the address goes to the ranks, not into this process's environment: there it would read as half a torchrun
        # set-up to the next run of a notebook's kernel
        _spawn_and_join(worker, placement, args, init_method=f"tcp://127.0.0.1:{_free_port()}")
    else:
        worker(0, 1, placement.device(0), *args)


def _spawn_and_join(worker: Callable[..., Any], placement: Placement, args: tuple, *, init_method: str) -> None:
    """Start one process per rank and wait. If one fails, join ends the others and raises with that rank's error.

    SIGINT/SIGTERM, sent to this launcher alone (a scheduler's) or to the whole group (Ctrl-C, Slurm), reach every
    rank: the ranks start with both held and take them once their handler is in place (signals.take_in_rank), and this
    launcher passes on what it receives. The ranks then agree on a step, checkpoint, and leave; Stopped is raised here.
    """
    flag = signals.SignalFlag.installed()
    # Set by a rank that stopped on a signal, which then exits cleanly: a non-zero exit would make join end the other
    # ranks, rank 0 perhaps still writing the checkpoint.
    stopped_by = multiprocessing.get_context("spawn").RawValue("i", 0)
    # bad input found inside a rank (a dataset too large for its GPU): sent here as itself, to be raised as itself
    user_errors = multiprocessing.get_context("spawn").SimpleQueue()
    ranks: list = []

    def forward(signum, frame=None):
        flag.record(signum)
        for process in ranks:
            if process.is_alive():
                os.kill(process.pid, signum)

    # from a thread (augrun.api's caller's) no handler can be set: the ranks get only what is sent to the group
    previous = {s: signal.signal(s, forward) for s in signals.STOP_SIGNALS} if signals.in_main_thread() else {}
    try:
        # starting the tracker (on the first spawn) unblocks both signals in this thread: start it before holding them
        resource_tracker.ensure_running()
        with signals.held_for_children():
            rank_args = (worker, placement, args, init_method, stopped_by, user_errors)
            context = torch.multiprocessing.start_processes(_spawned, args=rank_args, nprocs=placement.nprocs,
                                                            join=False, start_method="spawn")
        ranks.extend(context.processes)
        if flag.signum is not None:  # received while the ranks were being started, before they could be told
            forward(flag.signum)
        try:
            # a short grace period: the survivors of a failed rank wait in a collective that will never complete
            while not context.join(grace_period=2):
                pass
        except (ProcessRaisedException, ProcessExitedException):
            if not user_errors.empty():  # the cause, whichever rank join happened to report first
                raise user_errors.get() from None
            raise
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if stopped_by.value:
        raise signals.Stopped(stopped_by.value)  # rank 0 has printed the note


def _spawned(rank: int, worker: Callable[..., Any], placement: Placement, args: tuple, init_method: str, stopped_by,
             user_errors) -> None:
    signals.take_in_rank()
    try:
        _run_in_group(worker, rank, placement.nprocs, placement.device(rank), args, init_method=init_method)
    except signals.Stopped as stop:
        stopped_by.value = stop.signum
    except UserError as error:
        user_errors.put(error)
        sys.exit(INPUT_ERROR_STATUS)


def _run_in_group(worker: Callable[..., Any], rank: int, world: int, device: torch.device, args: tuple, *,
                  init_method: str | None = None, store: dist.Store | None = None) -> None:
    """The group meets at init_method (augrun's own ranks) or in `store` (a launcher's, met already)."""
    if device.type == "cuda":
        torch.cuda.set_device(device)
    meeting = {"store": store} if store is not None else {"init_method": init_method}
    with process_group("nccl" if device.type == "cuda" else "gloo", **meeting, rank=rank, world_size=world,
                       device_id=device if device.type == "cuda" else None):
        worker(rank, world, device, *args)


@contextlib.contextmanager
def process_group(backend: str, **init: Any) -> Iterator[None]:
    """init_process_group, and destroy_process_group after every DDP model made inside is gone.

    A DDP model freed after its group was destroyed frees the group itself, from its Reducer, holding the GIL, and
    joins gloo's threads, one of which may be waiting for the GIL to free a finished collective's tensor: a deadlock,
    seen with torch 2.11 on a rank that stopped on a signal under load. Freed by destroy_process_group instead, the
    group releases the GIL first. Models in the frames of an exception's traceback (a stop, a failure) are freed here;
    a caller must not hold one in its own frame when the block ends.
    """
    dist.init_process_group(backend, **init)
    try:
        yield
    except BaseException as error:
        traceback.clear_frames(error.__traceback__)  # the frames that raised: the one running the block is kept
        raise
    finally:
        gc.collect()  # a model in a reference cycle
        dist.destroy_process_group()


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    if is_distributed():
        tensor = tensor.clone()
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_reduce_max(tensor: torch.Tensor) -> int:
    """The largest value over the ranks, read on the host."""
    if is_distributed():
        tensor = tensor.clone()
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return int(tensor.item())


def broadcast_object(obj: Any) -> Any:
    """Rank 0's object on every rank (a no-op in one process)."""
    if not is_distributed():
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank when it is true on any: ranks must agree before they leave a loop together."""
    if not is_distributed():
        return flag
    return all_reduce_max(torch.tensor(int(flag), device=device)) > 0


class StopAgreement:
    """Whether the ranks stop now, on a signal any of them received. Ranks must leave the loop at the same step, so
    they agree by an all-reduce; during training only every `every` steps, since one per step would be a host sync
    per step. With one process it is just the flag."""

    def __init__(self, signaled: Callable[[], bool], *, world: int, device: torch.device, every: int):
        self.signaled, self.world, self.device, self.every = signaled, world, device, every
        self.checks = 0

    def now(self) -> bool:
        return any_rank(self.signaled(), self.device)

    def after_step(self) -> bool:
        if self.world == 1:
            return self.signaled()
        self.checks += 1
        return self.checks % self.every == 0 and self.now()
