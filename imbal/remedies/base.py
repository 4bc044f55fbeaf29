"""The remedy registry, parameter validation and the mutable context a plan is built in.

A remedy is a class registered under its config name. Constructing it validates its
parameters (pydantic, extra="forbid") and turns every mistake into a one-line UserError.
`slots()` names the parts of the plan it sets (the composition rule in plan.py refuses two
remedies that set the same slot); `apply(ctx)` writes its part into the PlanContext and
returns its line for the log.

The contract for a plugin remedy (registered with `@remedy("name")`, from `imbal`):

    @remedy("my_remedy")
    class MyRemedy(Remedy):
        class Params(imbal.Params):        # its config keys; unknown ones are refused
            strength: float = 1.0
        soft_targets_ok = False            # True if its maths takes N×C probability targets
        def slots(self) -> set[str]: ...   # from SLOTS below
        def apply(self, ctx: PlanContext) -> str: ...   # write ctx, return one log line

`apply` reads ctx.counts / num_classes / minority_classes / epochs / generator (the run's one
torch.Generator) and writes one of: ctx.loss_kwargs (a slot of the composed cross-entropy,
losses.py), ctx.loss (a whole loss of its own, below), ctx.loss_hooks (fn(loss, epoch), called
at the start of each epoch), ctx.sampler, ctx.images/targets/counts (with dataset_stage = True),
ctx.eval_logit_offset, ctx.head.

A remedy that supplies its own loss sets `ctx.loss` to an nn.Module called as
`loss(logits, targets) -> scalar` with float32 logits N×C and int64 class ids N (N×C
probabilities if soft_targets_ok and a batch transform makes them), and returns OWN_LOSS from
slots(): it replaces the composed cross-entropy, so it combines with the sampling remedies only.
imbal moves it to the training device; its own parameters, if any, are not trained (the
optimizer holds the model's), and its loss_hooks receive it as `loss`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar, Literal

import torch
from pydantic import BaseModel, BeforeValidator, ConfigDict, StrictInt, ValidationError

from imbal.errors import UserError
from imbal.registry import Registry, did_you_mean

REMEDIES = Registry("remedy")

# Slot -> what two remedies in it would both do (used in the refusal message).
SLOTS = {
    "logits": "both adjust the logits (at most one of balanced_softmax, logit_adjust, ldam, cdt)",
    "weights": "both weight the loss (at most one of class_weights, batch_inverse, "
    "focal with alpha, ldam with drw_epoch)",
    "targets": "both change the target distribution (at most one of label_smoothing, "
    "label_aware_smoothing)",
    "modulator": "both modulate the per-sample loss (at most one focal)",
    "sampling": "both resample the training set (at most one of oversample, copy, undersample)",
    "loss": "one supplies a whole loss of its own, which replaces the composed cross-entropy "
    "(it combines with sampling remedies only)",
}
# The slots of a remedy that supplies its own loss (ctx.loss): every slot of the composed loss.
OWN_LOSS = frozenset({"loss", "logits", "weights", "targets", "modulator"})


def _number_only(v: Any) -> Any:
    # pydantic's lax float takes True and "2.5"; a YAML slip like that should be refused.
    if isinstance(v, (bool, str)):
        raise ValueError("not a number")
    return v


Real = Annotated[float, BeforeValidator(_number_only)]  # a float param: int or float in YAML
Int = StrictInt  # an int param: bools and floats refused

# Which classes a remedy acts on: null/"all", "minority" (the run's minority classes), or ids.
ClassSet = Literal["all", "minority"] | list[StrictInt] | None
CLASS_SET_TEXT = "'all', 'minority' or a list of class ids"


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _format_error(
    remedy: str, model: type[BaseModel], err: dict[str, Any], params: dict[str, Any],
    kind: str = "remedy",
) -> str:
    who = f"{kind} '{remedy}'"
    loc = err.get("loc", ())
    fields = list(model.model_fields)
    if err["type"] == "extra_forbidden":
        key = str(loc[0])
        hint = did_you_mean(key, fields) or f"; valid: {', '.join(fields) or 'none'}"
        return f"{who}: unknown parameter '{key}'{hint}"
    if not loc:  # a model-level check
        return f"{who}: {err['msg'].removeprefix('Value error, ')}"
    name = str(loc[0])
    info = model.model_fields.get(name)
    got = params.get(name)
    if info is not None and info.description:
        # Say what the whole field accepts: pydantic's own message would name one union branch
        # or one list item.
        return f"{who}: parameter '{name}' must be {info.description} (got {got!r})"
    return f"{who}: parameter '{name}': {err['msg']} (got {got!r})"


def parse_params(remedy: str, model: type[BaseModel], params: dict[str, Any],
                 kind: str = "remedy") -> BaseModel:
    """Validated params; any mistake -> one-line UserError "<kind> '<name>': ..."."""
    try:
        return model.model_validate(params)
    except ValidationError as e:
        raise UserError(_format_error(remedy, model, e.errors()[0], params, kind)) from None


@dataclass
class PlanContext:
    """What remedies read (data, counts, run facts) and write (loss slots, sampler, hooks)."""

    images: torch.Tensor
    targets: torch.Tensor
    num_classes: int
    minority_classes: list[int]
    epochs: int
    generator: torch.Generator
    counts: list[int] = field(default_factory=list)
    loss_kwargs: dict[str, Any] = field(default_factory=dict)
    loss: Any = None  # an nn.Module replacing the composed loss (a remedy with OWN_LOSS slots)
    # fn(loss, epoch): bound to the built loss and handed to the trainer as hook(epoch).
    loss_hooks: list[Callable[[Any, int], None]] = field(default_factory=list)
    sampler: Any = None
    eval_logit_offset: torch.Tensor | None = None
    head: str = "linear"

    @property
    def device(self) -> torch.device:
        return self.targets.device

    def counts_tensor(self) -> torch.Tensor:
        return torch.tensor(self.counts, dtype=torch.long, device=self.device)

    def resolve_classes(self, remedy: str, value: Any) -> list[int]:
        if value is None or value == "all":
            return list(range(self.num_classes))
        if value == "minority":
            return sorted(self.minority_classes)
        bad = [c for c in value if not 0 <= c < self.num_classes]
        if bad:
            raise UserError(
                f"remedy '{remedy}': classes {bad} out of range for {self.num_classes} classes"
            )
        if len(set(value)) != len(value):
            raise UserError(f"remedy '{remedy}': classes {value} contain a duplicate")
        return sorted(value)

    def class_mask(self, classes: list[int]) -> torch.Tensor:
        mask = torch.zeros(self.num_classes, dtype=torch.bool, device=self.device)
        mask[classes] = True
        return mask


class Remedy:
    """Base class; subclasses set `name` (by @remedy), `Params`, and maybe `dataset_stage`."""

    name: ClassVar[str] = ""
    Params: ClassVar[type[BaseModel]] = Params
    # Dataset-stage remedies change images/targets and run before all others, so every loss
    # remedy sees the counts of the data set that is actually trained on.
    dataset_stage: ClassVar[bool] = False
    # Whether the remedy's maths is defined for soft targets (N×C probabilities from a batch
    # transform such as mixup); plan.check_soft_targets refuses the others before any work.
    soft_targets_ok: ClassVar[bool] = True

    def __init__(self, **params: Any):
        self.p: Any = parse_params(self.name, self.Params, params)

    def slots(self) -> set[str]:
        raise NotImplementedError

    def apply(self, ctx: PlanContext) -> str:
        raise NotImplementedError


def remedy(name: str) -> Callable[[type[Remedy]], type[Remedy]]:
    """Class decorator: register a Remedy subclass under its config name."""

    def deco(cls: type[Remedy]) -> type[Remedy]:
        cls.name = name
        REMEDIES.register(name)(cls)
        return cls

    return deco
