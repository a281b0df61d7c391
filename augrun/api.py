"""augrun from Python (a notebook): the commands as functions that take the command line's overrides and return
objects instead of exit statuses.

    run = augrun.train("aug=flip_only", "trainer.epochs=2")     # augrun train aug=flip_only trainer.epochs=2
    sweep = augrun.sweep("aug=none,flip_only", "seed=0,1")       # augrun train -m aug=none,flip_only seed=0,1
    image = augrun.preview("aug=flip_color_crop")                # augrun preview aug=flip_color_crop, as a PIL image
    comparison = augrun.compare_runs(run_a, run_b, out="report") # augrun compare A B --out report
    augrun.load("outputs/2026-11-27/10-00-00")                   # a Run, or a Sweep for a sweep's root

Below the argument handling each function runs what its command runs (augrun.commands: train.execute,
preview.draw_preview, compare.run_compare): the same pre-check, run directories and reports. Only the outcome is said differently:
bad input raises the UserError the command line prints in one line; a run that fails while training raises
TrainingFailed; SIGINT (a notebook's stop button) or SIGTERM checkpoints the run, as in a terminal, and raises
Interrupted, a KeyboardInterrupt whose message is the call that resumes it. Nothing here calls sys.exit.
"""
from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from augrun import rundir, signals
from augrun.compare.results import Comparison, Run, Sweep, load  # load: a Run or Sweep from its directory
from augrun.config.command_line import HYDRA_FLAGS, override_key, parse_command_line, split_argv
from augrun.errors import UserError

if TYPE_CHECKING:
    from PIL.Image import Image

    from augrun.commands.train import TrainOutcome

__all__ = ["Comparison", "Interrupted", "Run", "Sweep", "TrainingFailed", "UserError", "compare_runs", "load",
           "preview", "sweep", "train"]

# Hydra flags a Python call accepts: the ones that say where configs are; the rest print instead of run, or are the
# choice between train and sweep
CONFIG_FLAGS = {flag: HYDRA_FLAGS[flag] for flag in ("--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd")}
DIRECTORY_KEYS = {"train": "hydra.run.dir", "sweep": "hydra.sweep.dir"}
# imported whole before a call does anything (signals.import_whole): C extensions a Ctrl-C must not cut in half
HEAVY_IMPORTS = ("torch", "torchvision")
# held by the call running: Hydra's global state, sys.argv and the signal handling belong to the whole process
_RUNNING = threading.Lock()


class TrainingFailed(RuntimeError):
    """A run that failed while training (not bad input): the line `augrun train` prints before it exits 1."""


class Interrupted(KeyboardInterrupt):
    """A run or sweep stopped by SIGINT (a notebook's stop button) or SIGTERM, after its checkpoint; the message says
    how to resume it. `target` is its directory or sweep root (None when stopped before one was claimed)."""

    def __init__(self, message: str, signum: int, target: Path | None):
        super().__init__(message)
        self.signum, self.target = signum, target


def train(*overrides: str) -> Run:
    """One run, as `augrun train <overrides>`: blocks until it ends, returns it read back from its directory."""
    return Run.load(_execute("train", overrides).target)


def sweep(*overrides: str) -> Sweep:
    """A multirun, as `augrun train -m <overrides>`: every job, then the comparison at the sweep's root. A failed job
    does not stop the others, and is listed in the comparison and in Sweep.failed."""
    launched = _execute("sweep", overrides)
    if launched.failed:  # the command line exits 1 here; a notebook keeps the sweep's results
        print(f"augrun: warning: {len(launched.failed)} sweep job(s) failed: {', '.join(launched.failed)}",
              file=sys.stderr)
    return Sweep.load(launched.target)


def preview(*overrides: str) -> Image:
    """The grid `augrun preview <overrides>` draws, as a PIL image (Jupyter shows it inline). It writes a file only
    when `out=...` is given."""
    from PIL import Image as PILImage

    from augrun.commands.preview import draw_preview

    plain, flags = split_argv(_strings(overrides))
    writes_out = any(override_key(override) == "out" for override in plain)
    signals.import_whole(*HEAVY_IMPORTS)
    with _one_call_at_a_time("preview"), tempfile.TemporaryDirectory(prefix="augrun-preview-") as folder:
        _, path = draw_preview(plain, flags, out=None if writes_out else Path(folder) / "preview.png")
        picture = PILImage.open(path)
        picture.load()  # reads the pixels and closes the file, before the folder goes
    # RGBA, as drawn: Jupyter stores it as a PNG (an RGB image would be stored as a JPEG as well)
    return picture


def compare_runs(*paths: str | Path | Run | Sweep, out: str | Path | None = None) -> Comparison:
    """The comparison `augrun compare <paths> [--out out]` writes (comparison.md/.csv/.png, in `out`, or in the one
    path given), returned as a Comparison. Paths are sweep roots or run directories, or Runs and Sweeps."""
    from augrun.commands.compare import run_compare

    argv = [str(getattr(path, "dir", path)) for path in paths] + ([f"--out={out}"] if out is not None else [])
    return Comparison.of(run_compare(argv, console=None))


# --- one train or sweep, as the command line runs it ---------------------------------------------------------------

def _execute(function: str, overrides: tuple[str, ...]) -> TrainOutcome:
    from augrun.commands.train import JobFailed, before_hydra_runs, execute

    argv = (["--multirun"] if function == "sweep" else []) + _strings(overrides)
    flags = CONFIG_FLAGS | ({"--multirun": None} if function == "sweep" else {})
    with _one_call_at_a_time(function), signals.handled_during_call(before_hydra_runs):
        try:
            signals.import_whole(*HEAVY_IMPORTS)  # a stop button pressed meanwhile must not leave torch half-imported
            return execute(parse_command_line(argv, flags_allowed=flags))
        except JobFailed as failure:
            error = failure.user_error or TrainingFailed(failure.message)
        except signals.Stopped as stop:
            error = Interrupted(_stop_message(stop, function, overrides), stop.signum, stop.target)
        except SystemExit as exit:  # Hydra's own, after an error it printed (a launcher plugin's, say)
            error = TrainingFailed(f"Hydra stopped with exit status {exit.code}; its message is above")
    # raised here, once the signal handlers are the caller's again, and without the frames (and DataLoader workers)
    # of the exception that ended the run
    raise error


@contextlib.contextmanager
def _one_call_at_a_time(function: str) -> Iterator[None]:
    """Refuse a call while another runs (from another thread): the two would compose into one Hydra."""
    if not _RUNNING.acquire(blocking=False):
        raise UserError(f"augrun.{function}", "another augrun call is running in this process; valid: one call at a "
                        "time (wait for it to return, or use another process)")
    try:
        yield
    finally:
        _RUNNING.release()


def _strings(overrides: tuple[str, ...]) -> list[str]:
    for override in overrides:
        if not isinstance(override, str):
            raise UserError(repr(override), "not an override; valid: strings as on the command line, e.g. "
                            "'trainer.epochs=2'")
    return list(overrides)


def _stop_message(stop: signals.Stopped, function: str, overrides: tuple[str, ...]) -> str:
    """What stopped, and the call that resumes it: the same overrides, its directory, resume=true."""
    target = stop.target
    if target is None or not _resumable(target):
        return stop.note or signals.before_training_note(stop.signum)
    key = DIRECTORY_KEYS[function]
    kept = [o for o in overrides if override_key(o) not in (key, "resume")]
    call = ", ".join(repr(o) for o in [*kept, f"{key}={os.path.abspath(target)}", "resume=true"])
    what = "the run" if function == "train" else "the sweep"
    return f"stopped by signal {stop.signum}; {what}'s checkpoint is kept. Resume with: augrun.{function}({call})"


def _resumable(target: Path) -> bool:
    """A checkpoint to continue from: the run's own, or any job's of a sweep."""
    return (target / rundir.CHECKPOINT).is_file() or any(target.glob(f"**/{rundir.CHECKPOINT}"))
