"""How augrun learns that it is one rank of a process group that a launcher started (torchrun, or Slurm's srun with
several tasks, which submitit's tasks_per_node and nodes use), and that group's shape; and whether this process is a
Slurm job that Slurm has requeued. The one place that reads a launcher's environment. With no group, augrun starts its
own processes.

No torch import: the command line reads this before torch loads, to refuse a malformed environment in one line.
"""
from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

from augrun.errors import UserError

# torchrun's variables: augrun joins a group only when all of the first four are there
TORCHRUN_REQUIRED = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
TORCHRUN_MARKERS = TORCHRUN_REQUIRED + ("LOCAL_RANK", "LOCAL_WORLD_SIZE", "TORCHELASTIC_RUN_ID", "GROUP_RANK")
# srun sets these in each task of a job step; the batch script itself (no srun) has no step task count
SLURM_TASK = ("SLURM_STEP_NUM_TASKS", "SLURM_PROCID", "SLURM_LOCALID", "SLURM_JOB_ID")
SLURM_PORT_BASE, SLURM_PORT_SPAN = 20000, 20000  # the group's port, derived from the job and step ids


@dataclass(frozen=True)
class GroupMember:
    """This process's place in a group a launcher started."""
    launcher: str      # "torchrun" or "slurm"
    rank: int
    world_size: int
    local_rank: int    # its index among the group's processes on this node: which of the node's GPUs it takes
    init_method: str | None = None  # where the group meets; None: torchrun's environment (env://)

    @property
    def writes(self) -> bool:
        """Rank 0 alone checks the command, writes the run directory and reads its checkpoint."""
        return self.rank == 0


def group_member(env: Mapping[str, str] = os.environ) -> GroupMember | None:
    """This process's place in a launcher's group, or None when no launcher started it (or srun started one task). An
    incomplete or malformed set of torchrun's variables (a stray RANK inherited from a shell) is refused instead of
    silently training as a rank."""
    if any(name in env for name in TORCHRUN_MARKERS):
        return _torchrun_member(env)
    if "SLURM_STEP_NUM_TASKS" in env:
        return _slurm_member(env)
    return None


def writes_run_dir() -> bool:
    """Whether this process writes (and reads) the run directory: rank 0 of a launcher's group, or a process in none."""
    member = group_member()
    return member is None or member.writes


def _torchrun_member(env: Mapping[str, str]) -> GroupMember:
    present = [name for name in TORCHRUN_MARKERS if name in env]
    missing = [name for name in TORCHRUN_REQUIRED if name not in env]
    if missing:
        raise UserError(present[0], f"set in the environment, but {', '.join(missing)} {'is' if len(missing) == 1 else 'are'}"
                        f" not; augrun joins a torchrun group only with all of {', '.join(TORCHRUN_REQUIRED)}; valid: "
                        f"start it with torchrun, or unset {', '.join(present)}")
    numbers = {}
    for name in ("RANK", "WORLD_SIZE", "MASTER_PORT") + (("LOCAL_RANK",) if "LOCAL_RANK" in env else ()):
        value = env[name]
        if not value.strip().isdigit():
            raise UserError(name, f"got {value!r}; valid: a non-negative integer (as torchrun sets it)")
        numbers[name] = int(value)
    if not numbers["RANK"] < numbers["WORLD_SIZE"]:
        raise UserError("RANK", f"got {numbers['RANK']} with WORLD_SIZE={numbers['WORLD_SIZE']}; valid: 0 <= RANK < "
                        "WORLD_SIZE")
    if not 0 < numbers["MASTER_PORT"] < 65536:
        raise UserError("MASTER_PORT", f"got {numbers['MASTER_PORT']}; valid: a port 1..65535")
    return GroupMember("torchrun", numbers["RANK"], numbers["WORLD_SIZE"], numbers.get("LOCAL_RANK", numbers["RANK"]))


def _slurm_member(env: Mapping[str, str]) -> GroupMember | None:
    """A task of an srun step with several tasks (srun -n 2, submitit's tasks_per_node or nodes): one rank each, meeting
    on the step's first node at a port derived from the job, so every task finds it without being told."""
    numbers = {}
    for name in SLURM_TASK:
        value = env.get(name, "")
        if not value.strip().isdigit():
            raise UserError(name, f"got {value!r} in a Slurm task's environment; valid: a non-negative integer (as "
                            "srun sets it)")
        numbers[name] = int(value)
    world = numbers["SLURM_STEP_NUM_TASKS"]
    if world <= 1:
        return None  # one task: augrun starts its own processes, if the run has several devices
    nodes = expand_hostlist(env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST", ""))
    if not nodes:
        raise UserError("SLURM_STEP_NODELIST", "empty in a Slurm task's environment; valid: srun's node list")
    port = int(env["MASTER_PORT"]) if env.get("MASTER_PORT", "").isdigit() else \
        SLURM_PORT_BASE + (numbers["SLURM_JOB_ID"] * 31 + int(env.get("SLURM_STEP_ID", "0") or 0)) % SLURM_PORT_SPAN
    address = env.get("MASTER_ADDR") or nodes[0]
    return GroupMember("slurm", numbers["SLURM_PROCID"], world, numbers["SLURM_LOCALID"], f"tcp://{address}:{port}")


def expand_hostlist(hostlist: str) -> list[str]:
    """Slurm's compact node list as host names: "node[01-03,07],gpu5" -> node01, node02, node03, node07, gpu5."""
    hosts = []
    for prefix, ranges, plain in re.findall(r"([^,\[]+)\[([^\]]+)\]|([^,\[\]]+)", hostlist):
        if plain:
            hosts.append(plain)
            continue
        for part in ranges.split(","):
            first, _, last = part.partition("-")
            for number in range(int(first), int(last or first) + 1):
                hosts.append(f"{prefix}{number:0{len(first)}d}")
    return hosts


def slurm_job_id(env: Mapping[str, str] = os.environ) -> str | None:
    """The Slurm job this process belongs to, if any."""
    return env.get("SLURM_JOB_ID") or None


def requeued(env: Mapping[str, str] = os.environ) -> bool:
    """Whether this is a Slurm job started again by a requeue of itself (a time limit that submitit or augrun
    requeued, a preemption, `scontrol requeue`): Slurm counts the restarts, and the job continues from its checkpoint."""
    return env.get("SLURM_RESTART_COUNT", "0").strip() not in ("", "0")
