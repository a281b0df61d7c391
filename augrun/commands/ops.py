"""`augrun ops [NAME]`: which augmentations an aug config may name (the book's exercise 3), or one of them in full."""
from __future__ import annotations

from rich.console import Console
from rich.table import Table

from augrun.augment.catalogue import CatalogueEntry, catalogue, describe, example_yaml, format_default, override_example
from augrun.errors import UserError, fail

OPS_USAGE = """usage: augrun ops [NAME]

Without NAME: a table of every op an aug config accepts (aug.train, aug.batch), its arguments with their defaults, the
backends that run it (aug.backend=cpu/gpu) and torchvision's summary; Gluon (MXNet) names from the book's MXNet code are
listed as aliases. With NAME: that op in full, with a YAML line and the command-line override that add it."""


def ops_command(argv: list[str]) -> None:
    if any(arg in ("-h", "--help") for arg in argv):
        print(OPS_USAGE)
        return
    if len(argv) > 1 or any(arg.startswith("-") for arg in argv):
        fail(f"ops: got {' '.join(argv)!r}; valid: augrun ops [NAME] (one op name, or none for the table)")
    console = _console()
    try:
        if argv:
            print_op(describe(argv[0]), console)
        else:
            print_table(catalogue(), console)
    except UserError as error:  # an unknown name: one line listing the valid ones
        fail(str(error))


def _console() -> Console:
    from augrun.compare.render import table_console  # the same width rule as augrun compare's table
    return table_console()


def _arguments(entry: CatalogueEntry) -> str:
    return ", ".join(f"{arg}={format_default(default)}" for arg, default in entry.arguments.items())


def print_table(entries: list[CatalogueEntry], console: Console) -> None:
    table = Table(title="augmentation ops (augrun ops NAME for one in full)", show_lines=False)
    table.add_column("op", no_wrap=True)
    table.add_column("in", no_wrap=True)
    table.add_column("backends", no_wrap=True)
    table.add_column("arguments (defaults)")
    table.add_column("summary")
    for entry in entries:
        summary = f"alias of {entry.alias_of} (Gluon)" if entry.alias_of else entry.summary
        table.add_row(entry.name, _section_label(entry), ", ".join(entry.backends), _arguments(entry), summary)
    console.print(table)


def _section_label(entry: CatalogueEntry) -> str:
    return "aug.batch (per batch)" if entry.section == "aug.batch" else "aug.train (per image)"


def print_op(entry: CatalogueEntry, console: Console) -> None:
    lines = [
        f"[bold]{entry.name}[/bold]" + (f"  alias of {entry.alias_of} (Gluon's name, from the book's MXNet code)"
                                        if entry.alias_of else ""),
        f"  {entry.summary}",
        f"  where:     {_section_label(entry)}",
        f"  backends:  {', '.join(entry.backends)}",
        f"  arguments: {_arguments(entry)}",
    ]
    if entry.aliases:
        lines.append(f"  Gluon aliases: {', '.join(entry.aliases)} (augrun ops NAME)")
    if entry.notes:
        lines.append(f"  {'vs torchvision' if entry.alias_of else 'vs Gluon'}: {entry.notes}")
    lines += [f"  in YAML ({entry.section.split('.')[1]}:):  {example_yaml(entry)}",
              f"  on the command line:  augrun train {override_example(entry)}"]
    for line in lines:
        console.print(line, highlight=False, markup=line.startswith("[bold]"), soft_wrap=True)
