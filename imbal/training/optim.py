"""Optimizers and learning-rate schedules: torch.optim's, chosen by name from the config.

Optimizers (`train.optimizer`, `pretrain.optimizer`)
----------------------------------------------------
OPTIMIZERS holds every torch.optim optimizer class under its lower-case name (sgd, adam, adamw,
rmsprop, nadam, ...); the exact class name (SGD, AdamW, RMSprop, ...) is accepted too and saved
as the lower-case one. A section is `{name, lr, **kwargs}`: the kwargs are the class's own keyword
arguments, checked against its signature before any work (imbal.training.arguments: a key the
class does not take is refused, never ignored; values must fit its annotations). Where imbal's
default differs from torch's, imbal's wins, so configs written before imbal used torch.optim
train the same: `sgd` momentum 0.9 (torch: 0), `adamw` weight_decay 0 (torch: 0.01). The
resolved config a run saves lists every argument with the value used.

How the update runs is chosen per run, not configured: fused=True where the class has a fused
kernel and every parameter is a floating-point CUDA tensor; otherwise foreach=True where the
class has it (on the CPU torch's own default is the one-tensor-at-a-time loop). A `foreach` or
`fused` key in the section wins. LBFGS (its step needs a closure), SparseAdam (sparse gradients)
and Muon (2-D parameters only) cannot run imbal's training step and are refused by name.

A plugin adds an optimizer with `@OPTIMIZERS.register("name")` on a builder
`fn(params, *, lr, **its own keyword arguments) -> torch.optim.Optimizer` (a torch.optim
Optimizer subclass is such a builder). `params` is the list of parameters to train; the builder's
signature is the list of keys its config section may hold, and their defaults are filled in.

Schedules (`train.schedule`), stepped once per epoch
----------------------------------------------------
`none`, `cosine` (CosineAnnealingLR, `t_max` default: the run's epochs) and `multistep`
(MultiStepLR at absolute epochs `milestones`, factor `gamma`); `warmup_epochs: w` puts a LinearLR
in front (lr x (e+1)/w in epoch e < w) through SequentialLR. SequentialLR restarts the second
schedule's count at the switch, so the builders translate: milestones and t_max minus w. The
lr of every epoch is today's (the epoch-function schedule imbal had before), except cosine after
a warm-up: the cosine now starts at the full lr when the warm-up ends and reaches 0 at t_max,
where before it was the absolute-epoch cosine (a small step down at the switch).

A plugin adds a schedule with `@SCHEDULES.register("name")` on a builder
`fn(optimizer, *, epochs, warmup_epochs, **keys of train.schedule it declares) -> LRScheduler`:
  - optimizer: the run's torch.optim optimizer; its group "lr" is the base lr.
  - epochs: the run's epochs (absolute, warm-up included); warmup_epochs: w (0: none).
  - the other keys of train.schedule (t_max, milestones, gamma, a plugin's own) that the
    builder names as keyword arguments; a key it does not name must be left at its default
    (a plugin's own keys: absent), otherwise the config is refused.
  It returns the scheduler for the epochs after the warm-up: its count 0 is epoch w, and its lr
  there is the lr of that epoch. It is stepped once per epoch. Validation errors are UserErrors
  (or torch's ValueErrors); the builder is also called once on a dummy optimizer before any
  work, so a bad schedule is refused before the data is read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch.optim import lr_scheduler

from imbal.errors import UserError
from imbal.registry import Registry
from imbal.training.arguments import (
    check_keys,
    check_value,
    keyword_parameters,
    plain,
)

OPTIMIZERS = Registry("optimizer")
SCHEDULES = Registry("schedule")

# imbal's defaults where they differ from torch's: what these names meant before torch.optim.
IMBAL_DEFAULTS = {"sgd": {"momentum": 0.9}, "adamw": {"weight_decay": 0.0}}
# How an update runs, not what it computes: chosen per device (a key given in the config wins),
# never written into the resolved config unless given.
IMPLEMENTATION = ("foreach", "fused", "capturable", "differentiable")
UNUSABLE = {
    "lbfgs": "its step needs a closure that re-evaluates the loss; imbal's step is one "
             "forward and backward",
    "sparseadam": "it needs sparse gradients; imbal's models have dense ones",
    "muon": "it takes only 2-D parameters; convolutions, biases and norms are not",
}


def _torch_optimizers() -> dict[str, type]:
    found = {}
    for attr in torch.optim.__all__:
        cls = getattr(torch.optim, attr, None)
        if isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer) \
                and cls is not torch.optim.Optimizer:
            found[attr.lower()] = cls
    return found


TORCH_OPTIMIZERS = _torch_optimizers()
for _name, _cls in sorted(TORCH_OPTIMIZERS.items()):
    if _name not in UNUSABLE:
        OPTIMIZERS.register(_name)(_cls)


def optimizer_name(name: str) -> str:
    """The registry name: a registered name as given, a torch.optim class name lower-cased."""
    if name in OPTIMIZERS:
        return name
    if name.lower() in TORCH_OPTIMIZERS and TORCH_OPTIMIZERS[name.lower()].__name__ == name:
        return name.lower()
    return name


def resolve_optimizer(section: dict, where: str = "train.optimizer") -> dict:
    """The section with every keyword argument the optimizer will be built with: refused keys
    and values raise a one-line UserError; defaults (imbal's, then the builder's) are filled in.
    Implementation keys (foreach, fused, ...) appear only when given."""
    name = optimizer_name(str(section["name"]))
    if name in UNUSABLE and name not in OPTIMIZERS:
        raise UserError(f"{where}.name: {name} cannot train in imbal: {UNUSABLE[name]}")
    builder = OPTIMIZERS.get(name)
    given = {k: v for k, v in section.items() if k != "name"}
    params, var_kw = keyword_parameters(builder, skip=("self", "params"))
    hint = (f" (a changed {where}.name keeps the section's other keys: set the whole section, "
            f"e.g. --set '{where}={{name: {name}, lr: 0.001}}')")
    try:
        check_keys(where, name, given, params, var_kw)
    except UserError as err:
        foreign = set(given) - set(params)  # another optimizer's arguments: a changed name?
        theirs = any(foreign & set(keyword_parameters(OPTIMIZERS.get(n), skip=("self", "params"))[0])
                     for n in OPTIMIZERS.names() if n != name)
        raise UserError(f"{err}{hint if theirs else ''}") from None
    missing = [k for k, p in params.items() if p.default is p.empty and k not in given]
    if missing:
        raise UserError(f"{where}: {name} needs {', '.join(repr(k) for k in missing)}")
    for key, value in given.items():
        check_value(where, key, value, params.get(key))
    filled = {k: p.default for k, p in params.items()
              if p.default is not p.empty and k not in IMPLEMENTATION}
    filled.update(IMBAL_DEFAULTS.get(name, {}))
    filled.update(given)
    out = {"name": name, "lr": filled.pop("lr", section.get("lr"))}
    for key, value in filled.items():  # the signature's order
        out[key] = plain(check_value(where, key, value, params.get(key)))
    _try_build(builder, name, out, where)
    return out


def without_untaken_arguments(section: dict) -> dict:
    """The section less any key its optimizer does not take. Only for `imbal eval`, which never
    steps an optimizer: an older imbal saved momentum and nesterov for every optimizer (adam
    included) in a run's config.yaml, and its runs must still evaluate."""
    name = optimizer_name(str(section["name"]))
    if name not in OPTIMIZERS:
        return section
    params, var_kw = keyword_parameters(OPTIMIZERS.get(name), skip=("self", "params"))
    return {k: v for k, v in section.items() if k == "name" or var_kw or k in params}


def _call_kwargs(builder: Callable, section: dict) -> dict:
    params, _ = keyword_parameters(builder, skip=("self", "params"))
    return {k: check_value("optimizer", k, v, params.get(k))
            for k, v in section.items() if k != "name"}


def _try_build(builder: Callable, name: str, section: dict, where: str) -> None:
    """Let the optimizer check its own values (torch: momentum >= 0, betas in [0, 1),
    nesterov needs momentum, ...) on a throw-away parameter, so they are refused now."""
    dummy = torch.zeros(2, 2, requires_grad=True)
    try:
        builder([dummy], **_call_kwargs(builder, section))
    except (ValueError, TypeError, RuntimeError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise UserError(f"{where}: {name} refuses these arguments: {first[:200]}") from None


def implementation(builder: Callable, params: list[torch.Tensor], section: dict) -> dict:
    """How the update runs on these parameters; a foreach or fused key in the section wins."""
    if any(k in section for k in ("foreach", "fused")):
        return {}
    keys, _ = keyword_parameters(builder)
    return choose_implementation(
        set(keys), all_cuda_float=bool(params) and all(p.is_cuda and p.is_floating_point()
                                                       for p in params),
        any_cuda=any(p.is_cuda for p in params))


def choose_implementation(keys: set[str], *, all_cuda_float: bool, any_cuda: bool) -> dict:
    """fused=True where the builder takes `fused` and every parameter is a floating CUDA
    tensor; else foreach=True where it takes `foreach` and nothing is on CUDA (the CPU, where
    torch's default is the per-tensor loop; on CUDA torch picks foreach by itself)."""
    if all_cuda_float and "fused" in keys:
        return {"fused": True}
    if not any_cuda and "foreach" in keys:
        return {"foreach": True}
    return {}


def build_optimizer(params: Iterable, section: dict,
                    where: str = "optimizer") -> torch.optim.Optimizer:
    """The optimizer of a config section, on these parameters."""
    section = resolve_optimizer(section, where)
    builder = OPTIMIZERS.get(section["name"])
    params = list(params)
    kwargs = _call_kwargs(builder, section)
    impl = implementation(builder, params, section)
    try:
        return builder(params, **kwargs, **impl)
    except RuntimeError:  # a class with a fused flag but no CUDA kernel (Adagrad): foreach
        if not impl.get("fused"):
            raise
        keys, _ = keyword_parameters(builder)
        return builder(params, **kwargs, **({"foreach": True} if "foreach" in keys else {}))


def describe_optimizer(opt: torch.optim.Optimizer) -> str:
    """'torch.optim.SGD (foreach): lr 0.01, momentum 0.9, ...' for the run's log and meta."""
    cls = type(opt)
    where = "torch.optim." if cls.__module__.startswith("torch.optim") else f"{cls.__module__}."
    d = opt.defaults
    how = "fused" if d.get("fused") else "foreach" if d.get("foreach") else "per-tensor loop"
    args = ", ".join(f"{k} {plain(v)}" for k, v in d.items() if k not in IMPLEMENTATION)
    return f"{where}{cls.__name__} ({how}): {args}"


# ------------------------------------------------------------------------------- schedules


@SCHEDULES.register("none")
def _none(optimizer, *, epochs: int, warmup_epochs: int):
    return lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)


@SCHEDULES.register("cosine")
def _cosine(optimizer, *, epochs: int, warmup_epochs: int, t_max: int | None):
    period = epochs if t_max is None else t_max
    if period <= warmup_epochs:
        raise UserError(f"train.schedule.t_max ({period}) must be larger than warmup_epochs "
                        f"({warmup_epochs})")
    if period < epochs:  # torch's cosine climbs again after T_max; imbal's stayed at 0
        raise UserError(f"train.schedule.t_max ({period}) is shorter than the run ({epochs} "
                        "epochs): its last epochs would train at lr 0; set t_max >= epochs")
    return lr_scheduler.CosineAnnealingLR(optimizer, T_max=period - warmup_epochs)


@SCHEDULES.register("multistep")
def _multistep(optimizer, *, epochs: int, warmup_epochs: int, milestones: list[int],
               gamma: float):
    if not milestones:
        raise UserError("schedule multistep needs train.schedule.milestones (e.g. [160, 180])")
    if sorted(milestones) != list(milestones) or milestones[0] < 1:
        raise UserError(f"schedule milestones must be increasing epochs >= 1, got {milestones}")
    # Counted from the end of the warm-up; one at or before it applies from its first epoch.
    return lr_scheduler.MultiStepLR(optimizer, [m - warmup_epochs for m in milestones],
                                    gamma=gamma)


def schedule_kwargs(builder: Callable, name: str, section: dict) -> dict:
    """The section's keys the builder declares; any other key must be at its default."""
    from imbal.config import Schedule

    params, var_kw = keyword_parameters(builder, skip=("optimizer", "epochs", "warmup_epochs"))
    out = {}
    for key, value in section.items():
        if key in ("name", "warmup_epochs"):
            continue
        if key in params or var_kw:
            out[key] = check_value("train.schedule", key, value, params.get(key))
            continue
        field = Schedule.model_fields.get(key)
        if field is None or value != field.get_default(call_default_factory=True):
            valid = ", ".join([*params, "warmup_epochs"])
            raise UserError(f"train.schedule: {name} takes no '{key}'; it takes: {valid}")
    return out


def build_scheduler(optimizer: torch.optim.Optimizer, section: dict,
                    epochs: int) -> lr_scheduler.LRScheduler:
    """The schedule of `train.schedule` for a run of `epochs` epochs, stepped once per epoch."""
    name, warmup = section["name"], int(section.get("warmup_epochs") or 0)
    builder = SCHEDULES.get(name)
    main = builder(optimizer, epochs=epochs, warmup_epochs=warmup,
                   **schedule_kwargs(builder, name, section))
    if warmup == 0:
        return main
    # lr x (e+1)/w in epoch e < w: LinearLR from 1/w reaching 1 at its count w-1.
    warm = lr_scheduler.LinearLR(optimizer, start_factor=1.0 / warmup, end_factor=1.0,
                                 total_iters=max(warmup - 1, 1))
    return lr_scheduler.SequentialLR(optimizer, [warm, main], milestones=[warmup])


def check_schedule(section: dict, epochs: int, where: str = "train.schedule") -> None:
    """Build the schedule once on a throw-away optimizer: a bad one is refused before any work."""
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    try:
        build_scheduler(opt, section, epochs)
    except (ValueError, TypeError, ZeroDivisionError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise UserError(f"{where}: {section['name']}: {first[:200]}") from None


def describe_schedule(section: dict) -> str:
    warmup = section.get("warmup_epochs") or 0
    return section["name"] + (f" after a {warmup}-epoch linear warm-up" if warmup else "")


def lr_factors(section: dict, epochs: int) -> list[float]:
    """The lr of each of a run's epochs, as a multiple of the base lr."""
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    sched = build_scheduler(opt, section, epochs)
    out = []
    for _ in range(epochs):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out

