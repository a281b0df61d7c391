"""A run directory's layout and ownership: its file names, what marks a run or a sweep, and claiming a directory.

Every run and every sweep root is claimed before Hydra writes into it: the directory is created and a marker file is
created exclusively inside it, so two processes can never both own one directory, not even two runs started in the
same second (both resolving `outputs/${now:...}`): the second gets a suffixed name. A run is never placed inside,
over, or around another run or sweep, because `augrun compare` reads a directory tree as one sweep.
"""
from __future__ import annotations

import os
from pathlib import Path

from augrun.errors import RunDirError, printable

CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.jsonl"
METRICS_CSV = "metrics.csv"
SUMMARY = "summary.json"
CURVES = "curves.png"
PREVIEW = "preview.png"
EVAL = "eval.json"             # written by `augrun eval`, beside the run's own files, which it leaves as they are
CONFIG_DIR = ".hydra"          # Hydra's copy of the run's config (hydra.output_subdir)
CONFIG = "config.yaml"         # in CONFIG_DIR: the composed config
OVERRIDES = "overrides.yaml"   # in CONFIG_DIR: the command line's overrides
HYDRA_CONFIG = "hydra.yaml"    # in CONFIG_DIR: Hydra's own config of the job (its sweeper, launcher, ...)
RUN_MARKER = ".augrun-run"     # created exclusively when a run claims its directory
SWEEP_MARKER = ".augrun-sweep"  # the same for a sweep root
HYDRA_SWEEP_FILE = "multirun.yaml"  # Hydra writes it at every sweep root
# the sweeper that expands a grid before it starts; any other (Optuna) picks values as it goes: a search
BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"
RESULT_FILES = (CHECKPOINT, METRICS, SUMMARY)
# how deep to look below a target for runs or sweeps it would swallow: a sweep's jobs may nest (aug=x/seed=y)
SCAN_DEPTH = 4



def holds_results(path: Path) -> bool:
    """True when a run has written results (a checkpoint, metrics or a summary) into `path`."""
    return any((path / name).exists() for name in RESULT_FILES)


def is_run(path: Path) -> bool:
    return (path / RUN_MARKER).exists() or holds_results(path) or (path / CONFIG_DIR / CONFIG).is_file()


def is_sweep_root(path: Path) -> bool:
    return (path / SWEEP_MARKER).exists() or (path / HYDRA_SWEEP_FILE).is_file()


def owner(path: Path) -> Path | None:
    """The run directory or sweep root that `path` is, or lies inside (the nearest), if any: where a command's output
    would land among another run's files."""
    path = Path(os.path.abspath(path))
    for folder in (path, *path.parents):
        if folder.is_dir() and (is_run(folder) or is_sweep_root(folder)):
            return folder
    return None


def check_output_place(path: Path, key: str, *, own: tuple[Path, ...] = ()) -> None:
    """Refuse an output of a command (a report, a picture) inside a run directory or a sweep root, which belong to
    their run or sweep (a sweep's own report goes to its root: `own`)."""
    found = owner(path)
    if found is None or any(os.path.samefile(found, mine) for mine in own if mine.exists()):
        return
    kind = "sweep root" if is_sweep_root(found) else "run directory"
    raise RunDirError(key, f"{printable(path)} is in {printable(found)}, a {kind} that augrun wrote, and would add to "
                    "or replace its files; valid: a path outside every run and sweep")


def job_progress(path: Path) -> str:
    """Where a sweep job stands: "completed", "interrupted" (a checkpoint to resume) or "new" (start it)."""
    if ended_status(path) == "completed" and (path / CHECKPOINT).is_file():
        return "completed"
    return "interrupted" if (path / CHECKPOINT).is_file() else "new"


def ended_status(path: Path) -> str | None:
    """How the run in `path` ended, as its summary.json says ("completed", "failed", "stopped"); None without one."""
    status = _summary(path).get("status")
    return status if isinstance(status, str) else None


def final_test_acc(path: Path) -> float | None:
    """The run's final test accuracy, from its summary.json (written by rank 0, whichever process that was)."""
    final = _summary(path).get("final")
    return final.get("test_acc") if isinstance(final, dict) else None


def _summary(path: Path) -> dict:
    import json
    try:
        summary = json.loads((path / SUMMARY).read_text())
    except (OSError, ValueError):
        return {}
    return summary if isinstance(summary, dict) else {}


def check_writable(path: Path, key: str) -> None:
    """`path` can be created or written: its nearest existing ancestor is a writable directory, and no part of it is
    a dangling symbolic link (which mkdir would report as 'file exists')."""
    existing = path
    while not existing.exists():
        if existing.is_symlink():
            raise RunDirError(key, f"{printable(existing)} is a broken symbolic link; valid: a path whose links resolve, "
                                   "or another directory")
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise RunDirError(key, f"cannot write under {printable(existing)} (not a writable directory); valid: a path in a "
                               "writable directory")


def check_placement(path: Path, key: str, *, kind: str, resume: bool) -> None:
    """A run (kind "run") or sweep root (kind "sweep") at `path` must not sit inside, on, or around another run or sweep.

    Resuming is the one case where the target itself is already a run (or sweep) of the same kind."""
    what = "a run" if kind == "run" else "a sweep"
    remedy = f"valid: resume=true to continue it, or a new {key} (the default is a new timestamped directory)"
    for ancestor in path.absolute().parents:
        if is_sweep_root(ancestor):
            raise RunDirError(key, f"{printable(path)} is inside the sweep {printable(ancestor)}; valid: a {key} outside it "
                                   "(a sweep's jobs are made by `augrun train -m`)")
        if is_run(ancestor):
            raise RunDirError(key, f"{printable(path)} is inside the run {printable(ancestor)}; valid: a {key} outside it")
    if not path.is_dir():
        return
    if kind == "run" and is_sweep_root(path):
        raise RunDirError(key, f"{printable(path)} is a sweep root, not a run directory; valid: a new {key}")
    if kind == "sweep" and is_run(path):
        raise RunDirError(key, f"{printable(path)} holds a single run, not a sweep; valid: a new {key}")
    own = is_run(path) if kind == "run" else is_sweep_root(path)
    if own and not resume:
        raise RunDirError(key, f"{printable(path)} already holds {what}; {remedy}")
    if own:
        return  # resuming: its own contents are expected
    nested = _first_nested(path, lambda p: is_run(p) or is_sweep_root(p))
    if nested is not None:
        raise RunDirError(key, f"{printable(path)} already holds the run or sweep {printable(nested)}; valid: a new {key}")


def _first_nested(root: Path, test) -> Path | None:
    """The first directory below `root` (at most SCAN_DEPTH levels) for which `test` holds."""
    level = [root]
    for _ in range(SCAN_DEPTH):
        level = [child for parent in level for child in _subdirectories(parent)]
        for child in level:
            if test(child):
                return child
    return None


def _subdirectories(path: Path) -> list[Path]:
    try:
        return [p for p in path.iterdir() if p.is_dir() and not p.is_symlink() and p.name != CONFIG_DIR]
    except OSError:
        return []


def clock_names(path: Path) -> list[Path]:
    """The names a directory named by the clock may take: `<name>`, then `<name>-1`, `<name>-2`, ..."""
    return [path] + [path.with_name(f"{path.name}-{n}") for n in range(1, 100)]


def first_unused(path: Path) -> Path:
    """For a name from the clock: the first of its names nothing exists at yet (a run that started in the same second
    may have ended already, leaving its directory; this run is not that run's resume)."""
    return next((candidate for candidate in clock_names(path) if not candidate.exists()), path)


def claim(path: Path, key: str, *, kind: str, resume: bool, may_rename: bool) -> Path:
    """Create `path` and its marker exclusively; return the directory now owned by this process.

    `may_rename`: the name came from the clock (`${now:...}`), so when another run took it first this run takes
    `<name>-1`, `<name>-2`, ... instead. Resuming claims nothing: the directory is the run's own.
    """
    marker = RUN_MARKER if kind == "run" else SWEEP_MARKER
    if resume:
        return path
    candidates = clock_names(path) if may_rename else [path]
    for candidate in candidates:
        try:
            candidate.mkdir(parents=True, exist_ok=True)
            (candidate / marker).open("x").close()
            return candidate
        except FileExistsError:
            if not candidate.is_dir():
                raise RunDirError(key, f"{printable(candidate)} exists and is not a directory; valid: a new {key}") from None
            continue  # another process owns it (or it is a file's name): try the next name, or give up
        except OSError as error:  # read-only or special file systems (/proc, /sys), permissions, quota
            raise RunDirError(key, f"cannot create {printable(candidate)} ({error.strerror or error}); valid: a path "
                                   "in a writable directory") from None
    raise RunDirError(key, f"{printable(path)} is already taken by another run; valid: resume=true to continue it, or a "
                           f"new {key}")
