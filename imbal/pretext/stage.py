"""A pretext task as an objective of the Trainer's one step: the backbone plus the task's head.

A pretext stage (imbal.training.stages) trains the classifier's backbone in place through the
same Trainer step as supervised training (AMP, channels_last, compile, clipping, mid-stage
resume, the non-finite check, the progress bar). This module supplies what is particular to
it: PretextObjective (inputs and targets from the task, the task's loss and accuracy) and the
evaluation of the task's metrics.

Data: the imbalanced training split; with `unlabelled: removed` (`pretrain.use_removed`) also
the images the imbalance removed, drawn as the Trainer's second stream: each step takes a
slice of a permutation of the training images and a slice of a permutation of the removed
ones (each image once an epoch), and the objective concatenates the two. (Before stages, one
permutation ran over the two sets concatenated; the stream split keeps every image once an
epoch and needs no copy of the joined set.) No augmentation of the data config (as before).
The pretext metrics are evaluated at the end of every epoch on the validation images (their
labels are not used except by rotation's symmetric-class rule), or on the test images when
the run has no validation split; the row says which.

Randomness (unchanged by the move to the Trainer): the stage's task head is initialised after
torch.manual_seed(seeds.train + BUILD_SEED_OFFSET + i) (i: the stage's index in the run), and
the stage draws batch order, unlabelled order, rotations and permutations from its own
generator (seeds.train + TRAIN_SEED_OFFSET + i), never from the run's; the global RNG state
(dropout) is saved when the stage starts and restored when it ends (the checkpoint keeps it,
so a stage resumed halfway ends the same way). So a run with pretraining starts its supervised
stage with the same head initialisation, batch order and global RNG state as the same run
without it: only the backbone weights differ.

Logging: one metrics.jsonl row per pretext epoch, {"stage": name, "epoch": k, "task": ...,
"eval_split": ..., "pretrain": {...}}; TensorBoard tags <stage>/pretrain/<metric>. The
backbone is saved to checkpoints/pretrained.pt when the stage ends.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from imbal.pretext.base import PretextTask, build_task
from imbal.training.objective import Batch

TRAIN_SEED_OFFSET = 1_000_003  # pretext batch order, rotations, permutations
EVAL_SEED_OFFSET = 2_000_003  # the fixed draws of the evaluation (same each epoch)
BUILD_SEED_OFFSET = 3_000_003  # head initialisation, permutation subset


class PretextModel(nn.Module):
    """The module the step runs in a pretext stage: backbone features, then the task head."""

    def __init__(self, features: nn.Module, task: PretextTask):
        super().__init__()
        self.features, self.task = features, task

    def forward(self, inputs: Any) -> torch.Tensor:
        return self.task(self.features, inputs)


class PretextObjective:
    """Inputs and targets from the task; the task's loss. The labelled images and the second
    stream's images (when the stage has one) are one pool for the task."""

    uses_unlabelled = True

    def __init__(self, features: nn.Module, task: PretextTask):
        self.task = task
        self.module = PretextModel(features, task)
        self._images = 0

    def inputs(self, batch: Batch, generator: torch.Generator) -> tuple[Any, Any]:
        x, y = batch.x, batch.y
        if batch.u is not None:
            x, y = torch.cat([x, batch.u]), torch.cat([y, batch.u_y])
        self._images = batch.x.shape[0]  # a shape: no sync
        return self.task.make_batch(x, y, generator, train=True)

    def loss(self, scores: torch.Tensor, target: Any) -> torch.Tensor:
        return self.task.loss(self.task.log_probs(scores.float()), target)

    def correct(self, scores: torch.Tensor, target: Any) -> torch.Tensor:
        # The trainer divides by the labelled images of the step: scale the task's accuracy.
        return self.task.accuracy(scores, target) * self._images

    def state_dict(self) -> dict:
        return self.task.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.task.load_state_dict(state)

    @torch.inference_mode()
    def evaluate(self, forward, prepare, autocast, images: torch.Tensor, labels: torch.Tensor,
                 batch_size: int, generator: torch.Generator) -> dict[str, float]:
        """The task's metrics over a split (fixed draws from `generator`), one host read."""
        self.module.eval()
        task = self.task
        sums = torch.zeros(len(task.stat_names), device=labels.device)
        for start in range(0, labels.numel(), batch_size):
            x = prepare(images[start:start + batch_size], train=False)
            y = labels[start:start + batch_size]
            inputs, target = task.make_batch(x, y, generator, train=False)
            with autocast():
                scores = forward(inputs)
            logp = task.log_probs(scores.float())
            sums += task.stats(logp, target, task.loss(logp, target))
        return task.summarize(sums.tolist())


def build_pretext(task: str, params: dict, *, features: nn.Module, feature_dim: int,
                  in_channels: int, image_size: int, num_classes: int, seed: int,
                  device: torch.device) -> PretextObjective:
    """The task (its head initialised from torch's global RNG, which the caller has seeded
    with seed + BUILD_SEED_OFFSET + i) as an objective on `features`."""
    built = build_task(task, params, feature_dim=feature_dim, in_channels=in_channels,
                       image_size=image_size, num_classes=num_classes,
                       generator=torch.Generator().manual_seed(seed))
    return PretextObjective(features, built.to(device))
