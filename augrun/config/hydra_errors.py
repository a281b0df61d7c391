"""Hydra's and OmegaConf's errors, which span several lines, said in one line that names the key, override or file
and what would be valid."""
from __future__ import annotations

import dataclasses
import typing

from augrun.config.schema import TrainConfig
from augrun.errors import first_line

PLUGINS = {"hydra/sweeper": "optuna: pip install 'augrun[optuna]'",
           "hydra/launcher": "joblib, submitit_slurm: pip install 'augrun[joblib]' or 'augrun[slurm]'"}
# config keys that take a mapping, and the form to show when given something else
MAPPING_FORMS = {
    "aug.train": "a mapping of op name to its arguments in application order, e.g. "
                 "aug.train='{RandomHorizontalFlip: {p: 0.5}}' (in an aug YAML: `train:` then `  RandomHorizontalFlip: {p: 0.5}`)",
    "aug.batch": "a mapping of batch op name to its arguments, e.g. aug.batch='{MixUp: {alpha: 0.2}}'",
}


def describe_parse_error(error: BaseException) -> str:
    return (f"not a valid override ({' '.join(first_line(error).split())}); valid: key=value, with values "
            "that hold spaces, commas, brackets or non-ASCII characters quoted: key='a value'")


def describe_composition_error(error: BaseException, schema_fields=None, culprit=None) -> str:
    """Hydra's composition errors span several lines; say the same in one, naming the key and what is valid.

    `schema_fields(dotted_section)` lists the valid keys of a section (default: the train schema's); `culprit()` finds
    the override to blame when the error names no key.
    """
    from hydra.errors import MissingConfigException
    if isinstance(error, MissingConfigException):
        if error.options is not None and error.missing_cfg_file:
            group, _, choice = error.missing_cfg_file.rpartition("/")
            extra = f" ({PLUGINS[group]})" if group in PLUGINS else ""
            return f"{group}={choice}: unknown option; valid: {', '.join(sorted(error.options))}{extra}"
        if "primary config" in str(error):
            return (f"--config-name: {first_line(error)}; valid: train (augrun's), or the name of a YAML in "
                    "--config-path or --config-dir")
    cause = error.__cause__ or error.__context__
    while cause is not None and not hasattr(cause, "full_key") and (cause.__cause__ or cause.__context__):
        cause = cause.__cause__ or cause.__context__
    if cause is not None and getattr(cause, "full_key", None):
        return f"{cause.full_key}: {explain_omegaconf(cause, schema_fields or _schema_fields)}"
    text = " ".join(str(error).split())
    override = culprit() if culprit is not None else None
    return f"{override}: {text}" if override else text


def explain_omegaconf(error: BaseException, schema_fields=None) -> str:
    if type(error).__name__ == "MissingMandatoryValue":
        return f"required, and not set; valid: {error.full_key}=<value> on the command line"
    key = error.full_key
    parent, _, name = key.rpartition(".")
    valid = (schema_fields or _schema_fields)(parent)
    if valid and name not in valid:
        return f"unknown key; valid keys here: {', '.join(valid)}"
    form = mapping_form(key)
    if form and any(s in str(error) for s in ("ListConfig", "Cannot assign", "object_type", "Cannot merge")):
        return f"must be {form}"
    valid = _type_in_words(field_type(key))
    if valid and "is not Optional" in str(error):
        valid += ", not null"
    return f"{first_line(error)}; valid: {valid}" if valid else first_line(error)


def field_type(dotted: str):
    """The schema's annotation of a dotted key, or None where the schema is free-form."""
    parent, _, name = dotted.rpartition(".")
    cls = TrainConfig
    for part in filter(None, parent.split(".")):
        cls = typing.get_type_hints(cls).get(part)
        if cls is None or not dataclasses.is_dataclass(cls):
            return None
    return typing.get_type_hints(cls).get(name)


_WORDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def _type_in_words(annotation) -> str | None:
    """'an integer', 'a number or null', ...: what OmegaConf would have accepted, for a type error's valid: part."""
    args = typing.get_args(annotation)
    optional = type(None) in args
    kinds = [a for a in args if a is not type(None)] if args else [annotation]
    if len(kinds) != 1 or kinds[0] not in _WORDS:
        return None
    return _WORDS[kinds[0]] + (" or null" if optional else "")


def mapping_form(dotted: str) -> str | None:
    """How to write the schema section or mapping field at a dotted key, or None if it is neither."""
    if dotted in MAPPING_FORMS:
        return MAPPING_FORMS[dotted]
    fields = _schema_fields(dotted)
    return f"a mapping with the keys {', '.join(fields)}" if fields else None


def _schema_fields(dotted: str) -> list[str]:
    """Field names of the schema section at a dotted key ('' = top level), or [] where the schema is free-form."""
    cls = TrainConfig
    for part in filter(None, dotted.split(".")):
        hints = typing.get_type_hints(cls)
        if part not in hints or not dataclasses.is_dataclass(hints[part]):
            return []
        cls = hints[part]
    return [f.name for f in dataclasses.fields(cls)]
