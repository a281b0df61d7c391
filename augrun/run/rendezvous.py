"""Meeting the other ranks of a launcher's group (torchrun, Slurm tasks): bounded and interruptible. torch's own
rendezvous waits up to 30 minutes inside C++, where no signal reaches Python: a rank whose peers never come would
ignore Ctrl-C and SIGTERM all that time. Here each wait is a short one, repeated, with the signal flag and the
deadline checked between them; the store it builds is the one the process group then uses.
"""
from __future__ import annotations

import os
import time
from datetime import timedelta
from urllib.parse import urlparse

import torch.distributed as dist

from augrun import signals
from augrun.errors import ConfigError

STEP_S = 1.0  # the longest a single wait may block before the flag and the deadline are checked again
ARRIVED = "augrun/arrived"
GROUP_TIMEOUT_S = 1800.0  # the process group's own waits on the store, once met (torch's default)


def meet(init_method: str | None, *, rank: int, world: int, timeout_s: float) -> dist.Store:
    """The group's store, once all `world` ranks have arrived; Stopped on a signal, a ConfigError naming
    trainer.rendezvous_timeout_s when they do not arrive in time. init_method None: torchrun's MASTER_ADDR/PORT."""
    host, port = _address(init_method)
    deadline = time.monotonic() + timeout_s
    store = _connect(host, port, rank=rank, world=world, deadline=deadline, timeout_s=timeout_s)
    store.add(ARRIVED, 1)
    while (arrived := store.add(ARRIVED, 0)) < world:
        _check(deadline, timeout_s, f"{arrived} of {world} ranks arrived at {host}:{port}")
        time.sleep(0.1)
    store.set_timeout(timedelta(seconds=GROUP_TIMEOUT_S))  # the short waits were the rendezvous's; the group's are long
    return store


def _address(init_method: str | None) -> tuple[str, int]:
    if init_method is None:
        return os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])
    parsed = urlparse(init_method)
    return parsed.hostname or "127.0.0.1", int(parsed.port or 0)


def _connect(host: str, port: int, *, rank: int, world: int, deadline: float, timeout_s: float) -> dist.Store:
    """Rank 0 serves the store; the others connect to it, again and again until it is up."""
    while True:
        try:
            return dist.TCPStore(host, port, world_size=world, is_master=rank == 0,
                                 timeout=timedelta(seconds=STEP_S), wait_for_workers=False)
        except Exception as error:  # noqa: BLE001 - torch's DistStoreError, RuntimeError, by version
            if rank == 0:  # the server could not start: nothing to wait for
                raise ConfigError("MASTER_PORT", f"rank 0 cannot serve the group's rendezvous at {host}:{port} "
                                  f"({' '.join(str(error).split())[:200]}); valid: a free port on this node") from None
            _check(deadline, timeout_s, f"rank 0 not reachable at {host}:{port}")


def _check(deadline: float, timeout_s: float, waiting_for: str) -> None:
    flag = signals.SignalFlag.installed()
    if flag.signum is not None:
        raise signals.Stopped(flag.signum, f"stopped by signal {flag.signum} while waiting for the other ranks "
                                           f"({waiting_for}), before training")
    if time.monotonic() > deadline:
        raise ConfigError("trainer.rendezvous_timeout_s", f"the other ranks did not come within {timeout_s:g} s "
                          f"({waiting_for}); valid: start every rank (torchrun --nnodes, srun -n), or a longer "
                          "trainer.rendezvous_timeout_s")
