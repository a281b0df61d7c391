"""SIGINT and SIGTERM: how augrun stops on them, sent to its process alone or, as a terminal's Ctrl-C, `timeout` and
Slurm send them, to its whole process group (DataLoader workers and DDP ranks included).

The main process alone decides. Its handler (`SignalFlag`, one per process) raises `Stopped` at once while the command
starts (imports, the pre-check, data loading: work that is simply abandoned, every file augrun writes being written
atomically). Once Hydra runs the command it only records the signal: a job checks it before it starts, and the
training loop between steps, finishing its step, letting the ranks agree, checkpointing, then raising `Stopped`.

Child processes are started with both signals held (`held_for_children`), so that one sent to the group while a child
starts waits until the child has set its own handling: a DDP rank takes them as the main process does
(`take_in_rank`); a DataLoader worker leaves them to its parent (`leave_to_parent`), which shuts it down once it has
checkpointed.

No torch import: the command line installs the handler before it imports anything heavy.
"""
from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType

from augrun import rundir

# SIGUSR2: Slurm's warning that the job's time limit is near (`--signal=USR2@<seconds>`, as submitit asks for it),
# sent to every process of the job: a stop like the others, after which the job is requeued and continues
TIME_LIMIT_SIGNAL = signal.SIGUSR2
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, TIME_LIMIT_SIGNAL)
# the signals a DataLoader worker ignores: only its parent's SIGTERM (a shutdown) means anything to it
IGNORED_BY_WORKERS = (signal.SIGINT, TIME_LIMIT_SIGNAL)


class Stopped(BaseException):
    """A SIGINT/SIGTERM ended the command; `status` is its exit status, the shell's 128 + signal number (130, 143).

    A BaseException, as KeyboardInterrupt is, so that no `except Exception` on its way (Hydra's job runner, a reader's
    fallback, torch's process wrapper) takes it for a failure. `note` is the one line still to print, or None when it
    has been printed already (rank 0 prints its own, naming the checkpoint it wrote).
    """

    def __init__(self, signum: int, note: str | None = None, target: Path | None = None):
        super().__init__(signum, note)
        self.signum, self.note = signum, note
        self.status = 128 + signum
        self.target = target  # the stopped run's directory or sweep's root, set by augrun.commands.train


def resume_hint(run_dir: Path) -> str:
    """How to continue a stopped run: a sweep's job continues with its sweep, which finishes the jobs not yet done."""
    sweep = next((folder for folder in Path(run_dir).parents if rundir.is_sweep_root(folder)), None)
    if sweep is not None:
        return f"Resume the sweep with the same command plus: hydra.sweep.dir={sweep} resume=true"
    return f"Resume with the same overrides plus: hydra.run.dir={run_dir} resume=true"


def before_training_note(signum: int) -> str:
    return f"stopped by signal {signum} before training started; nothing to resume"


class SignalFlag:
    """The process's SIGINT/SIGTERM handler, installed once: a signal that lands between two sweep jobs, or while an
    epoch is evaluated, must still stop the run at the next check instead of being lost with a job's own handler.

    `stop_at_once(frame)`, when set and true for the frame the signal interrupts: raise Stopped from there (the
    command's start), instead of only recording the signal for the training loop to act on. The first signal decides
    the exit status; later ones change nothing and interrupt nothing, so the clean-up after the first is not cut short.
    """

    _instance: SignalFlag | None = None

    def __init__(self):
        self.signum: int | None = None
        self.stop_at_once: Callable[[FrameType | None], bool] | None = None
        self._pid = os.getpid()
        # Outside the main thread (augrun.api called from a thread) no handler can be set: Python runs handlers in the
        # main thread only, whose handling stays its own, and this flag is never set
        self.handles = in_main_thread()
        if self.handles:
            for signum in STOP_SIGNALS:
                signal.signal(signum, self._handle)

    @classmethod
    def installed(cls) -> SignalFlag:
        if cls._instance is None or cls._instance._pid != os.getpid():
            cls._instance = cls()
        return cls._instance

    def _handle(self, signum, frame) -> None:
        if os.getpid() != self._pid:
            return  # a forked child (a decoding process) that has not set its own handling yet: its parent decides
        if self.signum is not None:
            return
        self.signum = signum
        if self.stop_at_once is not None and self.stop_at_once(frame):
            raise Stopped(signum, before_training_note(signum))

    def record(self, signum: int) -> None:
        """A signal this process learnt of without its handler (a DDP launcher's, which passes it on)."""
        if self.signum is None:
            self.signum = signum


@contextlib.contextmanager
def handled_during_call(stop_at_once: Callable[[FrameType | None], bool]) -> Iterator[SignalFlag]:
    """augrun's handling of SIGINT/SIGTERM for one call from Python (augrun.api), and the caller's handlers back after
    it: a Jupyter kernel's SIGINT (its stop button) must interrupt the next cell as before, and a signal that stopped
    one run must not stop the next one the kernel starts. A fresh flag per call, for the same reason."""
    previous = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    SignalFlag._instance = None
    flag = SignalFlag.installed()
    flag.stop_at_once = stop_at_once
    try:
        yield flag
    finally:
        SignalFlag._instance = None
        if flag.handles:
            for signum, handler in previous.items():  # None: set outside Python, not restorable: the default instead
                signal.signal(signum, signal.SIG_DFL if handler is None else handler)


def in_main_thread() -> bool:
    """Whether signal handlers can be set here: Python allows it in the main thread only."""
    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def held_for_children() -> Iterator[None]:
    """Hold SIGINT/SIGTERM in this thread while it starts child processes. A child inherits the hold, so a signal sent
    to the whole group while it starts stays pending until it has set its own handling, instead of reaching a handler
    it merely inherited (torch's DataLoader workers die of SIGTERM). This process still gets the signal: another of
    its threads takes it, or it is delivered when the hold ends."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def import_whole(*modules: str) -> None:
    """Import `modules` whole before a signal acts: Python abandons an import that a KeyboardInterrupt cuts short, but
    torch's C extension stays half-registered, and every later `import torch` in the process then fails (a notebook
    kernel's next call). Holding the signal in this thread is not enough (torch's import starts threads, and Python
    runs the handler in this thread whichever thread the signal reached), so the handlers only record it meanwhile,
    and the first one recorded is raised again, to the handlers in place before, once the imports are whole."""
    import importlib
    if not in_main_thread():  # no handler runs outside the main thread: nothing to defer
        for module in modules:
            importlib.import_module(module)
        return
    received: list[int] = []
    previous = {signum: signal.signal(signum, lambda signum, frame: received.append(signum))
                for signum in STOP_SIGNALS}
    try:
        for module in modules:
            importlib.import_module(module)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
    if received:
        signal.raise_signal(received[0])


def take_in_rank() -> None:
    """In a DDP rank started by augrun (under `held_for_children`): record SIGINT/SIGTERM for the training loop, then
    take those sent while the rank started."""
    SignalFlag.installed()
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


def leave_to_parent(worker_id: int = 0) -> None:
    """In a DataLoader worker (its worker_init_fn; forked under `held_for_children`): SIGINT and SIGTERM sent to the
    group are the parent's to act on, and the parent needs this worker's batches until it has checkpointed.

    SIGINT and SIGUSR2 are ignored (the parent never sends them). SIGTERM stays held and a thread takes each one: from
    the parent it is a shutdown (DataLoader's terminate(), at exit), and the worker exits as torch's own handler would;
    from anyone else (`kill` on the group, Slurm) it is ignored.
    """
    for signum in IGNORED_BY_WORKERS:
        signal.signal(signum, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, IGNORED_BY_WORKERS)
    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGTERM])  # already, when forked under held_for_children
    if not hasattr(signal, "sigwaitinfo"):  # no sender to tell apart (macOS): torch's handling, as before
        signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGTERM])
        return
    parent = os.getppid()

    def take_sigterm() -> None:
        while signal.sigwaitinfo([signal.SIGTERM]).si_pid != parent:
            pass
        os._exit(0)  # status 0, as torch's handler: the parent's DataLoader reports any other as a failed worker

    threading.Thread(target=take_sigterm, name="augrun-sigterm", daemon=True).start()
