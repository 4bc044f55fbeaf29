"""The Trainer: one training step for every stage, one AMP path, no per-step host sync.

A stage (imbal.training.stages) plugs its parts into the Trainer with `begin_stage`: what
trains (an objective: a module and its loss, objective.py), the data it draws (labelled
images, an optional sampler, an optional unlabelled stream), its optimizer and schedule, batch
size, batch transforms, epoch hooks and whether the backbone is frozen. The step itself never
changes: supervised training, classifier re-training and pretext pretraining all go through
`_step`, so AMP, channels_last, torch.compile, gradient clipping, mid-epoch resume, the
non-finite check and the progress bar behave the same in each. Metrics are accumulated as
device tensors and read once per epoch (and every `log_every` steps for the progress bar).
"""

from __future__ import annotations

import contextlib
import math
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from imbal.data.batches import BatchAugment, Normalizer, batch_slices, num_batches
from imbal.errors import Interrupted, NonFiniteLoss, UserError
from imbal.metrics import confusion_update
from imbal.training.objective import Batch


def amp_dtype_for(setting: str, device: torch.device) -> torch.dtype | None:
    """auto: float16 on CUDA, full precision on CPU; bfloat16 on request anywhere."""
    table = {"off": None, "float16": torch.float16, "bfloat16": torch.bfloat16,
             "auto": torch.float16 if device.type == "cuda" else None}
    dtype = table[setting]
    if dtype is torch.float16 and device.type != "cuda":
        raise UserError("train.amp float16 needs CUDA; use bfloat16 or off on the CPU")
    return dtype


@dataclass
class EpochCursor:
    """Where training stands; saved in checkpoints so a stopped epoch resumes at its step, in
    its stage. `epoch` counts within the stage; best_* belong to the last supervised stage."""

    stage: int = 0
    epoch: int = 0
    step: int = 0
    order: torch.Tensor | None = None
    order_u: torch.Tensor | None = None  # the unlabelled stream's draw for this epoch
    sums: torch.Tensor | None = None  # [loss*n, correct, n, first bad step] on the device
    best_score: float = float("-inf")
    best_epoch: int = -1
    history: list[dict] = field(default_factory=list)
    outer_rng: dict | None = None  # global RNG to restore when a pretext stage ends

    KEYS = ("stage", "epoch", "step", "order", "order_u", "sums", "best_score", "best_epoch",
            "history", "outer_rng")

    def state_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.KEYS}

    def load_state_dict(self, d: dict, device: torch.device) -> None:
        for k, v in d.items():
            setattr(self, k, v.to(device) if isinstance(v, torch.Tensor) else v)


class StopFlag:
    """Turns SIGINT/SIGTERM into a flag the step loop checks, so a step is never cut in half."""

    def __init__(self):
        self.signum: int | None = None
        self._old: dict[int, object] = {}

    def __enter__(self) -> StopFlag:
        for s in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[s] = signal.signal(s, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def _handle(self, signum, frame) -> None:
        if self.signum is not None:  # second signal: give up at once
            raise KeyboardInterrupt
        self.signum = signum

    def __exit__(self, *exc) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)


@dataclass
class StageParts:
    """What one stage plugs into the Trainer (built by imbal.training.stages)."""

    name: str
    objective: Any  # objective.py: .module, .inputs(batch, gen), .loss(out, t), .correct(out, t)
    images: torch.Tensor  # labelled stream, on the device
    targets: torch.Tensor
    sampler: Any  # ClassSampler or None (a random permutation per epoch)
    optimizer: Optimizer
    scheduler: LRScheduler
    batch_size: int
    generator: torch.Generator  # the step's randomness (order, augmentation, transforms, task)
    augment: BatchAugment
    transform: Any = None  # batch transform (remedies/batch.py) or None
    epoch_hooks: list[Callable[[int], None]] = field(default_factory=list)
    head_only: bool = False  # trains: head (backbone and its BatchNorm statistics frozen)
    freeze_backbone_epochs: int = 0
    unlabelled: Any = None  # Split on the device, or None: no second stream
    unlabelled_batch_size: int | None = None  # None: each unlabelled image once an epoch
    unlabelled_views: int = 1  # augmented copies of each unlabelled image (Batch.u, view-major)
    new_optimizer: bool = True  # False: the previous stage's optimizer continues
    batch_filter: Any = None  # (idx, targets, step) -> idx: data/per_batch.py's mask, or None
    step_hooks: list[Callable[[], None]] = field(default_factory=list)  # after each step (MaxNorm)


class Trainer:
    def __init__(self, model: nn.Module, *, normalizer: Normalizer, device: torch.device,
                 generator: torch.Generator, amp: str = "auto", grad_clip: float | None = None,
                 eval_batch_size: int = 1024, channels_last: bool = False, log_every: int = 50,
                 compile: bool = False, ema_decay: float | None = None):
        self.model = model  # the classifier that trains
        # train.ema: an exponential moving average of the classifier's weights (and BatchNorm
        # statistics), updated after every step; when on, it is what evaluation, best.pt and
        # results see. AveragedModel copies the weights at its first update.
        self.ema = (None if ema_decay is None else AveragedModel(
            model, multi_avg_fn=get_ema_multi_avg_fn(ema_decay), use_buffers=True))
        self.normalizer = normalizer
        self.device, self.generator = device, generator  # generator: the run's (seeds.train)
        self.amp_dtype = amp_dtype_for(amp, device)
        self.grad_clip, self.eval_batch_size = grad_clip, eval_batch_size
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.log_every = log_every
        self.compile = compile
        self._compiled: dict[int, nn.Module] = {}
        self.model_forward = self._forward_of(self.eval_model)
        self.cursor = EpochCursor()
        self.stop = StopFlag()
        self.stage: StageParts | None = None
        self.batch_filter, self._sizes = None, None
        self.optimizer = self.scheduler = None
        self.scaler = self._new_scaler()
        self.eval_offset: torch.Tensor | None = None

    @property
    def eval_model(self) -> nn.Module:
        """The classifier evaluation, best.pt and results use: the EMA's copy when train.ema
        is on, else the one that trains."""
        return self.model if self.ema is None else self.ema.module

    def _forward_of(self, module: nn.Module) -> nn.Module:
        # Compiled forward for the arithmetic; state (checkpoints) always from the plain module.
        if not self.compile:
            return module
        if id(module) not in self._compiled:
            self._compiled[id(module)] = torch.compile(module)
        return self._compiled[id(module)]

    def _new_scaler(self) -> torch.amp.GradScaler:
        return torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype is torch.float16)

    def begin_stage(self, parts: StageParts) -> None:
        """Plug a stage in. A new optimizer gets a new GradScaler (the loss scale belongs to
        the optimizer's run); `optimizer: continue` keeps both."""
        self.stage = parts
        self.objective, self.module = parts.objective, parts.objective.module
        self.forward = self._forward_of(self.module)
        self.params = [p for p in self.module.parameters()]  # for gradient clipping
        self.images, self.targets = parts.images, parts.targets
        self.augment, self.transform = parts.augment, parts.transform
        self.batch_filter = parts.batch_filter
        self.batch_size, self.step_generator = parts.batch_size, parts.generator
        if parts.new_optimizer or self.optimizer is None:
            self.scaler = self._new_scaler()
        self.optimizer, self.scheduler = parts.optimizer, parts.scheduler

    # ---- one place where inputs become model-ready floats -------------------------------------
    def prepare(self, images: torch.Tensor, train: bool) -> torch.Tensor:
        x = self.normalizer(images.to(self.device, non_blocking=True))
        if train and self.augment.active:
            x = self.augment(x, self.step_generator)
        return x.contiguous(memory_format=self.memory_format)

    def autocast(self):
        # Disabled autocast is a no-op that still costs ~10 us of Python per call: skip it.
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    # ---- training -----------------------------------------------------------------------------
    def _frozen(self, epoch: int) -> bool:
        return self.stage.head_only or epoch < self.stage.freeze_backbone_epochs

    def _start_epoch(self, epoch: int) -> None:
        c, st = self.cursor, self.stage
        for hook in st.epoch_hooks:
            hook(epoch)
        frozen = self._frozen(epoch)
        for p in self.model.features.parameters():
            p.requires_grad_(not frozen)
        if c.order is None:  # not resuming mid-epoch: draw this epoch's order(s)
            c.order = (st.sampler.epoch_indices(epoch, self.step_generator) if st.sampler is not None
                       else torch.randperm(self.targets.numel(), device=self.device,
                                           generator=self.step_generator))
            c.order_u = self._draw_unlabelled(c.order.numel())
            c.step = 0
            # float64: a diverging run's finite float32 losses must not overflow the sum
            c.sums = torch.tensor([0.0, 0.0, 0.0, -1.0], device=self.device, dtype=torch.float64)

    def _steps(self, n: int) -> tuple[int, bool]:
        # A trailing batch of one image would break BatchNorm; drop it only in that case.
        drop_last = n % self.batch_size == 1
        return num_batches(n, self.batch_size, drop_last), drop_last

    def _unlabelled_per_step(self, n: int) -> int:
        u = self.stage.unlabelled.targets.numel()
        return self.stage.unlabelled_batch_size or math.ceil(u / self._steps(n)[0])

    def _draw_unlabelled(self, n: int) -> torch.Tensor | None:
        """The second stream's draw for an epoch of n labelled images: one permutation of the
        unlabelled set, spread over the epoch's steps (the last slices may be short); with
        unlabelled_batch_size, as many permutations, end to end, as the steps need."""
        st = self.stage
        if st.unlabelled is None:
            return None
        u = st.unlabelled.targets.numel()
        need = self._steps(n)[0] * self._unlabelled_per_step(n)
        rounds = 1 if st.unlabelled_batch_size is None else math.ceil(need / u)
        return torch.cat([torch.randperm(u, device=self.device, generator=self.step_generator)
                          for _ in range(rounds)])[:need]

    def _unlabelled_batch(self, step: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        c = self.cursor
        if c.order_u is None:
            return None, None
        k = self._u_per_step
        idx = c.order_u[step * k:(step + 1) * k]
        u, views = self.stage.unlabelled, self.stage.unlabelled_views
        raw = u.images[idx]
        x = (self.prepare(raw, train=True) if views == 1 else
             torch.cat([self.prepare(raw, train=True) for _ in range(views)]))
        return x, u.targets[idx]

    def _step(self, idx: torch.Tensor, step: int) -> None:
        if self.batch_filter is not None:  # batches of varying size: count each one's images
            idx = self.batch_filter(idx, self.targets, step)
            self._sizes[step] = idx.numel()
            if idx.numel() == 0:
                return
        x = self.prepare(self.images[idx], train=True)
        y = self.targets[idx]
        if self.transform is not None:  # after the data's own augmentation; y may become N×C
            x, y = self.transform(x, y, self.step_generator)
        inputs, target = self.objective.inputs(Batch(x, y, *self._unlabelled_batch(step)),
                                               self.step_generator)
        with self.autocast():
            out = self.forward(inputs)
        loss = self.objective.loss(out, target)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.params, self.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        for hook in self.stage.step_hooks:  # constraints on the updated parameters (MaxNorm)
            hook()
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        with torch.no_grad():  # two writes per step; _fold turns them into cursor.sums
            self._losses[step] = loss
            self._correct[step] = self.objective.correct(out, target)

    def _fold(self) -> torch.Tensor:
        """Add the steps since the last fold to cursor.sums (on the device, no sync). Folded
        at the end of an epoch and when stopped, never for the progress bar (which peeks): the
        summation order, and so the logged loss, must not depend on whether a bar is shown."""
        c, lo, hi = self.cursor, self._folded, self.cursor.step
        if hi > lo:
            s, part = c.sums, self._partial(lo, hi)
            s[:3] += part[:3]
            s[3] = torch.where((part[3] >= 0) & (s[3] < 0), part[3], s[3])
            self._folded = hi
        return c.sums

    def _partial(self, lo: int, hi: int) -> torch.Tensor:
        """[loss*n, correct, n, first bad step or -1] of steps lo..hi-1, float64."""
        losses = self._losses[lo:hi]
        steps = torch.arange(lo, hi, device=losses.device)
        sizes = ((self._epoch_images - steps * self.batch_size).clamp_(max=self.batch_size)
                 if self._sizes is None else self._sizes[lo:hi]).double()  # per-batch masks: counted
        bad = ~torch.isfinite(losses)
        first_bad = (bad.int().argmax() + lo).double()  # argmax: the first True
        return torch.stack([(torch.where(bad, 0.0, losses).double() * sizes).sum(),
                            self._correct[lo:hi].sum().double(), sizes.sum(),
                            torch.where(bad.any(), first_bad, -1.0)])

    def _peek(self) -> list[float]:
        """The epoch's sums so far, for the progress bar, without folding them."""
        c = self.cursor
        if c.step <= self._folded:
            return c.sums.tolist()
        return (c.sums[:3] + self._partial(self._folded, c.step)[:3]).tolist()

    def _check_finite(self, epoch: int, where: str) -> None:
        sums = self._fold()
        first_bad = int(sums[3])
        if first_bad >= 0:
            raise NonFiniteLoss(f"non-finite loss at epoch {epoch + 1}, step {first_bad + 1}{where}")
        if not math.isfinite(float(sums[0])):
            raise NonFiniteLoss(f"the training loss summed over epoch {epoch + 1}{where} is not finite "
                                "(the run diverged)")

    def train_epoch(self, epoch: int, bar_factory: Callable | None = None, where: str = "") -> dict:
        """One epoch (0-based within the stage) of the current stage; `where` names the stage
        in a non-finite-loss message."""
        self.module.train()
        if self._frozen(epoch):
            self.model.features.eval()  # frozen: keep BatchNorm statistics too
        self._start_epoch(epoch)
        c = self.cursor
        total, drop_last = self._steps(c.order.numel())
        self._epoch_images = min(c.order.numel(), total * self.batch_size)
        self._u_per_step = self._unlabelled_per_step(c.order.numel()) if c.order_u is not None else 0
        self._losses = torch.zeros(total, device=self.device)  # per step, read by _fold
        self._correct = torch.zeros(total, device=self.device)
        self._sizes = None if self.batch_filter is None else torch.zeros(total, device=self.device)
        self._folded = c.step
        bar = bar_factory(total, c.step) if bar_factory else None  # counts batches
        t0 = time.perf_counter()
        for step, idx in enumerate(batch_slices(c.order, self.batch_size, drop_last)):
            if step < c.step:
                continue
            self._step(idx, step)
            c.step = step + 1
            if bar is not None:
                bar.update(1)
                if c.step % self.log_every == 0:
                    s = self._peek()
                    bar.set_postfix(loss=f"{s[0] / max(s[2], 1):.4f}", acc=f"{100 * s[1] / max(s[2], 1):.1f}")
            if self.stop.signum is not None:
                if bar is not None:
                    bar.close()
                self._fold()  # the checkpoint saves cursor.sums
                raise Interrupted(self.stop.signum)
        if bar is not None:
            bar.close()
        self._check_finite(epoch, where)
        loss_sum, correct, n, _ = c.sums.tolist()
        seconds = time.perf_counter() - t0
        images = n + (c.order_u.numel() if c.order_u is not None else 0)
        lr = self.optimizer.param_groups[0]["lr"]  # the lr this epoch trained with
        self.scheduler.step()
        c.order, c.order_u, c.sums, c.step = None, None, None, 0
        c.epoch = epoch + 1
        return {"loss": loss_sum / max(n, 1), "acc": 100.0 * correct / max(n, 1),
                "images": int(images), "images_per_s": images / max(seconds, 1e-9), "seconds": seconds,
                "lr": lr}

    # ---- evaluation ---------------------------------------------------------------------------
    @torch.inference_mode()
    def confusion(self, images: torch.Tensor, targets: torch.Tensor, num_classes: int) -> torch.Tensor:
        """The classifier's confusion matrix (whatever stage is running), with the evaluation
        logit offset of the supervised stage last begun."""
        self.eval_model.eval()
        conf = torch.zeros(num_classes, num_classes, dtype=torch.long, device=self.device)
        offset = self.eval_offset
        for start in range(0, targets.numel(), self.eval_batch_size):
            x = self.prepare(images[start:start + self.eval_batch_size], train=False)
            with self.autocast():
                logits = self.model_forward(x).float()
            if offset is not None:
                logits = logits + offset
            y = targets[start:start + self.eval_batch_size].to(self.device, non_blocking=True)
            confusion_update(conf, logits.argmax(1), y)
        return conf

    # ---- checkpoint state ---------------------------------------------------------------------
    def state_dict(self) -> dict:
        own = self.step_generator is not self.generator  # a pretext stage's generator
        return {"model": self.model.state_dict(), "objective": self.objective.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
                "cursor": self.cursor.state_dict(), "generator": self.generator.get_state(),
                "ema": None if self.ema is None else self.ema.state_dict(),
                "stage_generator": self.step_generator.get_state() if own else None}

    def load_state_dict(self, d: dict) -> None:
        """Restore a checkpoint into the stage it was written in (begun already)."""
        self.model.load_state_dict(d["model"])
        self.objective.load_state_dict(d.get("objective", {}))  # absent before stages existed
        self.optimizer.load_state_dict(d["optimizer"])
        self.scheduler.load_state_dict(d["scheduler"])
        self.scaler.load_state_dict(d["scaler"])
        if self.ema is not None:
            if d.get("ema") is None:
                raise ValueError("train.ema is on but the checkpoint has no moving average")
            self.ema.load_state_dict(d["ema"])
        self.cursor.load_state_dict(d["cursor"], self.device)
        self.generator.set_state(d["generator"])
        if d.get("stage_generator") is not None:
            self.step_generator.set_state(d["stage_generator"])
