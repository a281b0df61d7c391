"""Where a run ran: versions, devices, host, git commit, command line and times, for summary.json's `environment`
block; and how many intra-op threads a CPU process should use. Pure functions, no Hydra: rank 0 gathers the block once
per run, and `augrun compare` reads it back to tell whether timings of different runs can be compared."""
from __future__ import annotations

import datetime
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

GIT_TIMEOUT_S = 2.0  # a hung network file system must not delay a run's start by more than this


def intra_op_threads(*, cores: int, ranks: int, workers_per_rank: int, device_kind: str,
                     requested: int | None) -> int | None:
    """torch's intra-op thread count for each rank: `requested` (trainer.threads) when set; on the CPU, the cores left
    after the DataLoader workers, shared by the ranks; None (torch's default) on CUDA, where the host threads only feed
    the GPU. torch's default takes every core, and its threads then spin against the workers' for them: a one-process
    CPU run fell from 8.4k to 100-200 images/s on 2 cores busy with 4 workers."""
    if requested is not None:
        return requested
    if device_kind != "cpu":
        return None
    return max(1, (cores - workers_per_rank * ranks) // ranks)


def now_utc() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def cpu_model() -> str:
    """The CPU's marketing name ("AMD EPYC 7763 64-Core Processor"), else what the platform says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:  # not Linux
        pass
    return platform.processor() or platform.machine()


def _git(cwd: Path, *args: str) -> str | None:
    """git's stdout, None when git is missing, fails (not a repository) or hangs."""
    try:
        result = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=GIT_TIMEOUT_S)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def git_state(cwd: Path) -> dict[str, Any]:
    """The commit of the repository holding `cwd` and whether tracked files differ from it; nulls outside a
    repository. Untracked files do not count: a run's own outputs/ would otherwise make every checkout dirty."""
    commit = _git(cwd, "rev-parse", "HEAD")
    if commit is None:
        return {"git_commit": None, "git_dirty": None}
    changes = _git(cwd, "status", "--porcelain", "--untracked-files=no")
    return {"git_commit": commit, "git_dirty": None if changes is None else bool(changes)}


INTERPRETER_OPTIONS_WITH_VALUE = ("-X", "-W")


def command_line(orig_argv: list[str] | None = None) -> str:
    """The command as the user typed it, `augrun train ...`, also when started as `python -u -m augrun train ...`.
    From sys.orig_argv: augrun's CLI rewrites sys.argv for Hydra (it drops `train`, adds hydra.run.dir)."""
    args = list(sys.orig_argv if orig_argv is None else orig_argv)[1:]  # without the interpreter
    while args and args[0].startswith("-") and args[0] not in ("-m", "-c"):
        args = args[2:] if args[0] in INTERPRETER_OPTIONS_WITH_VALUE else args[1:]
    args = args[2:] if args[:1] == ["-m"] else args[1:]  # without the module or the script (the augrun entry point)
    return shlex.join(["augrun", *args])


def device_names(device_kind: str, gpu_indices: tuple[int, ...]) -> list[str]:
    if device_kind == "cuda":
        import torch
        return [torch.cuda.get_device_name(i) for i in gpu_indices]
    return ["cpu: " + cpu_model()]


def augrun_version() -> str:
    """augrun's version, from its installed metadata: pyproject.toml is the one source. A source tree used through
    PYTHONPATH without being installed has none."""
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("augrun")
    except PackageNotFoundError:
        return "unknown (not installed)"


def gather(*, device_kind: str, gpu_indices: tuple[int, ...] = (), threads: int, command: str,
           cwd: Path | None = None) -> dict[str, Any]:
    """The environment block, stamped with the start time; `finished` adds the end time. `command`: command_line() of
    the launching process (a spawned rank's own is multiprocessing's)."""
    import torch
    import torchvision

    try:
        cudnn = torch.backends.cudnn.version()
    except RuntimeError:  # a broken cuDNN install: the run itself may not need it
        cudnn = None
    return {
        "augrun": augrun_version(), "python": platform.python_version(), "torch": torch.__version__,
        "torchvision": torchvision.__version__, "cuda": torch.version.cuda, "cudnn": cudnn,
        "devices": device_names(device_kind, gpu_indices), "cpu": cpu_model(), "cpu_count": os.cpu_count(),
        "threads": threads, "hostname": platform.node(), **git_state(cwd or Path.cwd()),
        "command": command, "started_at": now_utc(), "finished_at": None,
    }


def finished(environment: dict[str, Any]) -> dict[str, Any]:
    return {**environment, "finished_at": now_utc()}


# what makes timings of two runs incomparable, as named in compare's warning
VERSION_KEYS = ("torch", "torchvision", "cuda", "cudnn", "python")


def difference(environments: list[dict[str, Any]]) -> str | None:
    """What differs between the environments of runs compared ("devices (cpu: X; NVIDIA H100) or versions (torch
    2.11.0, 2.14.1)"), None when nothing that changes timings does."""
    devices = list(dict.fromkeys("+".join(map(str, e.get("devices") or [])) for e in environments))
    parts = [f"devices ({'; '.join(devices)})"] if len(devices) > 1 else []
    versions = []
    for key in VERSION_KEYS:
        seen = list(dict.fromkeys(str(e.get(key)) for e in environments))
        if len(seen) > 1:
            versions.append(f"{key} {', '.join(seen)}")
    if versions:
        parts.append(f"versions ({'; '.join(versions)})")
    return " or ".join(parts) or None
