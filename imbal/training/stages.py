"""A run is an ordered list of stages; this module turns the config into that list and checks it.

With `stages:` the list is the config's (every default already filled in by config.validate).
Without it, today's configs keep their meaning: `pretrain:` becomes a pretext stage named
"pretrain" (its own optimizer, constant lr, `use_removed` as `unlabelled: removed`) and the
`train:` section with `remedy:` and `model.freeze_backbone_epochs` one supervised stage named
"train"; a plain config is that one stage.

Stage kinds: "supervised" (no `task`: the classifier on the labels, with the stage's remedy
plan), "semi" (`semi: {name: ...}`: the classifier on the labels and the stage's unlabelled
stream, with a semi-supervised method's objective, imbal.semi) and "pretext" (a `task`: the
backbone plus the task's head). Supervised and semi stages train the classifier (CLASSIFIER_KINDS);
below, "supervised" rules apply to both. Rules, refused before any
work: at least one supervised stage; no pretext stage after the last supervised one (best.pt
is chosen within the last supervised stage, on validation); `optimizer: continue` only on a
supervised stage that follows a supervised stage (the same model parameters), and it keeps the
optimizer's state and the schedule, which then spans the epochs of the stage that built it and
of every stage continuing it; options that mean nothing for a kind are refused, not ignored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from imbal.errors import UserError
from imbal.remedies.batch import soft_target_transforms
from imbal.remedies.plan import check_composition, check_soft_targets, parse_remedies
from imbal.training.optim import check_schedule, resolve_optimizer

SUPERVISED, PRETEXT, SEMI = "supervised", "pretext", "semi"
CLASSIFIER_KINDS = (SUPERVISED, SEMI)  # stages that train the classifier on the labels
CONSTANT = {"name": "none", "t_max": None, "milestones": [], "gamma": 0.1, "warmup_epochs": 0}


@dataclass(frozen=True)
class StageSpec:
    """One stage, resolved: everything a stage needs from the config, nothing else."""

    index: int
    name: str
    kind: str  # SUPERVISED | PRETEXT | SEMI
    epochs: int
    batch_size: int
    optimizer: dict | None  # None: continue the previous stage's optimizer and schedule
    schedule: dict | None
    schedule_epochs: int  # the epochs the schedule spans (this stage and those continuing it)
    remedy: list[Any]
    batch_transforms: list[Any]
    trains: str = "all"  # all | head | scales
    max_norm: float | None = None
    reinit_head: bool = False
    freeze_backbone_epochs: int = 0
    task: str | None = None
    params: dict | None = None
    unlabelled: str | None = None
    unlabelled_batch_size: int | None = None
    semi: dict | None = None

    @property
    def where(self) -> str:
        return f"stage '{self.name}'"


def _legacy(cfg: dict) -> list[dict]:
    """pretrain: + train: as the two stages they always meant."""
    tr, out = cfg["train"], []
    pc = cfg["pretrain"]
    if pc is not None:
        out.append({"name": "pretrain", "task": pc["task"], "params": pc["params"],
                    "epochs": pc["epochs"], "batch_size": pc["batch_size"] or tr["batch_size"],
                    "optimizer": pc["optimizer"], "schedule": dict(CONSTANT),
                    "unlabelled": "removed" if pc["use_removed"] else None})
    out.append({"name": "train", "epochs": tr["epochs"], "batch_size": tr["batch_size"],
                "optimizer": tr["optimizer"], "schedule": tr["schedule"], "remedy": cfg["remedy"],
                "batch_transforms": tr["batch_transforms"],
                "freeze_backbone_epochs": cfg["model"]["freeze_backbone_epochs"]})
    return out


def resolve_stages(cfg: dict) -> list[StageSpec]:
    """The run's stages from a validated config (a plain dict)."""
    raw = cfg["stages"] if cfg.get("stages") else _legacy(cfg)
    specs = []
    for i, s in enumerate(raw):
        opt = s.get("optimizer")
        specs.append(StageSpec(
            index=i, name=s["name"], kind=_kind(s),
            epochs=s["epochs"], batch_size=s["batch_size"],
            optimizer=None if opt == "continue" else opt,
            schedule=None if opt == "continue" else s["schedule"], schedule_epochs=s["epochs"],
            remedy=list(s.get("remedy") or []), batch_transforms=list(s.get("batch_transforms") or []),
            trains=s.get("trains", "all"), reinit_head=s.get("reinit_head", False),
            freeze_backbone_epochs=s.get("freeze_backbone_epochs", 0), task=s.get("task"),
            params=s.get("params") or {}, unlabelled=s.get("unlabelled"),
            unlabelled_batch_size=s.get("unlabelled_batch_size"), max_norm=s.get("max_norm"),
            semi=s.get("semi")))
    check_structure(specs)
    return [_with_schedule_span(specs, s) for s in specs]


def _kind(s: dict) -> str:
    if s.get("task") and s.get("semi"):
        raise UserError(f"stage '{s['name']}': task and semi are both set; a stage is a pretext "
                        f"stage (task) or a semi-supervised one (semi), not both")
    return PRETEXT if s.get("task") else SEMI if s.get("semi") else SUPERVISED


def _with_schedule_span(specs: list[StageSpec], spec: StageSpec) -> StageSpec:
    if spec.optimizer is None:
        return spec
    span = spec.epochs
    for later in specs[spec.index + 1:]:
        if later.optimizer is not None:
            break
        span += later.epochs
    return StageSpec(**{**spec.__dict__, "schedule_epochs": span})


def chain_head(specs: list[StageSpec], index: int) -> StageSpec:
    """The stage whose optimizer and schedule stage `index` runs with."""
    while specs[index].optimizer is None:
        index -= 1
    return specs[index]


def selection_index(specs: list[StageSpec]) -> int:
    """The last supervised stage: best.pt is chosen on validation within it."""
    return max(s.index for s in specs if s.kind in CLASSIFIER_KINDS)


def check_structure(specs: list[StageSpec]) -> None:
    """The rules of the module docstring (no registry needed)."""
    supervised = [s for s in specs if s.kind in CLASSIFIER_KINDS]
    if not supervised:
        raise UserError("stages: a run needs at least one supervised stage (one without task); "
                        "best.pt and results.json come from the last one")
    last = supervised[-1].index
    for s in specs:
        if s.kind == PRETEXT:
            _check_pretext(s, last)
        elif s.kind == SEMI:
            _check_semi(s)
        else:
            _check_supervised(s)
        if s.optimizer is None:
            before = specs[s.index - 1] if s.index else None
            if before is None or before.kind == PRETEXT or s.kind == PRETEXT:
                raise UserError(f"{s.where}: optimizer: continue needs a supervised stage right "
                                f"before it (the same parameters), and must be supervised itself")


def _check_pretext(s: StageSpec, last_supervised: int) -> None:
    if s.index > last_supervised:
        raise UserError(f"{s.where}: a pretext stage after the last supervised stage would change "
                        f"the backbone after best.pt was chosen; move it before")
    meaningless = {"remedy": bool(s.remedy), "batch_transforms": bool(s.batch_transforms),
                   f"trains: {s.trains}": s.trains != "all", "reinit_head": s.reinit_head,
                   "max_norm": s.max_norm is not None,
                   "freeze_backbone_epochs": bool(s.freeze_backbone_epochs)}
    bad = [k for k, v in meaningless.items() if v]
    if bad:
        raise UserError(f"{s.where}: {bad[0]} does not apply to a pretext stage (task "
                        f"{s.task}: it trains the backbone and the task's own head on the task's "
                        f"loss)")


def _check_supervised(s: StageSpec) -> None:
    if s.params:
        raise UserError(f"{s.where}: params are a pretext task's options; this stage has no task")
    if s.unlabelled is not None:
        raise UserError(f"{s.where}: unlabelled images would be ignored: supervised training has "
                        f"no use for them (pretext and semi stages do)")
    if s.unlabelled_batch_size is not None:
        raise UserError(f"{s.where}: unlabelled_batch_size without unlabelled")
    if s.trains == "scales" and s.reinit_head:
        raise UserError(f"{s.where}: reinit_head with trains: scales (LWS scales the trained "
                        f"classifier's logits; re-initialising it would leave nothing to scale)")
    if s.freeze_backbone_epochs and s.trains != "all":
        raise UserError(f"{s.where}: freeze_backbone_epochs with trains: {s.trains} (frozen throughout "
                        f"already); give one of them")


def _check_semi(s: StageSpec) -> None:
    if s.unlabelled is None:
        raise UserError(f"{s.where}: semi ({s.semi.get('name')}) needs an unlabelled stream: "
                        f"unlabelled: rest (with data.labelled_per_class) or removed")
    meaningless = {"remedy": bool(s.remedy), "batch_transforms": bool(s.batch_transforms),
                   "params": bool(s.params)}
    bad = [k for k, v in meaningless.items() if v]
    if bad:
        raise UserError(f"{s.where}: {bad[0]} does not apply to a semi stage (its method's "
                        f"objective is its loss and its mixing; options go in semi)")


def _try_parts(s: StageSpec, where: str) -> None:
    """Check the stage's optimizer (names, arguments, torch's own checks on a stand-in
    parameter) and build its schedule on a throw-away optimizer: a bad later stage (multistep
    without milestones) is refused before any work, not when it starts, hours into the run."""
    resolve_optimizer(s.optimizer, f"{where}.optimizer")
    check_schedule(s.schedule, s.schedule_epochs, f"{where}.schedule")


def check_names(cfg: dict, specs: list[StageSpec]) -> None:
    """Registry names and parameters of every stage, before any data is read."""
    for s in specs:
        if s.optimizer is not None:
            legacy = "pretrain" if s.kind == PRETEXT else "train"
            _try_parts(s, f"stages[{s.index}]" if cfg.get("stages") else legacy)
        if s.kind == PRETEXT:
            from imbal.pretext import check_params  # lazy: runs without one skip its import

            where = "pretrain.params" if not cfg.get("stages") else f"stages[{s.index}].params"
            check_params(s.task, s.params, where)
            continue
        if s.kind == SEMI:
            from imbal.semi import check_semi

            check_semi(s.semi, f"stages[{s.index}].semi")
            continue
        remedies = parse_remedies(s.remedy)
        check_composition(remedies)  # names, parameters and combinations
        check_soft_targets(remedies, soft_target_transforms(s.batch_transforms))
