"""The shape of the code, as the shared design states it: subpackages by concern in layers, no import that runs back
up a layer (the package root included), no circle, no module below the commands importing a command, every module and
subpackage opening with a docstring that says its one job, and no module outgrowing one job."""
from __future__ import annotations

import ast
from pathlib import Path

import augrun

PACKAGE = Path(augrun.__file__).parent
# top to bottom: a module imports modules of its own layer or of layers below it, never above
LAYERS = [
    ("the faces", {"augrun", "augrun.__main__", "augrun.cli", "augrun.api"}),
    ("the commands", {"augrun.commands"}),
    ("one run", {"augrun.run"}),
    ("a sweep's comparison", {"augrun.compare"}),
    ("what a run shows", {"augrun.report"}),
    ("models and optimizers", {"augrun.models"}),
    ("the data", {"augrun.data"}),
    ("augmentation", {"augrun.augment"}),
    ("the config", {"augrun.config"}),
    ("the base", {"augrun.errors", "augrun.rundir", "augrun.files", "augrun.seeding", "augrun.environment",
                  "augrun.registry", "augrun.signals"}),
]
# the command line's commands and the Python API: only the faces import them
COMMANDS = {"augrun.commands"}
MAX_LINES = 350
LONGER_ALLOWED = {"augrun.augment.gpu"}  # the op library: one batched version per torchvision op


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py")) if "conf" not in p.relative_to(PACKAGE).parts}
SUBPACKAGES = {name for name, path in MODULES.items() if path.name == "__init__.py" and name != "augrun"}


def imports_of(path: Path) -> set[str]:
    """augrun modules imported anywhere in the file, at module level or inside functions, the package root included:
    `from augrun import rundir` imports augrun.rundir; `import augrun` or `from augrun import __version__` the root."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            submodules = [f"{node.module}.{alias.name}" for alias in node.names]
            names = [n for n in submodules if n in MODULES]
            if len(names) < len(submodules):  # a name defined in the module itself
                names.append(node.module)
        else:
            continue
        found |= {name for name in names if name in MODULES}
    return found


GRAPH = {name: imports_of(path) - {name} for name, path in MODULES.items()}


def layer_of(module: str) -> int:
    for index, (_, members) in enumerate(LAYERS):
        if any(module == member or module.startswith(member + ".") for member in members):
            return index
    raise AssertionError(f"{module} belongs to no layer: add it to LAYERS")


def test_every_module_belongs_to_a_layer():
    for name in MODULES:
        layer_of(name)


def test_no_import_runs_up_a_layer():
    upward = sorted(f"{name} -> {imported} ({LAYERS[layer_of(imported)][0]} above {LAYERS[layer_of(name)][0]})"
                    for name, imported_set in GRAPH.items() for imported in imported_set
                    if layer_of(imported) < layer_of(name))
    assert upward == []


def test_the_layout_test_sees_the_edges_it_must():
    """The graph is read from the code as written: the faces' lazy imports and the package root are edges too."""
    assert "augrun.api" in GRAPH["augrun"]
    assert "augrun.commands.train" in GRAPH["augrun.cli"] and "augrun.commands.preview" in GRAPH["augrun.cli"]
    assert "augrun.cli" in GRAPH["augrun.__main__"]


def test_no_module_below_the_faces_imports_a_command():
    offenders = {name: sorted(i for i in GRAPH[name] if layer_of(i) == 1) for name in GRAPH
                 if layer_of(name) > 1 and any(layer_of(i) == 1 for i in GRAPH[name])}
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


def test_every_module_and_subpackage_says_its_one_job_first():
    missing = [name for name, path in MODULES.items() if not (ast.get_docstring(ast.parse(path.read_text())) or "").strip()]
    assert missing == []
    assert SUBPACKAGES >= {"augrun.commands", "augrun.config", "augrun.run", "augrun.data", "augrun.augment",
                           "augrun.models", "augrun.report", "augrun.compare"}


def test_no_module_outgrows_one_job():
    long = {name: n for name, path in MODULES.items()
            if (n := len(path.read_text().splitlines())) > MAX_LINES and name not in LONGER_ALLOWED}
    assert long == {}
