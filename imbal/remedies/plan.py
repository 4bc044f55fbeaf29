"""Resolve the config's remedy list, once, before training, into a Plan.

Config form: `remedy:` is a list; each item is a name (`- balanced_softmax`) or a mapping with
`name` and that remedy's parameters (`- {name: focal, gamma: 1.0}`). Order does not matter.

Composition rule. The loss is one cross-entropy family (losses.py) with slots; every remedy
sets one or two of them, and two remedies that set the same slot are refused, naming both:
  logits     balanced_softmax, logit_adjust (loss or posthoc), ldam
             (each is its own answer to the skewed prior: stacking two double-corrects)
  weights    class_weights, batch_inverse, focal with alpha, ldam with drw_epoch
             (two weightings have no single defined product)
  targets    label_smoothing
  modulator  focal
  sampling   oversample, copy, undersample (one resampling of the data per run)
  loss       a (plugin) remedy that supplies its own loss module (ctx.loss); it claims every
             slot of the composed loss too (base.OWN_LOSS), so it combines with sampling only
Everything across slots combines: focal on a balanced-softmax offset, LDAM with focal or
label smoothing, label smoothing + batch_inverse (S1), copy + class_weights (S2 loss+aug),
any loss remedy with any sampling remedy.

Order of application: copy / undersample first (they change the stored training tensors),
then everything else, so loss remedies see the counts of the set actually trained on.
oversample does not change the stored counts: a loss remedy combined with it uses the stored
counts, not the resampled (e.g. uniform) class frequencies.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from imbal.errors import UserError
from imbal.remedies.base import REMEDIES, SLOTS, PlanContext, Remedy
from imbal.remedies.losses import ComposedLoss
from imbal.remedies.samplers import ClassSampler, EpochSampler
from imbal.remedies.transforms import class_counts


@dataclass
class Plan:
    loss: torch.nn.Module  # ComposedLoss (targets N int64 or N×C soft), or a remedy's own
    sampler: ClassSampler | EpochSampler | None  # None: the trainer's plain random permutation
    images: torch.Tensor  # training images after copy / undersample
    targets: torch.Tensor
    class_counts: list[int]  # per-class counts of `targets`
    epoch_hooks: list[Callable[[int], None]]  # hook(epoch) at the start of each 0-based epoch
    eval_logit_offset: torch.Tensor | None  # added to logits at evaluation only
    head: str  # "linear" or "normed"
    describe: list[str]  # one line per remedy


def parse_remedies(remedies: list[Any] | None) -> list[Remedy]:
    """Config items -> validated Remedy objects (UserError on any mistake)."""
    if remedies is None:
        return []
    if isinstance(remedies, (str, dict)):
        remedies = [remedies]
    if not isinstance(remedies, list):
        raise UserError(f"remedy must be a list of names or mappings, got {remedies!r}")
    out = []
    for item in remedies:
        if isinstance(item, str):
            name, params = item, {}
        elif isinstance(item, dict):
            params = dict(item)
            name = params.pop("name", None)
            if not isinstance(name, str):
                raise UserError(
                    f"remedy entry {item!r} needs a 'name', e.g. {{name: focal, gamma: 2.0}}"
                )
        else:
            raise UserError(f"remedy entry {item!r} must be a name or a mapping with 'name'")
        out.append(REMEDIES.build(name, **params))
    return out


def check_composition(remedies: list[Remedy]) -> None:
    """Refuse two remedies that set the same slot (see the module docstring)."""
    owner: dict[str, Remedy] = {}
    for r in remedies:
        for slot in sorted(r.slots()):
            if slot in owner:
                first = owner[slot]
                why = SLOTS["loss"] if "loss" in first.slots() | r.slots() else SLOTS[slot]
                if first.name == r.name:
                    raise UserError(f"remedy '{r.name}' given twice: {why}")
                raise UserError(
                    f"remedies '{first.name}' and '{r.name}' cannot be combined: {why}"
                )
            owner[slot] = r


def check_soft_targets(remedies: list[Remedy], transforms: list[str]) -> None:
    """Refuse a remedy whose maths needs hard labels when a batch transform makes soft ones."""
    if not transforms:
        return
    for r in remedies:
        if not r.soft_targets_ok:
            raise UserError(f"remedy '{r.name}' needs one class per image, but batch transform "
                            f"'{transforms[0]}' gives soft targets; drop one of them")


def _check_inputs(
    images: torch.Tensor, targets: torch.Tensor, num_classes: int, minority: list[int], epochs: int
) -> None:
    if images.shape[0] != targets.shape[0]:
        raise ValueError(f"{images.shape[0]} images but {targets.shape[0]} targets")
    if targets.dtype != torch.long or targets.dim() != 1 or targets.numel() == 0:
        raise ValueError("targets must be a non-empty 1-D int64 tensor")
    lo, hi = int(targets.min()), int(targets.max())
    if lo < 0 or hi >= num_classes:
        raise UserError(f"training labels span {lo}..{hi} but num_classes is {num_classes}")
    bad = [c for c in minority if not 0 <= c < num_classes]
    if bad:
        raise UserError(f"minority classes {bad} out of range for {num_classes} classes")
    if epochs < 1:
        raise UserError(f"epochs must be >= 1, got {epochs}")


NO_EFFECT = "  (no effect: every class has the same weight on this training set)"


def _mark_no_ops(items: list[Remedy], ctx: PlanContext, lines: dict[int, str]) -> None:
    """A weighting that came out uniform (class weights computed after copies balanced the
    set) changes nothing: say so in its line, which the run prints as a warning."""
    w = ctx.loss_kwargs.get("class_weight")
    if isinstance(w, torch.Tensor) and w.numel() > 1 and bool((w == w[0]).all()):
        for r in items:
            if "weights" in r.slots():
                lines[id(r)] += NO_EFFECT


def build_plan(
    remedies: list[Any] | None,
    *,
    images: torch.Tensor,
    targets: torch.Tensor,
    num_classes: int,
    minority_classes: list[int],
    epochs: int,
    generator: torch.Generator,
) -> Plan:
    """The Plan for a remedy list on one training set (tensors on the training device)."""
    items = parse_remedies(remedies)
    check_composition(items)
    _check_inputs(images, targets, num_classes, list(minority_classes), epochs)
    ctx = PlanContext(
        images=images,
        targets=targets,
        num_classes=num_classes,
        minority_classes=list(minority_classes),
        epochs=epochs,
        generator=generator,
        counts=class_counts(targets, num_classes),
    )
    ordered = [r for r in items if r.dataset_stage] + [r for r in items if not r.dataset_stage]
    lines = {id(r): r.apply(ctx) for r in ordered}
    _mark_no_ops(items, ctx, lines)
    if ctx.loss is not None and ctx.loss_kwargs:  # a remedy broke the OWN_LOSS contract
        raise ValueError("a remedy set its own loss and others set composed-loss slots")
    loss = ctx.loss if ctx.loss is not None else ComposedLoss(num_classes, **ctx.loss_kwargs)
    loss = loss.to(targets.device)
    hooks = [functools.partial(fn, loss) for fn in ctx.loss_hooks]
    return Plan(
        loss=loss,
        sampler=ctx.sampler,
        images=ctx.images,
        targets=ctx.targets,
        class_counts=list(ctx.counts),
        epoch_hooks=hooks,
        eval_logit_offset=ctx.eval_logit_offset,
        head=ctx.head,
        describe=[lines[id(r)] for r in items],
    )
