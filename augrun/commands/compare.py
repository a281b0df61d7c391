"""`augrun compare PATH [PATH ...] [--out DIR]`: rebuild the comparison of a finished sweep, or of any runs."""
from __future__ import annotations

import os
from pathlib import Path

from rich.console import Console

from augrun import rundir
from augrun.compare import CompareError, Report, compare_paths, table_console
from augrun.compare.render import OUT_VALID
from augrun.compare.runs import _one_line
from augrun.errors import fail, printable

COMPARE_USAGE = """usage: augrun compare PATH [PATH ...] [--out DIR]

PATH: a sweep root (outputs/multirun/<date>/<time>) or run directories. Writes comparison.md, .csv and .png to DIR,
by default to PATH itself when there is one PATH."""


def _parse_compare_args(argv: list[str]) -> tuple[list[Path], Path]:
    paths: list[Path] = []
    out: Path | None = None
    args = iter(argv)
    for arg in args:
        if arg == "--out" or arg.startswith("--out="):
            value = arg.partition("=")[2] if "=" in arg else _option_value(next(args, ""))
            if not value:
                raise CompareError("--out", f"no directory given; {OUT_VALID}, e.g. augrun compare PATH --out DIR")
            out = Path(value)
        elif arg.startswith("-"):
            raise CompareError(printable(arg), "unknown option of augrun compare; valid: --out DIR, --help")
        else:
            paths.append(Path(arg))
    if not paths:
        raise CompareError("", "no PATH given: augrun compare outputs/multirun/<date>/<time> [--out DIR]")
    if out is None and len(paths) > 1:
        raise CompareError("", f"{len(paths)} paths given: name the report directory with --out DIR")
    if out is not None:
        _check_out_dir(out)
        # a sweep's own report may be rebuilt in its root; any other run's or sweep's directory is not the report's
        rundir.check_output_place(out, "--out", own=tuple(path for path in paths if rundir.is_sweep_root(path)))
    return paths, out or paths[0]


def _option_value(arg: str) -> str:
    # "--out --bogus" is a forgotten directory, not a directory named --bogus (--out=-dir names one)
    return "" if arg.startswith("-") else arg


def _check_out_dir(out: Path) -> None:
    """Refuse, before any run is read, an --out that cannot become a directory the report is written to."""
    # os.path.exists, not Path.exists: False, not PermissionError, inside a directory that cannot be searched
    existing = next((p for p in (out, *out.parents) if os.path.exists(p)), None)  # "." or "/" at the latest
    if existing is None:
        return  # the working directory is gone: writing will say so
    if existing == out and not out.is_dir():
        raise CompareError("--out", f"{printable(out)} is a file; {OUT_VALID}")
    if not existing.is_dir():
        raise CompareError("--out", f"{printable(out)} is inside {printable(existing)}, which is a file; {OUT_VALID}")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise CompareError("--out", f"{printable(existing)} is not writable; {OUT_VALID}")


def compare_command(argv: list[str]) -> None:
    """``augrun compare``: bad input is one line on stderr and exit status 2, as everywhere in augrun."""
    if any(arg in ("-h", "--help") for arg in argv):
        print(COMPARE_USAGE)
        return
    try:
        run_compare(argv, table_console())
    except CompareError as e:  # one line already, naming its paths with printable
        fail(str(e))


def run_compare(argv: list[str], console: Console | None) -> Report:
    """``augrun compare`` below its help text, shared with augrun.compare_runs(): check the arguments, read the runs,
    write the report (and print it, given a console). Bad input raises CompareError."""
    try:
        paths, out = _parse_compare_args(argv)
        return compare_paths(paths, out, console)
    except OSError as e:  # a run directory vanishing or unreadable while it is read
        raise CompareError("", _one_line(e)) from None


