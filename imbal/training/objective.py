"""What a stage trains, as the Trainer's one step sees it: a module and an objective.

The step (trainer.py) does, for every stage:

    batch = Batch(x, y, u, u_y)                       # prepared labelled (+ unlabelled) images
    inputs, target = objective.inputs(batch, generator)
    out = forward(inputs)                             # objective.module, under autocast
    loss = objective.loss(out, target)                # float32
    correct = objective.correct(out, target)          # a device tensor, never read per step

An objective has `.module` (the nn.Module whose forward the step runs, and whose parameters
are clipped), `inputs`, `loss`, `correct`, and `state_dict`/`load_state_dict` for what it
owns beyond the classifier (a pretext task's head). `uses_unlabelled` says whether it reads the
second stream (stages refuse `unlabelled:` for one that would ignore it).

Supervised training (plain, with remedies, classifier re-training) is SupervisedObjective:
the classifier and the remedy plan's loss. Pretext pretraining is imbal.pretext.stage's
PretextObjective: the backbone plus the task's head, and the task's loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(slots=True)
class Batch:
    """One step's data. x: labelled images, normalised and augmented, in the model's memory
    format; y: int64 class ids (N) or soft targets (N×C) after the stage's batch transforms.
    u: the unlabelled stream's images, prepared the same way (None without a second stream);
    u_y: their labels where the source has them (the removed images do), for rules that need
    an image's class (rotation's symmetric classes), never as a class target."""

    x: torch.Tensor
    y: torch.Tensor
    u: torch.Tensor | None = None
    u_y: torch.Tensor | None = None


class SupervisedObjective:
    """The classifier trained on the labels with the stage's remedy loss (ComposedLoss)."""

    uses_unlabelled = False

    def __init__(self, model: nn.Module, loss: nn.Module):
        self.module, self.loss_fn = model, loss

    def inputs(self, batch: Batch, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        return batch.x, batch.y

    def loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.loss_fn(logits.float(), y)

    def correct(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        # Soft targets (N×C, from a batch transform) count as their most likely class. The
        # test is on the shape, known without a sync.
        hard = y if y.dim() == 1 else y.argmax(1)
        return (logits.argmax(1) == hard).sum()

    def state_dict(self) -> dict:
        return {}  # the classifier is saved as the model; the loss is rebuilt from the config

    def load_state_dict(self, state: dict) -> None:
        pass
