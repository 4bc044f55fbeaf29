"""Loss remedies: each sets one or two slots of the composed loss (see losses.py)."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from imbal.errors import UserError
from imbal.remedies.base import (
    CLASS_SET_TEXT,
    ClassSet,
    Int,
    Params,
    PlanContext,
    Real,
    Remedy,
    remedy,
)
from imbal.remedies.losses import linear_value, schedule_value
from imbal.remedies.weights import (
    NORMALIZATIONS,
    effective_number_weights,
    inverse_frequency_weights,
    ldam_margins,
    log_counts,
    log_prior,
)

Reduction = Literal["weighted_mean", "mean"]
REDUCTION_TEXT = "'weighted_mean' (sum w l / sum w, as F.cross_entropy(weight=)) or 'mean'"


def _fmt(values: torch.Tensor | list[float]) -> str:
    vals = values.tolist() if isinstance(values, torch.Tensor) else values
    return "[" + ", ".join(f"{v:.4g}" for v in vals) + "]"


class ClassWeightsParams(Params):
    beta: Real | None = Field(
        None, ge=0, lt=1, description="null (inverse frequency) or a number in [0, 1)"
    )
    normalize: Literal["none", "sum_to_C", "sample_mean"] | None = Field(
        None, description="null, " + ", ".join(f"'{n}'" for n in NORMALIZATIONS)
    )
    reduction: Reduction = Field("weighted_mean", description=REDUCTION_TEXT)


@remedy("class_weights")
class ClassWeights(Remedy):
    """w_j = N / N_j (S2), or with `beta` the effective-number weights (1-beta)/(1-beta^N_j)
    (Cui et al.). normalize null = each source's own: none for N / N_j, sum_to_C for beta."""

    Params = ClassWeightsParams

    def slots(self) -> set[str]:
        return {"weights"}

    def apply(self, ctx: PlanContext) -> str:
        p = self.p
        counts = ctx.counts_tensor()
        if p.beta is None:
            norm = p.normalize or "none"
            w = inverse_frequency_weights(counts, norm)
            kind = "inverse frequency N/N_j"
        else:
            norm = p.normalize or "sum_to_C"
            w = effective_number_weights(counts, p.beta, norm)
            kind = f"effective number beta={p.beta}"
        ctx.loss_kwargs.update(class_weight=w, reduction=p.reduction)
        return f"class_weights: {kind}, normalize={norm}, reduction={p.reduction}, w={_fmt(w)}"


class BatchInverseParams(Params):
    reduction: Reduction = Field("weighted_mean", description=REDUCTION_TEXT)


@remedy("batch_inverse")
class BatchInverse(Remedy):
    """S1: per batch, w_i = C (1/N_i) / sum_j (1/N_j) over the classes present."""

    Params = BatchInverseParams
    soft_targets_ok = False  # counts the (one) class of each image in the batch

    def slots(self) -> set[str]:
        return {"weights"}

    def apply(self, ctx: PlanContext) -> str:
        ctx.loss_kwargs.update(batch_inverse=True, reduction=self.p.reduction)
        return f"batch_inverse: per-batch C (1/N_i) / sum_j 1/N_j, reduction={self.p.reduction}"


class LabelSmoothingParams(Params):
    eps: Real = Field(0.1, ge=0, lt=1, description="a number in [0, 1)")
    classes: ClassSet = Field(None, description=f"null, {CLASS_SET_TEXT}")


@remedy("label_smoothing")
class LabelSmoothing(Remedy):
    """S1: samples of `classes` get q_target = 1 - eps, q_other = eps / K (K = all classes)."""

    Params = LabelSmoothingParams

    def slots(self) -> set[str]:
        return {"targets"}

    def apply(self, ctx: PlanContext) -> str:
        classes = ctx.resolve_classes(self.name, self.p.classes)
        ctx.loss_kwargs.update(smooth_eps=self.p.eps, smooth_classes=ctx.class_mask(classes))
        return f"label_smoothing: eps={self.p.eps} (target 1-eps, others eps/K) on {classes}"


class Linear(BaseModel):
    model_config = ConfigDict(extra="forbid")
    start: Real = Field(ge=0)
    end: Real = Field(ge=0)


class FocalParams(Params):
    gamma: Real = Field(2.0, ge=0, description="a number >= 0")
    alpha: list[Real] | None = Field(
        None, description="null or a list of per-class weights >= 0 (one per class)"
    )
    gamma_schedule: list[Real] | Linear | None = Field(
        None, description="null, a non-empty list of numbers >= 0, or {start: a, end: b}"
    )

    @model_validator(mode="after")
    def _check(self) -> FocalParams:
        if self.gamma_schedule is not None and "gamma" in self.model_fields_set:
            raise ValueError("give gamma or gamma_schedule, not both")
        sched = self.gamma_schedule
        if isinstance(sched, list) and (not sched or min(sched) < 0):
            raise ValueError("gamma_schedule must be a non-empty list of numbers >= 0")
        if self.alpha is not None and (not self.alpha or min(self.alpha) < 0):
            raise ValueError("alpha must be a non-empty list of per-class weights >= 0")
        return self


@remedy("focal")
class Focal(Remedy):
    """FL = (1 - p_t)^gamma CE. gamma_schedule: a list spread over the epochs (see
    losses.schedule_value) or {start, end} linear over the epochs. alpha: per-class weights,
    applied as class weights (weighted mean), so focal with alpha takes the weights slot."""

    Params = FocalParams

    def slots(self) -> set[str]:
        return {"modulator"} | ({"weights"} if self.p.alpha is not None else set())

    def gamma_at(self, epoch: int, epochs: int) -> float:
        sched = self.p.gamma_schedule
        if sched is None:
            return self.p.gamma
        if isinstance(sched, list):
            return schedule_value(sched, epoch, epochs)
        return linear_value(sched.start, sched.end, epoch, epochs)

    def apply(self, ctx: PlanContext) -> str:
        p = self.p
        line = f"focal: gamma={p.gamma}"
        if p.alpha is not None:
            if len(p.alpha) != ctx.num_classes:
                raise UserError(
                    f"remedy 'focal': alpha has {len(p.alpha)} values, "
                    f"expected one per class ({ctx.num_classes})"
                )
            alpha = torch.tensor(p.alpha, dtype=torch.float32, device=ctx.device)
            ctx.loss_kwargs.update(class_weight=alpha, reduction="weighted_mean")
            line += f", alpha={_fmt(alpha)} (as class weights, weighted mean)"
        ctx.loss_kwargs["gamma"] = self.gamma_at(0, ctx.epochs)
        if p.gamma_schedule is not None:
            epochs = ctx.epochs
            values = [self.gamma_at(e, epochs) for e in range(epochs)]

            def set_gamma(loss, epoch: int) -> None:
                loss.gamma = self.gamma_at(epoch, epochs)

            ctx.loss_hooks.append(set_gamma)
            line = line.replace(f"gamma={p.gamma}", f"gamma per epoch {_fmt(values)}")
        return line


@remedy("balanced_softmax")
class BalancedSoftmax(Remedy):
    """S5: CE on logits + log N_j during training; plain softmax at evaluation."""

    def slots(self) -> set[str]:
        return {"logits"}

    def apply(self, ctx: PlanContext) -> str:
        ctx.loss_kwargs["offset"] = log_counts(ctx.counts_tensor())
        return f"balanced_softmax: training logits + log N_j, N={ctx.counts}"


class LogitAdjustParams(Params):
    tau: Real = Field(1.0, ge=0, description="a number >= 0")
    mode: Literal["loss", "posthoc"] = Field("loss", description="'loss' or 'posthoc'")


@remedy("logit_adjust")
class LogitAdjust(Remedy):
    """Menon et al.: loss form trains on logits + tau log prior; post-hoc form trains plain CE
    and subtracts tau log prior from the logits at evaluation only."""

    Params = LogitAdjustParams

    def slots(self) -> set[str]:
        return {"logits"}

    def apply(self, ctx: PlanContext) -> str:
        prior = log_prior(ctx.counts_tensor())
        if self.p.mode == "loss":
            ctx.loss_kwargs["offset"] = self.p.tau * prior
            return f"logit_adjust: training logits + {self.p.tau} log prior"
        ctx.eval_logit_offset = -self.p.tau * prior
        return f"logit_adjust: evaluation logits - {self.p.tau} log prior (training: plain CE)"


class LDAMParams(Params):
    max_margin: Real = Field(0.5, gt=0, description="a number > 0")
    s: Real = Field(30.0, gt=0, description="a number > 0")
    drw_epoch: Int | Real | None = Field(
        0.8,
        description="null (no re-weighting), an epoch number >= 0 (0-based, int) "
        "or a fraction of the epochs in (0, 1)",
    )
    beta: Real = Field(0.9999, ge=0, lt=1, description="a number in [0, 1)")

    @model_validator(mode="after")
    def _check(self) -> LDAMParams:
        d = self.drw_epoch
        if isinstance(d, float) and not 0 < d < 1 or isinstance(d, int) and d < 0:
            raise ValueError(
                f"drw_epoch must be an epoch number >= 0 (int) or a fraction in (0, 1), got {d!r}"
            )
        return self


@remedy("ldam")
class LDAM(Remedy):
    """Cao et al.: CE on s * (cos - m_y at the target), m_j ~ N_j^(-1/4) scaled so the largest
    is max_margin; wants the cosine ("normed") head, which outputs unscaled cosines. DRW: from
    epoch drw_epoch on (0-based), effective-number weights (beta) normalised to sum C, weighted
    mean; before it, no weights. drw_epoch 0.8 of 200 epochs = 160, the paper's schedule."""

    Params = LDAMParams
    soft_targets_ok = False  # the margin sits at one target class

    def slots(self) -> set[str]:
        return {"logits"} | ({"weights"} if self.p.drw_epoch is not None else set())

    def drw_start(self, epochs: int) -> int | None:
        d = self.p.drw_epoch
        if d is None:
            return None
        start = int(d * epochs + 0.5) if isinstance(d, float) else d
        if start >= epochs:
            raise UserError(
                f"remedy 'ldam': drw_epoch {d} starts re-weighting at epoch {start} but the run "
                f"has {epochs} epochs (0-based); use a fraction such as 0.8, or null"
            )
        return start

    def apply(self, ctx: PlanContext) -> str:
        p = self.p
        counts = ctx.counts_tensor()
        margins = ldam_margins(counts, p.max_margin)
        ctx.loss_kwargs.update(margins=margins, scale=p.s)
        ctx.head = "normed"
        line = f"ldam: s={p.s}, margins={_fmt(margins)}, head=normed"
        start = self.drw_start(ctx.epochs)
        if start is None:
            return line + ", no DRW"
        w = effective_number_weights(counts, p.beta, "sum_to_C")
        ctx.loss_kwargs.update(class_weight=w, weights_on=start == 0, reduction="weighted_mean")

        def drw(loss, epoch: int) -> None:
            loss.weights_on = epoch >= start

        ctx.loss_hooks.append(drw)
        return line + f", DRW from epoch {start} (0-based) with w={_fmt(w)}"
