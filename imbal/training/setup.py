"""One run, one straight path: config -> data -> stages and their plans -> model -> Trainer."""

from __future__ import annotations

import os
import random
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from imbal.data.batches import BatchAugment, Normalizer
from imbal.data.imbalance import IMBALANCES
from imbal.data.prepare import Prepared, prepare_data
from imbal.data.sources import SOURCES, Split
from imbal.errors import UserError
from imbal.metrics import Groups
from imbal.models import build_model, check_model
from imbal.remedies import build_plan
from imbal.remedies.batch import build_batch_transforms
from imbal.remedies.plan import Plan, check_composition, parse_remedies
from imbal.training.optim import OPTIMIZERS, SCHEDULES
from imbal.training.stages import (
    PRETEXT,
    SUPERVISED,
    StageSpec,
    resolve_stages,
    selection_index,
)
from imbal.training.stages import check_names as check_stage_names
from imbal.training.trainer import Trainer, amp_dtype_for


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
    check_model(cfg["model"])  # name, pretrained weights on this machine
    OPTIMIZERS.get(cfg["train"]["optimizer"]["name"])
    SCHEDULES.get(cfg["train"]["schedule"]["name"])
    check_composition(parse_remedies(cfg["remedy"]))  # names, parameters and combinations
    specs = resolve_stages(cfg)
    check_stage_names(cfg, specs)
    if cfg["model"]["init_from"] and any(s.kind == PRETEXT for s in specs):
        which = "a pretext stage" if cfg["stages"] else "pretrain"
        raise UserError(f"{which} and model.init_from are both set: the loaded backbone "
                        f"would replace the pretrained one; give one of them")


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

    @property
    def selection(self) -> StageSpec:
        """The stage best.pt is chosen in (the last supervised one)."""
        return self.stages[selection_index(self.stages)]


def seed_everything_local(seed: int) -> None:
    """Layers without a generator argument (dropout) draw from torch's global RNG: seed it once
    per run from the training seed so CPU runs repeat exactly. Data choices never use it."""
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)


def deterministic_algorithms(compiled: bool) -> None:
    """torch.use_deterministic_algorithms(True, warn_only=True). Without torch.compile, set only
    the eager flag: the public call also sets torch._inductor.config.deterministic, and importing
    that config imports torch._dynamo and the inductor (~1.7 s of a run's start-up here).

    The NaN fill of every torch.empty that deterministic mode adds by default is switched off:
    it guards programs that read memory they never wrote, which imbal does not (a test runs with
    the fill forced on and gets the same figures), and it cost 77 extra fills a step, ~3% of a
    small-CNN step and ~2% of a LeNet step on this CPU. torch's documentation: off is "still
    deterministic"."""
    eager_only = getattr(torch._C, "_set_deterministic_algorithms", None)
    if compiled or eager_only is None or "torch._inductor.config" in sys.modules:
        torch.use_deterministic_algorithms(True, warn_only=True)
    else:
        eager_only(True, warn_only=True)
    torch.utils.deterministic.fill_uninitialized_memory = False


def channels_last_for(setting: bool | str, device: torch.device) -> bool:
    """auto: channels_last on the CPU, where oneDNN's convolutions are faster in it (a training
    step, 2-core EPYC: LeNet 1.08-1.25x, small CNN 1.36-1.58x, ResNet-32 1.31x, ResNet-50 on
    MNIST 1.37x, ResNeXt-18 1.04-1.17x; ResNet-32 with GroupNorm 0.96-0.98x). Elsewhere off
    until measured: no GPU was available to this project."""
    return device.type == "cpu" if setting == "auto" else bool(setting)


def _plans(stages: list[StageSpec], data: Prepared, images: torch.Tensor,
           targets: torch.Tensor, gen: torch.Generator) -> tuple[dict[int, Plan], dict[int, Any]]:
    """Every supervised stage's remedy plan and batch transforms, resolved once, in stage order,
    before the model exists (so a one-stage run draws exactly as it always did)."""
    plans, transforms = {}, {}
    for s in stages:
        if s.kind != SUPERVISED:
            continue
        plans[s.index] = build_plan(s.remedy, images=images, targets=targets,
                                    num_classes=data.num_classes, minority_classes=data.minority,
                                    epochs=s.epochs, generator=gen)
        built = build_batch_transforms(s.batch_transforms, num_classes=data.num_classes,
                                       class_counts=plans[s.index].class_counts)
        if built is not None:
            transforms[s.index] = built
    heads = {plans[i].head for i in plans}
    if len(heads) > 1:
        raise UserError(f"stages need one classifier head, but their remedies ask for "
                        f"{' and '.join(sorted(heads))} heads (ldam uses a normed head)")
    return plans, transforms


def build_setup(cfg: dict, *, quiet: bool) -> Setup:
    check_names(cfg)
    tr, ev = cfg["train"], cfg["eval"]
    device = resolve_device(tr["device"])
    amp_dtype_for(tr["amp"], device)  # refuses float16 on the CPU before any work
    if tr["threads"]:
        torch.set_num_threads(tr["threads"])
    if tr["deterministic"]:
        if device.type == "cuda":
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        deterministic_algorithms(compiled=tr["compile"])
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
    plans, transforms = _plans(stages, data, images, targets, gen)
    chosen = plans[selection_index(stages)]
    model = build_model(cfg["model"]["backbone"], in_channels=data.channels,
                        num_classes=data.num_classes, image_size=data.image_size, head=chosen.head,
                        pretrained=cfg["model"]["pretrained"], resize_to=cfg["model"]["image_size"],
                        **cfg["model"]["params"]).to(device)
    stats = getattr(model.features, "input_stats", None)  # pretrained weights' normalisation
    normalizer = (Normalizer(*stats, device) if stats is not None
                  else Normalizer.fit(data.train.images, device))
    channels_last = channels_last_for(tr["channels_last"], device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    trainer = Trainer(
        model, normalizer=normalizer, device=device, generator=gen,
        amp=tr["amp"], grad_clip=tr["grad_clip"], eval_batch_size=ev["batch_size"],
        channels_last=channels_last, log_every=cfg["logging"]["log_every"], compile=tr["compile"])
    trainer.eval_offset = chosen.eval_logit_offset  # `imbal eval` scores the chosen stage's way
    groups = Groups.make(chosen.class_counts, data.minority, ev["many_shot"], ev["few_shot"])
    return Setup(cfg=cfg, data=data, device=device, trainer=trainer, groups=groups, stages=stages,
                 plans=plans, transforms=transforms, augment=BatchAugment(**cfg["data"]["augment"]),
                 train_images=images, train_targets=targets)


def format_counts(counts: dict) -> str:
    width = max(len("class"), *(len(c) for c in counts["classes"]))
    lines = [f"{'class':<{width}}  {'train':>7} {'val':>6} {'test':>6}"]
    for i, c in enumerate(counts["classes"]):
        mark = "  (minority)" if i in counts["minority_classes"] else ""
        lines.append(f"{c:<{width}}  {counts['train'][i]:>7} {counts['val'][i]:>6} "
                     f"{counts['test'][i]:>6}{mark}")
    lines.append(f"{'total':<{width}}  {sum(counts['train']):>7} {sum(counts['val']):>6} "
                 f"{sum(counts['test']):>6}")
    return "\n".join(lines)
