"""imbal: an experiment runner for class-imbalance studies in image classification.

The public face, for notebooks and plugins:

    import imbal
    run = imbal.train("configs/quickstart.yaml", overrides=["train.epochs=3"])
    run.results["test"]["balanced_acc"]; imbal.load_run(run.dir).metrics

    from imbal import MODELS            # a plugin registers with the built-ins' decorators
    @MODELS.register("my_net")
    def my_net(*, in_channels, image_size, width=32): ...

`import imbal` stays light (the command line imports it): every name below is imported from
its module on first access (a module-level __getattr__). A registry is handed out only after
the module that registers its built-ins has run, so a plugin can never take a built-in's name
first. The builder contract of each kind is in its module's docstring and in the README
("Extending imbal").
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# Registry name -> (module that creates it and registers the built-ins, attribute).
REGISTRIES: dict[str, tuple[str, str]] = {
    "MODELS": ("imbal.models", "MODELS"),
    "HEADS": ("imbal.models.base", "HEADS"),
    "INITS": ("imbal.models.init", "INITS"),
    "REMEDIES": ("imbal.remedies", "REMEDIES"),
    "SOURCES": ("imbal.data.sources", "SOURCES"),
    "IMBALANCES": ("imbal.data.imbalance", "IMBALANCES"),
    "OPTIMIZERS": ("imbal.training.optim", "OPTIMIZERS"),
    "SCHEDULES": ("imbal.training.optim", "SCHEDULES"),
    "PRETEXT_TASKS": ("imbal.pretext", "TASKS"),
    "TASKS": ("imbal.pretext", "TASKS"),
    "BATCH_TRANSFORMS": ("imbal.remedies", "BATCH_TRANSFORMS"),
    "COPY_TRANSFORMS": ("imbal.remedies.transforms", "COPY_TRANSFORMS"),
    "SEMI": ("imbal.semi", "SEMI"),
}

# Other public names: the Python API and the base classes a plugin builds on.
_OTHERS: dict[str, tuple[str, str]] = {
    "train": ("imbal.api", "train"),
    "load_run": ("imbal.api", "load_run"),
    "Run": ("imbal.api", "Run"),
    "Registry": ("imbal.registry", "Registry"),
    "UserError": ("imbal.errors", "UserError"),
    "Remedy": ("imbal.remedies", "Remedy"),
    "remedy": ("imbal.remedies.base", "remedy"),
    "Params": ("imbal.remedies.base", "Params"),
    "PlanContext": ("imbal.remedies.base", "PlanContext"),
    "OWN_LOSS": ("imbal.remedies.base", "OWN_LOSS"),
    "BatchTransform": ("imbal.remedies.batch", "BatchTransform"),
    "Dataset": ("imbal.data.split", "Dataset"),
    "Split": ("imbal.data.split", "Split"),
    "LazySplit": ("imbal.data.split", "LazySplit"),
    "PretextTask": ("imbal.pretext", "PretextTask"),
    "TaskParams": ("imbal.pretext.base", "TaskParams"),
}

__all__ = sorted([*REGISTRIES, *_OTHERS])


def __getattr__(name: str) -> Any:
    where = REGISTRIES.get(name) or _OTHERS.get(name)
    if where is None:
        raise AttributeError(f"module 'imbal' has no attribute '{name}'")
    module, attr = where
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value  # later accesses skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
