"""Name -> builder registries. Components are built from explicit arguments, never the config.

Every component kind has one Registry (MODELS, REMEDIES, SOURCES, ...; `imbal/__init__.py`
lists them). A registry may also hold families: `register_family("timm/", resolve)` makes every
name "timm/<rest>" resolve to `resolve(rest)` (a builder, or a UserError for an unknown rest),
for model zoos too large to register name by name. Built-ins and plugins register the same way, `@MODELS.register("name")`, so a
plugin's component gets the same lookup, did-you-mean and "valid: ..." list as a built-in one.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any

from imbal.errors import UserError


def did_you_mean(name: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(name, choices, n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


class RegistrationError(ValueError):
    """A name registered twice (a plugin reusing a built-in's name, or two plugins clashing)."""


class Registry:
    """A named table of builders. `kind` is used in messages ("unknown backbone 'x'")."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, Callable[..., Any]] = {}
        self._families: dict[str, Callable[[str], Callable[..., Any]]] = {}
        _ALL.append(self)

    def register(self, name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        if not isinstance(name, str) or not name:
            # `@MODELS.register` without a name would silently register nothing usable.
            raise TypeError(f"{self.kind} registry: use @register('name') with a non-empty name")

        def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
            if name in self._items:
                first = getattr(self._items[name], "__module__", None) or "?"
                raise RegistrationError(f"{self.kind} '{name}' is already registered (by {first})")
            self._items[name] = fn
            return fn

        return deco

    def register_family(self, prefix: str, resolve: Callable[[str], Callable[..., Any]]) -> None:
        """Names `prefix + rest` resolve to `resolve(rest)`; prefix ends with "/"."""
        if not prefix.endswith("/") or prefix in self._families:
            raise RegistrationError(f"{self.kind} family {prefix!r}: must end with '/' and be new")
        self._families[prefix] = resolve

    def get(self, name: str) -> Callable[..., Any]:
        if isinstance(name, str) and name not in self._items:
            for prefix, resolve in self._families.items():
                if name.startswith(prefix):
                    return resolve(name[len(prefix):])
        if name not in self._items:
            valid = self.names() + [f"{p}<name>" for p in sorted(self._families)]
            raise UserError(
                f"unknown {self.kind} '{name}'{did_you_mean(name, self.names())}; "
                f"valid: {', '.join(valid)}"
            )
        return self._items[name]

    def build(self, name: str, **kwargs: Any) -> Any:
        return self.get(name)(**kwargs)

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        return name in self._items


_ALL: list[Registry] = []  # every registry created so far (snapshot/restore below)


def snapshot() -> dict[Registry, tuple[dict[str, Any], dict[str, Any]]]:
    """The contents of every registry now: a failed plugin import is rolled back to it."""
    return {reg: (dict(reg._items), dict(reg._families)) for reg in _ALL}


def restore(state: dict[Registry, tuple[dict[str, Any], dict[str, Any]]]) -> None:
    """Put every registry in `state` back as it was (names registered since are dropped)."""
    for reg, (items, families) in state.items():
        reg._items, reg._families = dict(items), dict(families)
