"""The pretext-task registry and what every task shares: option parsing, soft cross-entropy.

A task is an nn.Module holding only its own head(s); the backbone (the classifier's
`.features`) is passed to it on every call, so the very same module is pretrained in place and
handed over to the supervised stage. A registered builder has the signature

    builder(params: dict, *, feature_dim, in_channels, image_size, num_classes, generator)
        -> PretextTask

and carries `.params_model`, its TaskParams subclass. `params` is the config's
`pretrain.params` (validated by that model); `generator` is a CPU torch.Generator for choices
made once at build time (jigsaw's subset of permutations).

The Trainer's step (through imbal.pretext.stage.PretextObjective) calls, per batch (x:
normalised float images, y: labels or None):
    inputs, target = task.make_batch(x, y, generator, train)   # transform, targets
    scores = task(features, inputs)                              # under autocast
    logp = task.log_probs(scores.float())                        # float32
    loss = task.loss(logp, target)
    acc = task.accuracy(scores, target)                          # fraction right, no host sync
and, in evaluation only (jigsaw's decoding may copy to the CPU once per batch),
    sums = task.stats(logp, target, loss)                        # device tensor of sums
and task.summarize(summed stats) -> {metric: float} once per epoch.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, ValidationError
from torch import nn

from imbal.config import format_validation_error
from imbal.errors import UserError
from imbal.registry import Registry

TASKS = Registry("pretext task")


class TaskParams(BaseModel):
    """Base of every task's options: unknown keys are refused."""

    model_config = ConfigDict(extra="forbid")


def parse_params(model: type[TaskParams], params: Any, task: str,
                 where: str = "pretrain.params") -> TaskParams:
    """Validate a task's options (config key `where`); any problem is one line naming the key."""
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise UserError(f"{where} for task '{task}' must be a mapping, got {params!r}")
    try:
        return model.model_validate(params)
    except ValidationError as err:
        raise UserError(f"pretext task '{task}': "
                        f"{format_validation_error(err, model, prefix=where + '.')}") from None


def soft_cross_entropy(logp: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of -sum_k target_k * log p_k (equals CE for one-hot targets)."""
    return -(target * logp).sum(dim=1).mean()


class PretextTask(nn.Module):
    """Interface of a pretext task (see the module docstring); subclasses fill it in."""

    name: str = ""
    stat_names: tuple[str, ...] = ()  # what `stats` sums, in order; the last one is the count

    def make_batch(self, x: torch.Tensor, y: torch.Tensor | None, generator: torch.Generator,
                   train: bool) -> tuple[torch.Tensor, Any]:
        raise NotImplementedError

    def log_probs(self, scores: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def loss(self, logp: torch.Tensor, target: Any) -> torch.Tensor:
        raise NotImplementedError

    def accuracy(self, scores: torch.Tensor, target: Any) -> torch.Tensor:
        """Training accuracy of a batch as a 0-d device tensor in [0, 1] (the progress bar's
        and the epoch row's `acc`): cheap, no decoding, no host sync."""
        raise NotImplementedError

    def stats(self, logp: torch.Tensor, target: Any, loss: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def summarize(self, sums: list[float]) -> dict[str, float]:
        raise NotImplementedError

    def describe(self) -> str:
        return self.name


def check_params(name: str, params: Any, where: str = "pretrain.params") -> None:
    """Refuse an unknown task or bad options before any data is read (needs no data sizes;
    the checks that do, such as class ranges, run when the task is built). `where` is the
    config key the options came from, for the message."""
    parse_params(TASKS.get(name).params_model, params, name, where)


def build_task(name: str, params: Any, *, feature_dim: int, in_channels: int, image_size: int,
               num_classes: int, generator: torch.Generator) -> PretextTask:
    return TASKS.build(name, params=params, feature_dim=feature_dim, in_channels=in_channels,
                       image_size=image_size, num_classes=num_classes, generator=generator)
