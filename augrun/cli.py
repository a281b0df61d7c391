"""augrun's command line: `augrun train|eval|preview|compare|ops ...`.

Hydra owns argv: main() takes the subcommand off sys.argv and hands the rest to the command. `augrun train` does its
work in augrun.commands.train, the path it shares with the Python API (augrun.api); here that work's outcome becomes
what a shell expects: one line on stderr and an exit status (2 bad input, 1 a failed run, 130/143 a signal).

Bad input is checked before Hydra runs anything (augrun.commands.precheck): every job of the command is composed and
checked, so a typo exits 2 with one line before a directory is created or a file touched. Modules that import torch
are imported inside functions here and in the config and pre-check modules, so that such a line comes before torch
loads, which takes seconds.
"""
from __future__ import annotations

import sys

from augrun.config.command_line import parse_command_line
from augrun.config.schema import register_schemas
from augrun.errors import UserError, fail

USAGE = """usage: augrun <command> [hydra overrides]

commands:
  train     train one experiment (augrun train aug=flip_only), or sweep with -m (augrun train -m aug=none,flip_only seed=0,1,2)
  eval      score a run's weights on its test split (or another dataset's) into eval.json (augrun eval RUN_DIR)
  preview   write a PNG grid of augmented copies of an image (augrun preview aug=color_jitter [image=cat.jpg])
  compare   rebuild the comparison report of a finished sweep (augrun compare outputs/multirun/<date>/<time>)
  ops       list the augmentation ops an aug config accepts, or one in full (augrun ops ColorJitter)

`augrun train --help` lists the config groups and their options; `augrun train --cfg job` prints the composed config."""

register_schemas()


def train_command(argv: list[str]) -> None:
    """`augrun train`: augrun.commands.train does the work; here its outcome becomes one line and an exit status."""
    from augrun.commands.train import JobFailed, execute
    try:
        launched = execute(parse_command_line(argv))
    except UserError as error:
        fail(str(error))
    except JobFailed as failure:
        fail(failure.message, failure.status)
    if launched.failed:
        fail(f"{len(launched.failed)} sweep job(s) failed: {', '.join(launched.failed)}", 1)


# Each command is imported when it runs, not when the command line starts: `augrun ops` must not load what `train`
# needs (Hydra's plugins, torch).

def eval_command(argv: list[str]) -> None:
    from augrun.commands.eval import eval_command
    eval_command(argv)


def preview_command(argv: list[str]) -> None:
    from augrun.commands.preview import preview_command
    preview_command(argv)


def compare_command(argv: list[str]) -> None:
    from augrun.commands.compare import compare_command
    compare_command(argv)


def ops_command(argv: list[str]) -> None:
    from augrun.commands.ops import ops_command
    ops_command(argv)


def main(argv: list[str] | None = None) -> None:
    from augrun import signals
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "train":
        # Ctrl-C or SIGTERM while the command starts (imports, pre-check, data) abandons it at once, in one line;
        # train_task hands later ones to the training loop (augrun.signals)
        from augrun.commands.train import before_hydra_runs
        signals.SignalFlag.installed().stop_at_once = before_hydra_runs
    elif argv:
        # the other commands have nothing to finish first: a signal stops them at once, in one line (their files are
        # written atomically, so none is left half-written)
        signals.SignalFlag.installed().stop_at_once = lambda frame: True
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return
    command, rest = argv[0], argv[1:]
    commands = {"train": train_command, "preview": preview_command, "compare": compare_command, "ops": ops_command,
                "eval": eval_command}
    if command not in commands:
        fail(f"unknown command {command!r}; valid: {', '.join(commands)} (augrun --help)")
    try:
        commands[command](rest)
        return
    except signals.Stopped as stop:
        note, status = stop.note, stop.status
        if command != "train":
            note = f"{command} stopped by signal {stop.signum}"
    # exits here, not in the except block, so that the stop's frames (and DataLoader workers they hold) are let go
    if note:
        print(f"augrun: {note}", file=sys.stderr)
    sys.exit(status)


if __name__ == "__main__":
    main()
