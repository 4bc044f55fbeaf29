"""Semi-supervised objectives: a registry of methods a `semi:` stage trains with.

A stage with `semi: {name: NAME, ...}` trains the classifier on its labelled images and on the
stage's unlabelled stream (`unlabelled: rest | removed`) with the method's objective. Contract
of a registered method (a class, `@SEMI.register("name")`):

- `Params`: a pydantic model (extra keys forbidden) of its options, with defaults; the
  stage's `semi` section without `name` is validated against it before any work.
- `Method(model, *, num_classes, **params)`: an objective (imbal.training.objective) whose
  `.module` is the classifier, `uses_unlabelled = True`, `views` (how many augmented copies of
  each unlabelled image the Trainer prepares: Batch.u holds `views` blocks, view-major),
  `inputs/loss/correct`, `state_dict/load_state_dict` (its step counter, for resume), and
  `describe()` (one line for the log).
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from imbal.config import format_validation_error
from imbal.errors import UserError
from imbal.registry import Registry

SEMI = Registry("semi-supervised method")


def _split(section: dict, where: str) -> tuple[type, dict]:
    if not isinstance(section, dict) or "name" not in section:
        raise UserError(f"{where}: give the method's name, e.g. {{name: mixmatch}}; valid: "
                        f"{', '.join(SEMI.names())}")
    return SEMI.get(section["name"]), {k: v for k, v in section.items() if k != "name"}


def check_semi(section: dict, where: str) -> dict[str, Any]:
    """The method's options, validated and with their defaults (refused in one line)."""
    cls, params = _split(section, where)
    try:
        return cls.Params.model_validate(params).model_dump()
    except ValidationError as err:
        raise UserError(format_validation_error(err, cls.Params, prefix=where + ".")) from None


def build_semi(section: dict, model, *, num_classes: int, where: str = "semi"):
    cls, _ = _split(section, where)
    return cls(model, num_classes=num_classes, **check_semi(section, where))


from imbal.semi import mixmatch as _mixmatch  # noqa: E402,F401  (registers the built-ins)
