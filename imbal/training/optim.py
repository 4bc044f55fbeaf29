"""Optimizer and learning-rate schedule registries. Schedules step once per epoch.

The optimizers are imbal's own (imbal/optimizers.py: torch.optim's update rules without the
torch._dynamo import that costs a short run a third of its start-up).

Contracts, for plugins (``from imbal import OPTIMIZERS, SCHEDULES``):

    @OPTIMIZERS.register("name")
    def fn(params, *, lr, momentum, nesterov, weight_decay) -> torch.optim.Optimizer-like
        (params: the model's parameters; the rest: train.optimizer's keys; the result needs
        step(), zero_grad(set_to_none=...), state_dict()/load_state_dict() and param_groups
        with "lr", which the epoch schedule sets)

    @SCHEDULES.register("name")
    def fn(*, epochs, t_max, milestones, gamma) -> (epoch: int) -> lr multiplier
        (train.schedule's keys; the function of the 0-based epoch is pure, so resuming needs
        only the epoch; warmup_epochs is applied on top by imbal)
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from imbal.errors import UserError
from imbal.registry import Registry
from imbal.training.optimizers import SGD, Adam, EpochSchedule, Optimizer

OPTIMIZERS = Registry("optimizer")
SCHEDULES = Registry("schedule")


@OPTIMIZERS.register("sgd")
def _sgd(params: Iterable, *, lr: float, momentum: float, nesterov: bool, weight_decay: float):
    if nesterov and momentum == 0:
        raise UserError("optimizer sgd: nesterov needs momentum > 0")
    return SGD(params, lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay)


@OPTIMIZERS.register("adam")
def _adam(params: Iterable, *, lr: float, momentum: float, nesterov: bool, weight_decay: float):
    return Adam(params, lr=lr, weight_decay=weight_decay)


@OPTIMIZERS.register("adamw")
def _adamw(params: Iterable, *, lr: float, momentum: float, nesterov: bool, weight_decay: float):
    return Adam(params, lr=lr, weight_decay=weight_decay, decoupled=True)


def build_optimizer(params: Iterable, opt: dict) -> Optimizer:
    return OPTIMIZERS.build(opt["name"], params=params, lr=opt["lr"], momentum=opt["momentum"],
                            nesterov=opt["nesterov"], weight_decay=opt["weight_decay"])


# A schedule is a pure function epoch -> multiplier of the base lr, wrapped in EpochSchedule, so
# the scheduler's state is just its epoch counter (trivially resumable).
@SCHEDULES.register("none")
def _none(*, epochs: int, t_max: int | None, milestones: list[int], gamma: float):
    return lambda e: 1.0


@SCHEDULES.register("cosine")
def _cosine(*, epochs: int, t_max: int | None, milestones: list[int], gamma: float):
    period = t_max or epochs
    return lambda e: 0.5 * (1.0 + math.cos(math.pi * min(e, period) / period))


@SCHEDULES.register("multistep")
def _multistep(*, epochs: int, t_max: int | None, milestones: list[int], gamma: float):
    if not milestones:
        raise UserError("schedule multistep needs train.schedule.milestones (e.g. [160, 180])")
    if sorted(milestones) != milestones or milestones[0] < 1:
        raise UserError(f"schedule milestones must be increasing epochs >= 1, got {milestones}")
    return lambda e: gamma ** sum(e >= m for m in milestones)


def with_warmup(fn, warmup: int):
    """Linear warmup over the first `warmup` epochs: lr * (e+1)/warmup, then the schedule."""
    if warmup <= 0:
        return fn
    return lambda e: (e + 1) / warmup if e < warmup else fn(e)


def build_scheduler(optimizer: Optimizer, sched: dict, epochs: int) -> EpochSchedule:
    fn = SCHEDULES.build(sched["name"], epochs=epochs, t_max=sched["t_max"],
                         milestones=list(sched["milestones"]), gamma=sched["gamma"])
    return EpochSchedule(optimizer, with_warmup(fn, sched["warmup_epochs"]))
