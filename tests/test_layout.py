"""The shape of the code, as the shared design states it: no import circle, no module below the commands imports a
command, every module opens with a docstring that says its one job, and no module outgrows one job."""
from __future__ import annotations

import ast
from pathlib import Path

import augrun

PACKAGE = Path(augrun.__file__).parent
# the command line's commands, and the Python API: augrun.api, and the package itself, which hands out api's functions
COMMANDS = {"augrun.cli", "augrun.commands.preview", "augrun.commands.compare", "augrun.commands.ops", "augrun.__main__",
            "augrun.api", "augrun"}
MAX_LINES = 350
LONGER_ALLOWED = {"augrun.augment.gpu"}  # the op library: one batched version per torchvision op


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py")) if "conf" not in p.relative_to(PACKAGE).parts}


def imports_of(path: Path) -> set[str]:
    """augrun modules imported anywhere in the file, at module level or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from augrun import trainer` imports the module augrun.run.trainer
            names = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
        else:
            continue
        found |= {name for name in names if name in MODULES}
    return found - {"augrun"}


GRAPH = {name: imports_of(path) for name, path in MODULES.items()}


def test_no_module_below_the_commands_imports_a_command():
    offenders = {name: sorted(GRAPH[name] & COMMANDS) for name in GRAPH
                 if name not in COMMANDS and GRAPH[name] & COMMANDS}
    assert offenders == {}


def test_the_import_graph_has_no_circle():
    def cycle_from(start: str, node: str, path: list[str]) -> list[str] | None:
        for following in sorted(GRAPH[node]):
            if following == start:
                return path + [following]
            if following not in path and following > start:  # each circle is found from its smallest member only
                found = cycle_from(start, following, path + [following])
                if found:
                    return found
        return None

    circles = [c for name in sorted(GRAPH) if (c := cycle_from(name, name, [name]))]
    assert circles == []


def test_every_module_says_its_one_job_first():
    missing = [name for name, path in MODULES.items()
               if name != "augrun.augment" and not (ast.get_docstring(ast.parse(path.read_text())) or "").strip()]
    assert missing == []


def test_no_module_outgrows_one_job():
    long = {name: n for name, path in MODULES.items()
            if (n := len(path.read_text().splitlines())) > MAX_LINES and name not in LONGER_ALLOWED}
    assert long == {}
