"""Named builders, one registry per kind (models, datasets, optimizers, schedules), as timm registers its models: a
config names an option, never an import path, and the valid names in every error come from the registry itself."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from augrun.errors import ConfigError


class Registry:
    """Builders by name, for the config key `key` (e.g. optim.name)."""

    def __init__(self, key: str, kind: str):
        self.key, self.kind = key, kind
        self._builders: dict[str, Callable[..., Any]] = {}

    def register(self, name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def add(builder: Callable[..., Any]) -> Callable[..., Any]:
            self._builders[name] = builder
            return builder
        return add

    def names(self) -> list[str]:
        return list(self._builders)

    def get(self, name: str) -> Callable[..., Any]:
        if name not in self._builders:
            raise ConfigError(self.key, f"unknown {self.kind} {name!r}; valid: {', '.join(self._builders)}")
        return self._builders[name]
