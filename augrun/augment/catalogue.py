"""The catalogue of augmentation ops behind `augrun ops`: for every name in ops.REGISTRY (nothing else, so the list and
what a config accepts cannot disagree), its arguments with their defaults, the backends that run it, where it goes in an
aug config, and its one-line summary, read from torchvision itself (or Gluon's, for an alias)."""
from __future__ import annotations

import inspect
import re
from dataclasses import dataclass
from enum import Enum
from typing import Any

from augrun.augment.ops import BATCH, REGISTRY, REQUIRED, argument_defaults, op_class
from augrun.errors import UserError


@dataclass(frozen=True)
class CatalogueEntry:
    name: str
    section: str                  # aug.train or aug.batch: where a config names it
    arguments: dict[str, Any]     # name -> default, REQUIRED where there is none
    backends: tuple[str, ...]
    summary: str
    alias_of: str | None          # "ColorJitter(brightness=...)" for a Gluon alias
    notes: str                    # how Gluon's semantics differ, where they do
    aliases: tuple[str, ...]      # the Gluon names that run as this op


def catalogue() -> list[CatalogueEntry]:
    """Every op a config accepts, torchvision's first, then the Gluon aliases, each group in registry order."""
    return [describe(name) for name in sorted(REGISTRY, key=lambda n: REGISTRY[n].alias is not None)]


def describe(name: str) -> CatalogueEntry:
    if name not in REGISTRY:
        raise UserError("ops", f"unknown op {name!r}; valid: {', '.join(sorted(REGISTRY))}")
    op = REGISTRY[name]
    alias = op.alias
    return CatalogueEntry(
        name=name,
        section="aug.batch" if op.kind == BATCH else "aug.train",
        arguments=argument_defaults(name),
        backends=op.backends,
        summary=alias.summary if alias else _first_docstring_line(op_class(name)),
        alias_of=f"{alias.target}({', '.join(f'{arg}=...' for arg in alias.arguments)})" if alias else None,
        notes=alias.differences if alias else op.note,
        aliases=tuple(n for n, other in REGISTRY.items() if other.alias and other.alias.target == name),
    )


def _first_docstring_line(cls: type) -> str:
    # the first paragraph, not line: some summaries wrap (AutoAugment's); their reST links shown as plain titles
    paragraph = (inspect.getdoc(cls) or "").split("\n\n")[0].replace("\n", " ").strip()
    return re.sub(r"`([^`<]*?)\s*<[^>]*>`_", r"\1", paragraph)


def format_default(default: Any) -> str:
    if default is REQUIRED:
        return "required"
    return repr(default.value) if isinstance(default, Enum) else repr(default)  # YAML names an enum by its value


# example values where the default cannot show one: a required argument, or a jitter that is off by default
_EXAMPLE_VALUES = {"size": "32", "degrees": "15", "kernel_size": "3", "brightness": "0.5", "contrast": "0.5",
                   "saturation": "0.5", "hue": "0.1"}


def example_yaml(entry: CatalogueEntry) -> str:
    """A line of an aug YAML's `train:` (or `batch:`) mapping that uses the op with one argument set."""
    arg, value = _example_argument(entry)
    return f"{entry.name}: {{{arg}: {value}}}"


def override_example(entry: CatalogueEntry) -> str:
    """The command-line form that adds the op, with that argument, to the chosen aug config."""
    arg, value = _example_argument(entry)
    return f"+{entry.section}.{entry.name}.{arg}={value}"


def _example_argument(entry: CatalogueEntry) -> tuple[str, str]:
    # every op has an argument: a required one must be shown, else one with a telling value, else the first plain one
    arguments = entry.arguments
    chosen = (next((a for a, d in arguments.items() if d is REQUIRED), None)
              or next((a for a in arguments if a in _EXAMPLE_VALUES), None)
              or next(a for a, d in arguments.items() if d is not None))
    return chosen, _EXAMPLE_VALUES.get(chosen) or _yaml_value(arguments[chosen])


def _yaml_value(default: Any) -> str:
    if isinstance(default, Enum):
        return str(default.value)
    if isinstance(default, tuple):
        return f"[{', '.join(map(str, default))}]"
    return str(default).lower() if isinstance(default, bool) else str(default)
