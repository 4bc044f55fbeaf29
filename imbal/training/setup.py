"""One run, one straight path: config -> data -> plan -> model -> (pretrain) -> fit -> results."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from imbal.data.batches import BatchAugment, Normalizer
from imbal.data.imbalance import IMBALANCES
from imbal.data.prepare import Prepared, prepare_data
from imbal.data.sources import SOURCES, Split
from imbal.errors import UserError
from imbal.metrics import Groups
from imbal.models import MODELS, build_model
from imbal.remedies import build_plan
from imbal.remedies.plan import check_composition, parse_remedies
from imbal.training.optim import (
    build_optimizer,
    build_scheduler,
    check_schedule,
    resolve_optimizer,
)
from imbal.training.runs import (
    CHECKPOINT_VERSION,
    atomic_torch_save,
    load_checkpoint,
)
from imbal.training.settings import apply_run_settings, seed_everything_local
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
    """Refuse unknown component names before any data is read."""
    SOURCES.get(cfg["data"]["source"])
    IMBALANCES.get(cfg["data"]["imbalance"]["kind"])
    MODELS.get(cfg["model"]["backbone"])
    resolve_optimizer(cfg["train"]["optimizer"], "train.optimizer")  # names, keys and values
    check_schedule(cfg["train"]["schedule"], cfg["train"]["epochs"])
    check_composition(parse_remedies(cfg["remedy"]))  # names, parameters and combinations
    if cfg["pretrain"] is not None:
        from imbal.pretext import check_params

        check_params(cfg["pretrain"]["task"], cfg["pretrain"]["params"])
        resolve_optimizer(cfg["pretrain"]["optimizer"], "pretrain.optimizer")
        if cfg["model"]["init_from"]:
            raise UserError("pretrain and model.init_from are both set: the loaded backbone "
                            "would replace the pretrained one; give one of them")


def resolve_parts(cfg: dict) -> dict:
    """The config with each optimizer section complete: every keyword argument the optimizer
    is built with (imbal's and the class's defaults filled in), so config.yaml says what ran."""
    out = {**cfg, "train": {**cfg["train"]}}
    out["train"]["optimizer"] = resolve_optimizer(cfg["train"]["optimizer"], "train.optimizer")
    if cfg["pretrain"] is not None:
        out["pretrain"] = {**cfg["pretrain"], "optimizer": resolve_optimizer(
            cfg["pretrain"]["optimizer"], "pretrain.optimizer")}
    return out


@dataclass
class Setup:
    """Everything built from the config before the first step."""

    cfg: dict
    data: Prepared
    device: torch.device
    trainer: Trainer
    groups: Groups


def channels_last_for(setting: bool | str, device: torch.device) -> bool:
    """auto: channels_last on the CPU, where oneDNN's convolutions are faster in it (a training
    step, 2-core EPYC: LeNet 1.08-1.25x, small CNN 1.36-1.58x, ResNet-32 1.31x, ResNet-50 on
    MNIST 1.37x, ResNeXt-18 1.04-1.17x; ResNet-32 with GroupNorm 0.96-0.98x). Elsewhere off
    until measured: no GPU was available to this project."""
    return device.type == "cpu" if setting == "auto" else bool(setting)


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
    plan = build_plan(cfg["remedy"], images=images, targets=targets, num_classes=data.num_classes,
                      minority_classes=data.minority, epochs=tr["epochs"], generator=gen)
    model = build_model(cfg["model"]["backbone"], in_channels=data.channels,
                        num_classes=data.num_classes, image_size=data.image_size, head=plan.head,
                        **cfg["model"]["params"]).to(device)
    channels_last = channels_last_for(tr["channels_last"], device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    normalizer = Normalizer.fit(data.train.images, device)
    optimizer = build_optimizer(model.parameters(), tr["optimizer"])
    trainer = Trainer(
        model, plan, normalizer=normalizer, augment=BatchAugment(**cfg["data"]["augment"]),
        optimizer=optimizer, scheduler=build_scheduler(optimizer, tr["schedule"], tr["epochs"]),
        device=device, amp=tr["amp"], grad_clip=tr["grad_clip"], batch_size=tr["batch_size"],
        eval_batch_size=ev["batch_size"], generator=gen, channels_last=channels_last,
        freeze_backbone_epochs=cfg["model"]["freeze_backbone_epochs"],
        log_every=cfg["logging"]["log_every"], compile=tr["compile"])
    groups = Groups.make(plan.class_counts, data.minority, ev["many_shot"], ev["few_shot"])
    return Setup(cfg=cfg, data=data, device=device, trainer=trainer, groups=groups)


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


def rng_states() -> dict:
    """Global RNG states as plain data (tensors, lists, ints): loadable with weights_only."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {"torch": torch.get_rng_state(), "python": random.getstate(),
            "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def set_rng_states(st: dict) -> None:
    torch.set_rng_state(st["torch"])
    random.setstate(st["python"])
    name, keys, pos, has_gauss, cached = st["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    if st.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def checkpoint(setup: Setup, path: Path) -> None:
    atomic_torch_save(path, {"format": "imbal", "version": CHECKPOINT_VERSION,
                             **setup.trainer.state_dict(), "rng": rng_states()})


def resume_state(setup: Setup, run_dir: Path) -> None:
    ckpt = load_checkpoint(run_dir / "checkpoints" / "last.pt", resume=True)
    optimizer = setup.trainer.optimizer
    # How the update runs (fused on CUDA, foreach on the CPU) is this machine's choice, not
    # the checkpoint's: a run started on a GPU may be resumed on a CPU.
    how = [{k: g[k] for k in ("foreach", "fused") if k in g} for g in optimizer.param_groups]
    try:
        setup.trainer.load_state_dict(ckpt)
    except (KeyError, RuntimeError, ValueError) as err:
        raise UserError(f"checkpoint {run_dir}/checkpoints/last.pt does not match this config: "
                        f"{str(err).splitlines()[0][:160]}") from None
    for group, kept in zip(optimizer.param_groups, how, strict=True):
        group.update(kept)
    set_rng_states(ckpt["rng"])
