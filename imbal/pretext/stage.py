"""The pretext stage of a run: train the classifier's backbone on a pretext task, in place.

Runs before the supervised epochs (called by imbal.training.loop). Data: the imbalanced training split,
plus the images the imbalance removed when `pretrain.use_removed` is set; moved to the device
once and batched by index tensors. The pretext metrics are evaluated at the end of every epoch
on the validation images (their labels are not used except by rotation's symmetric-class rule),
or on the test images when the run has no validation split; the row says which.

Randomness: the stage runs inside torch.random.fork_rng, its task head is initialised from a
seed derived from seeds.train, and it draws from its own generators (seeds.train + offsets),
never from the trainer's. So a run with pretraining starts its supervised stage with the same
head initialisation, batch order and global RNG state as the same run without it: only the
backbone weights differ.

Logging: one metrics.jsonl row per pretext epoch, {"stage": "pretrain", "epoch": k,
"pretrain": {...}}, TensorBoard step k (1-based) under the tags pretrain/<metric>, which the
supervised stage never uses. No learning-rate schedule (constant lr); train.grad_clip and
train.amp apply here too. The backbone is saved to checkpoints/pretrained.pt at the end.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from imbal.console import say
from imbal.data.batches import batch_slices
from imbal.errors import NonFiniteLoss
from imbal.pretext.base import PretextTask, build_task
from imbal.pretext.transfer import save_pretrained
from imbal.training.optim import build_optimizer

TRAIN_SEED_OFFSET = 1_000_003  # pretext batch order, rotations, permutations
EVAL_SEED_OFFSET = 2_000_003  # the fixed draws of the evaluation (same each epoch)
BUILD_SEED_OFFSET = 3_000_003  # head initialisation, permutation subset


def pretext_data(data, use_removed: bool, device: torch.device):
    """(images, labels) on the device: train split, plus the removed images when asked."""
    images, labels = data.train.images, data.train.targets
    if use_removed and data.removed.targets.numel():
        images = torch.cat([images, data.removed.images])
        labels = torch.cat([labels, data.removed.targets])
    return images.to(device), labels.to(device)


def eval_split(data):
    """The split the pretext metrics are computed on: validation, else test (images only)."""
    return ("val", data.val) if data.val.targets.numel() else ("test", data.test)


def _cuda_devices(device: torch.device) -> list[int]:
    if device.type != "cuda":
        return []
    return [device.index if device.index is not None else torch.cuda.current_device()]


@torch.inference_mode()
def evaluate(task: PretextTask, features, trainer, images: torch.Tensor, labels: torch.Tensor,
             batch_size: int, generator: torch.Generator) -> dict[str, float]:
    features.eval()
    task.eval()
    sums = torch.zeros(len(task.stat_names), device=trainer.device)
    for start in range(0, labels.numel(), batch_size):
        x = trainer.normalizer(images[start:start + batch_size].to(trainer.device))
        y = labels[start:start + batch_size].to(trainer.device)
        inputs, target = task.make_batch(x, y, generator, train=False)
        with trainer.autocast():
            scores = task(features, inputs)
        logp = task.log_probs(scores.float())
        sums += task.stats(logp, target, task.loss(logp, target))
    return task.summarize(sums.tolist())


def _train_epoch(task, features, trainer, optimizer, scaler, images, labels, batch_size,
                 generator) -> dict[str, float]:
    features.train()
    task.train()
    n = labels.numel()
    order = torch.randperm(n, device=images.device, generator=generator)
    sums = torch.tensor([0.0, 0.0, -1.0], device=images.device)  # loss*n, n, first bad step
    params = [p for group in optimizer.param_groups for p in group["params"]]
    t0 = time.perf_counter()
    # a trailing batch of one image would break BatchNorm; drop it only then (as the trainer)
    for step, idx in enumerate(batch_slices(order, batch_size, n % batch_size == 1)):
        x = trainer.normalizer(images[idx])
        inputs, target = task.make_batch(x, labels[idx], generator, train=True)
        with trainer.autocast():
            scores = task(features, inputs)
        loss = task.loss(task.log_probs(scores.float()), target)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if trainer.grad_clip is not None:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(params, trainer.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        with torch.no_grad():
            bad = ~torch.isfinite(loss)
            sums[0] += torch.where(bad, 0.0, loss.detach()) * idx.numel()
            sums[1] += idx.numel()
            sums[2] = torch.where(bad & (sums[2] < 0), float(step), sums[2])
    loss_sum, seen, first_bad = sums.tolist()
    seconds = time.perf_counter() - t0
    return {"loss": loss_sum / max(seen, 1.0), "first_bad": first_bad,
            "images_per_s": seen / max(seconds, 1e-9), "seconds": seconds}


def run_pretrain(setup, *, run_dir: Path, log, quiet: bool) -> dict:
    """Pretrain setup.trainer.model.features on cfg["pretrain"]; returns the last row's metrics."""

    cfg, tr, device = setup.cfg, setup.trainer, setup.device
    pc, seed = cfg["pretrain"], cfg["seeds"]["train"]
    features = tr.model.features
    data = setup.data
    with torch.random.fork_rng(devices=_cuda_devices(device)):
        torch.manual_seed(seed + BUILD_SEED_OFFSET)  # inside fork_rng: restored on exit
        task = build_task(pc["task"], pc["params"], feature_dim=tr.model.feature_dim,
                          in_channels=data.channels, image_size=data.image_size,
                          num_classes=data.num_classes,
                          generator=torch.Generator().manual_seed(seed + BUILD_SEED_OFFSET))
        task.to(device)
        images, labels = pretext_data(data, pc["use_removed"], device)
        split_name, split = eval_split(data)
        ev_images, ev_labels = split.images.to(device), split.targets.to(device)
        batch_size = pc["batch_size"] or cfg["train"]["batch_size"]
        optimizer = build_optimizer(list(features.parameters()) + list(task.parameters()),
                                    pc["optimizer"])
        scaler = torch.amp.GradScaler(device.type, enabled=tr.amp_dtype is torch.float16)
        gen = torch.Generator(device=device).manual_seed(seed + TRAIN_SEED_OFFSET)
        for p in features.parameters():
            p.requires_grad_(True)
        say(f"pretrain: {task.describe()}; {labels.numel()} images"
            f"{' (train + removed)' if pc['use_removed'] else ''}, {pc['epochs']} epochs, "
            f"metrics on the {split_name} images", quiet)
        metrics: dict = {}
        for epoch in range(1, pc["epochs"] + 1):
            stats = _train_epoch(task, features, tr, optimizer, scaler, images, labels,
                                 batch_size, gen)
            if stats.pop("first_bad") >= 0:
                raise NonFiniteLoss(f"non-finite pretext loss in pretrain epoch {epoch}")
            ev = evaluate(task, features, tr, ev_images, ev_labels, batch_size,
                          torch.Generator(device=device).manual_seed(seed + EVAL_SEED_OFFSET))
            metrics = {"train_loss": stats["loss"], "images": labels.numel(),
                       **{f"{split_name}_{k}": v for k, v in ev.items()},
                       "images_per_s": stats["images_per_s"], "seconds": stats["seconds"]}
            log.add({"stage": "pretrain", "epoch": epoch, "task": pc["task"],
                     "eval_split": split_name, "pretrain": metrics}, epoch)
            shown = "  ".join(f"{k} {v:.4f}" if "loss" in k else f"{k} {v:.2f}"
                              for k, v in metrics.items()
                              if k not in ("seconds", "images_per_s", "images"))
            say(f"pretrain {epoch:>3}/{pc['epochs']}  {shown}  "
                f"{stats['images_per_s']:.0f} img/s", quiet)
        save_pretrained(run_dir / "checkpoints" / "pretrained.pt", features, task=pc["task"],
                        epoch=pc["epochs"], extra={"metrics": metrics,
                                                   "backbone": cfg["model"]["backbone"]})
    features.train()
    return metrics
