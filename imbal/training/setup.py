"""One run, one straight path: config -> data -> stages and their plans -> model -> Trainer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from imbal.data.batches import BatchAugment, Normalizer
from imbal.data.imbalance import IMBALANCES
from imbal.data.per_batch import PerBatchMask, per_batch_mask, per_batch_period
from imbal.data.prepare import Prepared, prepare_data
from imbal.data.sources import SOURCES, Split
from imbal.errors import UserError
from imbal.metrics import Groups
from imbal.models import build_model, check_model
from imbal.models.init import apply_init, check_init
from imbal.remedies import build_plan
from imbal.remedies.batch import build_batch_transforms
from imbal.remedies.plan import Plan, check_composition, parse_remedies
from imbal.training.optim import check_schedule, resolve_optimizer
from imbal.training.settings import apply_run_settings, seed_everything_local
from imbal.training.stages import (
    CLASSIFIER_KINDS,
    PRETEXT,
    StageSpec,
    resolve_stages,
    selection_index,
)
from imbal.training.stages import check_names as check_stage_names
from imbal.training.trainer import Trainer, amp_dtype_for
from imbal.training.two_stage import add_lws_scales


def resolve_device(setting: str) -> torch.device:
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(setting)
    except RuntimeError:
        raise UserError(f"unknown device '{setting}'; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device '{setting}' requested but CUDA is not available here")
    if dev.type not in ("cpu", "cuda"):
        raise UserError(f"device '{setting}' is not supported; use auto, cpu, cuda or cuda:N")
    return dev


def check_names(cfg: dict) -> None:
    """Refuse unknown component names and impossible stage lists before any data is read."""
    SOURCES.get(cfg["data"]["source"])
    IMBALANCES.get(cfg["data"]["imbalance"]["kind"])
    if cfg["data"]["imbalance"]["apply"] == "per_batch":
        per_batch_period(cfg["data"]["imbalance"])
    check_model(cfg["model"])  # name, pretrained weights on this machine
    check_init(cfg["model"]["init"])
    resolve_optimizer(cfg["train"]["optimizer"], "train.optimizer")  # names, keys and values
    check_schedule(cfg["train"]["schedule"], cfg["train"]["epochs"])
    check_composition(parse_remedies(cfg["remedy"]))  # names, parameters and combinations
    specs = resolve_stages(cfg)
    check_stage_names(cfg, specs)
    rest = [s for s in specs if s.unlabelled == "rest"]
    if rest and cfg["data"]["labelled_per_class"] is None:
        raise UserError(f"{rest[0].where}: unlabelled: rest needs data.labelled_per_class (the "
                        f"training images left without labels are the rest)")
    if cfg["model"]["init_from"] and any(s.kind == PRETEXT for s in specs):
        which = "a pretext stage" if cfg["stages"] else "pretrain"
        raise UserError(f"{which} and model.init_from are both set: the loaded backbone "
                        f"would replace the pretrained one; give one of them")


def resolve_parts(cfg: dict) -> dict:
    """The config with each optimizer section complete: every keyword argument the optimizer
    is built with (imbal's and the class's defaults filled in), so config.yaml says what ran."""
    out = {**cfg, "train": {**cfg["train"]}}
    out["train"]["optimizer"] = resolve_optimizer(cfg["train"]["optimizer"], "train.optimizer")
    if cfg["pretrain"] is not None:
        out["pretrain"] = {**cfg["pretrain"], "optimizer": resolve_optimizer(
            cfg["pretrain"]["optimizer"], "pretrain.optimizer")}
    if cfg["stages"]:
        out["stages"] = [{**st, "optimizer": resolve_optimizer(st["optimizer"], f"stages[{i}].optimizer")}
                         if isinstance(st.get("optimizer"), dict) else st
                         for i, st in enumerate(cfg["stages"])]
    return out


@dataclass
class Setup:
    """Everything built from the config before the first step."""

    cfg: dict
    data: Prepared
    device: torch.device
    trainer: Trainer
    groups: Groups
    stages: list[StageSpec]
    plans: dict[int, Plan]  # the remedy plan of every supervised stage, by stage index
    transforms: dict[int, Any]  # the batch transforms of the supervised stages that have them
    augment: BatchAugment  # the data config's augmentation (supervised stages)
    train_images: torch.Tensor  # the training split on the device (pretext stages)
    train_targets: torch.Tensor
    batch_filter: PerBatchMask | None = None  # data.imbalance.apply per_batch (supervised stages)

    @property
    def selection(self) -> StageSpec:
        """The stage best.pt is chosen in (the last supervised one)."""
        return self.stages[selection_index(self.stages)]


def channels_last_for(setting: bool | str, device: torch.device) -> bool:
    """auto: channels_last on the CPU, where oneDNN's convolutions are faster in it (a training
    step, 2-core EPYC: LeNet 1.08-1.25x, small CNN 1.36-1.58x, ResNet-32 1.31x, ResNet-50 on
    MNIST 1.37x, ResNeXt-18 1.04-1.17x; ResNet-32 with GroupNorm 0.96-0.98x). Elsewhere off
    until measured: no GPU was available to this project."""
    return device.type == "cpu" if setting == "auto" else bool(setting)


def _plans(stages: list[StageSpec], data: Prepared, images: torch.Tensor,
           targets: torch.Tensor, gen: torch.Generator) -> dict[int, Plan]:
    """Every supervised stage's remedy plan, resolved once, in stage order, before the model
    exists (so a one-stage run draws exactly as it always did)."""
    plans = {}
    for s in stages:
        if s.kind in CLASSIFIER_KINDS:
            plans[s.index] = build_plan(s.remedy, images=images, targets=targets,
                                        num_classes=data.num_classes,
                                        minority_classes=data.minority, epochs=s.epochs,
                                        generator=gen)
    heads = {plans[i].head for i in plans}
    if len(heads) > 1:
        raise UserError(f"stages need one classifier head, but their remedies ask for "
                        f"{' and '.join(sorted(heads))} heads (ldam uses a normed head)")
    return plans


def _transforms(stages: list[StageSpec], data: Prepared, plans: dict[int, Plan],
                normalizer: Normalizer) -> dict[int, Any]:
    """Every supervised stage's batch transforms (they draw nothing when built); `normalizer`:
    the run's, which pixel-space transforms convert through."""
    transforms = {}
    for i, plan in plans.items():
        built = build_batch_transforms(stages[i].batch_transforms, num_classes=data.num_classes,
                                       class_counts=plan.class_counts, normalizer=normalizer)
        if built is not None:
            transforms[i] = built
    return transforms


def build_setup(cfg: dict, *, quiet: bool) -> Setup:
    check_names(cfg)
    tr, ev = cfg["train"], cfg["eval"]
    device = resolve_device(tr["device"])
    amp_dtype_for(tr["amp"], device)  # refuses float16 on the CPU before any work
    apply_run_settings(threads=tr["threads"], deterministic=tr["deterministic"], device=device)
    data = prepare_data(cfg["data"], data_seed=cfg["seeds"]["data"],
                        minority_override=ev["minority_classes"])
    bad = [c for c in data.minority if not 0 <= c < data.num_classes]
    if bad:
        raise UserError(f"eval.minority_classes {bad} out of range for {data.num_classes} classes")
    # Evaluation splits live on the device too: one copy now instead of one per batch per epoch.
    data.val, data.test = (Split(s.images.to(device), s.targets.to(device)) for s in (data.val, data.test))
    seed_everything_local(cfg["seeds"]["train"])
    gen = torch.Generator(device=device).manual_seed(cfg["seeds"]["train"])
    images = data.train.images.to(device)
    targets = data.train.targets.to(device)
    stages = resolve_stages(cfg)
    plans = _plans(stages, data, images, targets, gen)
    chosen = plans[selection_index(stages)]
    model = build_model(cfg["model"]["backbone"], in_channels=data.channels,
                        num_classes=data.num_classes, image_size=data.image_size, head=chosen.head,
                        pretrained=cfg["model"]["pretrained"], resize_to=cfg["model"]["image_size"],
                        **cfg["model"]["params"])
    if cfg["model"]["pretrained"] is None:  # a scheme never overwrites pretrained weights
        apply_init(model, cfg["model"]["init"])  # before init_from (fit) loads a backbone over it
    else:
        apply_init(model.head, cfg["model"]["init"])
    model = model.to(device)
    add_lws_scales(model, stages, data.num_classes)
    stats = getattr(model.features, "input_stats", None)  # pretrained weights' normalisation
    normalizer = (Normalizer(*stats, device) if stats is not None
                  else Normalizer.fit(data.train.images, device))
    transforms = _transforms(stages, data, plans, normalizer)
    channels_last = channels_last_for(tr["channels_last"], device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    trainer = Trainer(
        model, normalizer=normalizer, device=device, generator=gen,
        amp=tr["amp"], grad_clip=tr["grad_clip"], eval_batch_size=ev["batch_size"],
        channels_last=channels_last, log_every=cfg["logging"]["log_every"], compile=tr["compile"],
        ema_decay=tr["ema"]["decay"] if tr["ema"] else None)
    trainer.eval_offset = chosen.eval_logit_offset  # `imbal eval` scores the chosen stage's way
    groups = Groups.make(chosen.class_counts, data.minority, ev["many_shot"], ev["few_shot"])
    augment = BatchAugment(**cfg["data"]["augment"], fill=normalizer.black)  # black padding
    return Setup(cfg=cfg, data=data, device=device, trainer=trainer, groups=groups, stages=stages,
                 plans=plans, transforms=transforms, augment=augment, train_images=images,
                 train_targets=targets,
                 batch_filter=per_batch_mask(cfg["data"]["imbalance"], data.num_classes, device))


def format_counts(counts: dict) -> str:
    width = max(len("class"), *(len(c) for c in counts["classes"]))
    lines = [f"{'class':<{width}}  {'train':>7} {'val':>6} {'test':>6}"]
    for i, c in enumerate(counts["classes"]):
        mark = "  (minority)" if i in counts["minority_classes"] else ""
        lines.append(f"{c:<{width}}  {counts['train'][i]:>7} {counts['val'][i]:>6} "
                     f"{counts['test'][i]:>6}{mark}")
    lines.append(f"{'total':<{width}}  {sum(counts['train']):>7} {sum(counts['val']):>6} "
                 f"{sum(counts['test']):>6}")
    if counts.get("imbalance_applied") == "per_batch":
        lines.append("imbalance: not applied to the data set; the training loop masks batches "
                     "(data.imbalance.apply: per_batch)")
    short = counts.get("val_from_kept")
    if short is not None:
        lines.append(_val_from_removed_line(counts["classes"], short))
    return "\n".join(lines)


def _val_from_removed_line(classes: list[str], short: list[int]) -> str:
    """data.val_from removed: which classes had too few removed images and gave kept ones."""
    gave = [f"{classes[c]} {n}" for c, n in enumerate(short) if n]
    if not gave:
        return "validation: from the images the imbalance removed"
    listed = ", ".join(gave[:10]) + (", ..." if len(gave) > 10 else "")
    return (f"validation: from the images the imbalance removed; {len(gave)} class(es) short of "
            f"them gave {sum(short)} of their kept images: {listed}")
