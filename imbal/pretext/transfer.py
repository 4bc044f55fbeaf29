"""Hand-over of a pretrained backbone: save it from the pretext stage, load it into a classifier.

The saved file is an ordinary imbal checkpoint (loadable by imbal.training.runs.load_checkpoint, data
only) whose "model" holds just the backbone, keys prefixed "features." as in a Classifier's
state_dict; so a run's best.pt works as a source too (its head is ignored).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from imbal.errors import UserError
from imbal.training.runs import atomic_torch_save, load_checkpoint

PREFIX = "features."


def save_pretrained(path: Path, features: nn.Module, *, task: str, epoch: int,
                    extra: dict | None = None) -> None:
    state = {PREFIX + k: v.detach().cpu() for k, v in features.state_dict().items()}
    atomic_torch_save(path, {"format": "imbal", "model": state, "task": task, "epoch": epoch,
                             **(extra or {})})


def resolve_source(source: str | Path) -> Path:
    """A run directory (its checkpoints/pretrained.pt, else checkpoints/best.pt) or a .pt file."""
    p = Path(source).expanduser()
    if p.is_dir():
        for name in ("pretrained.pt", "best.pt"):
            if (p / "checkpoints" / name).is_file():
                return p / "checkpoints" / name
        raise UserError(f"model.init_from {source}: no checkpoints/pretrained.pt or "
                        f"checkpoints/best.pt in that directory")
    if not p.is_file():
        raise UserError(f"model.init_from {source}: no such run directory or checkpoint file")
    return p


def _layers(keys: list[str]) -> list[str]:
    """Module names of parameter/buffer keys, in order, without repeats (conv.0.weight -> conv.0)."""
    seen: dict[str, None] = {}
    for k in keys:
        seen.setdefault(k.rpartition(".")[0] or k, None)
    return list(seen)


def _few(names: list[str], k: int = 4) -> str:
    return ", ".join(names[:k]) + (f" (+{len(names) - k} more)" if len(names) > k else "")


def load_backbone(model: nn.Module, source: str | Path) -> list[str]:
    """Copy every backbone tensor (`features.*`) of `source` into `model.features`.

    Refused (UserError) when a backbone tensor of the model is missing from the checkpoint, has
    another shape, or the checkpoint holds backbone tensors the model lacks (another
    architecture). The head is left as built. Returns lines saying what was transferred.
    """
    path = resolve_source(source)
    ckpt = load_checkpoint(path)
    theirs = {k[len(PREFIX):]: v for k, v in ckpt["model"].items() if k.startswith(PREFIX)}
    ours = model.features.state_dict()
    missing = [k for k in ours if k not in theirs]
    shape = [f"{k} {tuple(theirs[k].shape)} vs {tuple(v.shape)}" for k, v in ours.items()
             if k in theirs and theirs[k].shape != v.shape]
    extra = [k for k in theirs if k not in ours]
    where = f"model.init_from {source}" + (f" (a {ckpt['backbone']} backbone)"
                                            if "backbone" in ckpt else "")
    if missing:
        raise UserError(f"{where}: backbone tensors missing from {path.name}: {_few(missing)}")
    if shape:
        raise UserError(f"{where}: backbone shapes differ (checkpoint vs model): {_few(shape, 2)}")
    if extra:
        raise UserError(f"{where}: checkpoint has backbone tensors this model lacks (another "
                        f"architecture?): {_few(extra)}")
    with torch.no_grad():
        for k, v in ours.items():
            v.copy_(theirs[k])
    n_params = sum(1 for _ in model.features.parameters())
    origin = f"{path.name}" + (f", {ckpt['task']} pretext epoch {ckpt['epoch']}"
                               if "task" in ckpt else f", epoch {ckpt.get('epoch', '?')}")
    layers = _layers(list(ours))
    return [f"init_from {source} ({origin}): {len(ours)} backbone tensors transferred "
            f"({n_params} parameters + {len(ours) - n_params} buffers) in {len(layers)} layers "
            f"({_few(layers, 12)}); head is new"]
