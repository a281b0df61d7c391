"""How augrun learns that it is one rank of a process group that a launcher started (torchrun today), and that group's
shape: the one place that reads a launcher's environment. With none, augrun starts its own processes.

No torch import: the command line reads this before torch loads, to refuse a malformed environment in one line.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from augrun.errors import UserError

# torchrun's variables: augrun joins a group only when all of the first four are there
TORCHRUN_REQUIRED = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
TORCHRUN_MARKERS = TORCHRUN_REQUIRED + ("LOCAL_RANK", "LOCAL_WORLD_SIZE", "TORCHELASTIC_RUN_ID", "GROUP_RANK")


@dataclass(frozen=True)
class GroupMember:
    """This process's place in a group a launcher started."""
    launcher: str      # "torchrun"
    rank: int
    world_size: int
    local_rank: int    # its index among the group's processes on this node: which of the node's GPUs it takes

    @property
    def writes(self) -> bool:
        """Rank 0 alone checks the command, writes the run directory and reads its checkpoint."""
        return self.rank == 0


def group_member(env: Mapping[str, str] = os.environ) -> GroupMember | None:
    """This process's place in a launcher's group, or None when no launcher started it. An incomplete or malformed set
    of torchrun's variables (a stray RANK inherited from a shell) is refused instead of silently training as a rank."""
    present = [name for name in TORCHRUN_MARKERS if name in env]
    if not present:
        return None
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
