"""Shared by the plugin and API tests: the worked examples' paths and the `fresh` fixture.

`fresh` forgets every plugin a test imported (registries, modules, records) when the test
ends, so no other test sees them; calling `fresh()` in the middle of a test makes the process
look new, as a later command's would.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import pytest

import imbal
from imbal import plugins, registry

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "configs" / "plugins"
FAST = ["train.epochs=3", "logging.tensorboard=false", "logging.progress=false"]
SHAPES = ["hbar", "vbar", "plus", "square", "disc", "x"]


def sets(items: list[str]) -> list[str]:
    return [a for s in items for a in ("--set", s)]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def record(path: Path) -> dict:
    return {"import": str(path), "module": plugins.module_name_for(path), "file": str(path),
            "sha256": sha256(path)}


@pytest.fixture
def fresh(monkeypatch):
    for name in imbal.REGISTRIES:  # every registry exists, its built-ins registered
        getattr(imbal, name)
    state = registry.snapshot()
    monkeypatch.setattr(plugins, "_loaded", {})
    monkeypatch.setattr(plugins, "_by_spec", {})

    def forget() -> None:
        registry.restore(state)
        for name in [*plugins._loaded, *(m for m in sys.modules if m.startswith("imbal_plugin_"))]:
            sys.modules.pop(name, None)
        plugins._loaded.clear()
        plugins._by_spec.clear()

    yield forget
    forget()
