"""Entering and ending a stage, and each stage kind's epoch row (a small registry of kinds).

`enter_stage(setup, i, fresh)` builds stage i's parts and plugs them into the Trainer; with
fresh=False (resuming in that stage) it builds the same structure and leaves the state to the
checkpoint. `end_stage` does what a kind does when its last epoch is done. Every kind trains
through the same Trainer step; what differs is the objective, the data, and the epoch row.

- supervised: the classifier, the stage's remedy plan (loss, sampler, epoch hooks, evaluation
  offset; built once in setup), its batch transforms, the data config's augmentation, and the
  run's generator (so stages continue one another's random stream). `trains: head` freezes
  the backbone (requires_grad off, eval mode: BatchNorm statistics stay); `reinit_head`
  re-initialises the head, from torch.manual_seed(seeds.train + HEAD_SEED_OFFSET + i) inside
  fork_rng, so the draw is the same however the earlier stages went and consumes nothing.
- pretext: imbal.pretext.stage (its randomness rules are documented there).
"""

from __future__ import annotations

import torch

from imbal.data.batches import BatchAugment
from imbal.data.sources import Split
from imbal.errors import UserError
from imbal.metrics import summarize
from imbal.models.init import apply_init
from imbal.training.objective import SupervisedObjective
from imbal.training.optim import build_optimizer, build_scheduler
from imbal.training.runs import rng_states, set_rng_states
from imbal.training.stages import PRETEXT, SEMI, SUPERVISED, StageSpec, chain_head
from imbal.training.trainer import StageParts
from imbal.training.two_stage import max_norm_hook, stage_parameters

HEAD_SEED_OFFSET = 4_000_037  # re-initialised heads


def cuda_devices(device: torch.device) -> list[int]:
    if device.type != "cuda":
        return []
    return [device.index if device.index is not None else torch.cuda.current_device()]


def _optimizer(setup, spec: StageSpec, params, fresh: bool):
    """(optimizer, scheduler, new?): the stage's own, or the one it continues. Resuming in a
    continuing stage builds it as the stage that made it did; the checkpoint has its state."""
    tr = setup.trainer
    if spec.optimizer is None and fresh:
        return tr.optimizer, tr.scheduler, False
    head = chain_head(setup.stages, spec.index)
    opt = build_optimizer(params, head.optimizer)
    return opt, build_scheduler(opt, head.schedule, head.schedule_epochs), True


def reinit_head(head: torch.nn.Module, seed: int, device: torch.device, init: str = "default") -> None:
    """The head drawn afresh, the way model.init drew it when the model was built."""
    with torch.random.fork_rng(devices=cuda_devices(device)):
        torch.manual_seed(seed)
        for m in head.modules():
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()
        apply_init(head, init)


def unlabelled_stream(setup, spec: StageSpec) -> Split | None:
    """The stage's second stream on the device: `removed` (the images the imbalance removed)
    or `rest` (the training images data.labelled_per_class left without labels); None without
    one, or when it is empty."""
    if spec.unlabelled is None:
        return None
    split = setup.data.removed if spec.unlabelled == "removed" else setup.data.rest
    if not split.targets.numel():
        return None
    return Split(split.images.to(setup.device), split.targets.to(setup.device))


def evaluate_split(setup, split) -> tuple[dict, object]:
    conf = setup.trainer.confusion(split.images, split.targets, setup.data.num_classes)
    conf_np = conf.cpu().numpy()
    return summarize(conf_np, setup.groups), conf_np


def short(m: dict | None) -> str:
    if m is None:
        return "-"
    minority = "" if m["minority_acc"] is None else f" min {m['minority_acc']:.2f}"
    return f"top1 {m['top1']:.2f} bal {m['balanced_acc']:.2f}{minority}"


class Supervised:
    def parts(self, setup, spec: StageSpec, fresh: bool) -> tuple[StageParts, str]:
        tr, plan = setup.trainer, setup.plans[spec.index]
        if fresh and spec.reinit_head:
            reinit_head(tr.model.head, setup.cfg["seeds"]["train"] + HEAD_SEED_OFFSET + spec.index,
                        setup.device, setup.cfg["model"]["init"])
        params = stage_parameters(tr.model, spec.trains)
        opt, sched, new = _optimizer(setup, spec, params, fresh)
        tr.eval_offset = plan.eval_logit_offset
        parts = StageParts(
            name=spec.name, objective=SupervisedObjective(tr.model, plan.loss), images=plan.images,
            targets=plan.targets, sampler=plan.sampler, optimizer=opt, scheduler=sched,
            batch_size=spec.batch_size, generator=tr.generator, augment=setup.augment,
            transform=setup.transforms.get(spec.index), epoch_hooks=plan.epoch_hooks,
            head_only=spec.trains != "all", freeze_backbone_epochs=spec.freeze_backbone_epochs,
            new_optimizer=new, batch_filter=setup.batch_filter,
            step_hooks=[] if spec.max_norm is None else [max_norm_hook(tr.model.head, spec.max_norm)])
        if parts.transform is not None:
            parts.transform.bind(tr.model)  # manifold mixup: the backbone's mix points
        how = [{"head": "head only (backbone and BatchNorm frozen)",
                "scales": "LWS scales only (backbone, BatchNorm and classifier frozen)"}.get(
                    spec.trains, "all")]
        how += [f"classifier rows MaxNorm {spec.max_norm}"] if spec.max_norm is not None else []
        how += ["head re-initialised"] if spec.reinit_head else []
        how += ["optimizer and schedule continued"] if spec.optimizer is None else []
        how += [f"batch transforms: {parts.transform.describe()}"] if parts.transform else []
        return parts, (f"stage {spec.name}: {spec.epochs} epochs, trains {', '.join(how)}; "
                       f"remedy: {'; '.join(plan.describe) or 'none'}")

    def row(self, setup, spec: StageSpec, stats: dict, epoch: int) -> tuple[dict, str]:
        data = setup.data
        val = evaluate_split(setup, data.val)[0] if data.val.targets.numel() else None
        every = setup.cfg["eval"].get("test_every")
        test = evaluate_split(setup, data.test)[0] if every and (epoch + 1) % every == 0 else None
        row = {"stage": spec.name, "epoch": epoch + 1, "train": stats, "val": val, "test": test}
        return row, (f"loss {stats['loss']:.4f}  {stats['images_per_s']:.0f} img/s  "
                     f"val {short(val)}  test {short(test)}")

    def end(self, setup, spec: StageSpec, run_dir) -> None:
        pass


class Pretext:
    def parts(self, setup, spec: StageSpec, fresh: bool) -> tuple[StageParts, str]:
        from imbal.pretext.stage import BUILD_SEED_OFFSET, TRAIN_SEED_OFFSET, build_pretext

        tr, data, device = setup.trainer, setup.data, setup.device
        seed = setup.cfg["seeds"]["train"]

        def build():
            torch.manual_seed(seed + BUILD_SEED_OFFSET + spec.index)
            return build_pretext(spec.task, spec.params, features=tr.model.features,
                                 feature_dim=tr.model.feature_dim, in_channels=data.channels,
                                 image_size=data.image_size, num_classes=data.num_classes,
                                 seed=seed + BUILD_SEED_OFFSET + spec.index, device=device)

        if fresh:  # the stage runs on from this seeded global state; end_stage restores it
            tr.cursor.outer_rng = rng_states()
            objective = build()
        else:  # the checkpoint restores the state; the build must not disturb anything
            with torch.random.fork_rng(devices=cuda_devices(device)):
                objective = build()
        params = [*tr.model.features.parameters(), *objective.task.parameters()]
        opt, sched, new = _optimizer(setup, spec, params, fresh)
        unlabelled = unlabelled_stream(setup, spec)
        parts = StageParts(
            name=spec.name, objective=objective, images=setup.train_images,
            targets=setup.train_targets, sampler=None, optimizer=opt, scheduler=sched,
            batch_size=spec.batch_size,
            generator=torch.Generator(device=device).manual_seed(seed + TRAIN_SEED_OFFSET + spec.index),
            augment=BatchAugment(), unlabelled=unlabelled,
            unlabelled_batch_size=spec.unlabelled_batch_size, new_optimizer=new)
        n = setup.train_targets.numel() + (unlabelled.targets.numel() if unlabelled else 0)
        return parts, (f"{spec.name}: {objective.task.describe()}; {n} images"
                       f"{f' (train + {spec.unlabelled})' if unlabelled else ''}, {spec.epochs} epochs, "
                       f"metrics on the {self._split(setup)[0]} images")

    @staticmethod
    def _split(setup) -> tuple[str, Split]:
        data = setup.data
        return ("val", data.val) if data.val.targets.numel() else ("test", data.test)

    def row(self, setup, spec: StageSpec, stats: dict, epoch: int) -> tuple[dict, str]:
        from imbal.pretext.stage import EVAL_SEED_OFFSET

        tr = setup.trainer
        name, split = self._split(setup)
        gen = torch.Generator(device=setup.device).manual_seed(
            setup.cfg["seeds"]["train"] + EVAL_SEED_OFFSET + spec.index)
        ev = tr.objective.evaluate(tr.forward, tr.prepare, tr.autocast, split.images,
                                   split.targets, spec.batch_size, gen)
        metrics = {"train_loss": stats["loss"], "train_acc": stats["acc"], "images": stats["images"],
                   **{f"{name}_{k}": v for k, v in ev.items()},
                   "images_per_s": stats["images_per_s"], "seconds": stats["seconds"],
                   "lr": stats["lr"]}
        row = {"stage": spec.name, "epoch": epoch + 1, "task": spec.task, "eval_split": name,
               "pretrain": metrics}
        shown = "  ".join(f"{k} {v:.4f}" if "loss" in k else f"{k} {v:.2f}"
                          for k, v in metrics.items()
                          if k not in ("seconds", "images_per_s", "images", "lr"))
        return row, f"{shown}  {stats['images_per_s']:.0f} img/s"

    def end(self, setup, spec: StageSpec, run_dir) -> None:
        """Hand the backbone over (checkpoints/pretrained.pt) and give the global RNG back."""
        from imbal.pretext.transfer import save_pretrained

        tr = setup.trainer
        rows = [r for r in tr.cursor.history if r["stage"] == spec.name]
        save_pretrained(run_dir / "checkpoints" / "pretrained.pt", tr.model.features,
                        task=spec.task, epoch=spec.epochs,
                        extra={"metrics": rows[-1]["pretrain"] if rows else {},
                               "backbone": setup.cfg["model"]["backbone"], "stage": spec.name})
        set_rng_states(tr.cursor.outer_rng)
        tr.cursor.outer_rng = None


class Semi(Supervised):
    """The classifier on the labels and the unlabelled stream, with a semi-supervised method's
    objective (imbal.semi); otherwise a supervised stage (trains, reinit_head, optimizer,
    evaluation rows, selection)."""

    def parts(self, setup, spec: StageSpec, fresh: bool) -> tuple[StageParts, str]:
        from imbal.semi import build_semi

        parts, line = super().parts(setup, spec, fresh)
        unlabelled = unlabelled_stream(setup, spec)
        if unlabelled is None:
            raise UserError(f"{spec.where}: the unlabelled stream '{spec.unlabelled}' is empty")
        objective = build_semi(spec.semi, setup.trainer.model, num_classes=setup.data.num_classes,
                               where=f"stages[{spec.index}].semi")
        parts.objective, parts.unlabelled = objective, unlabelled
        parts.unlabelled_batch_size = spec.unlabelled_batch_size
        parts.unlabelled_views = objective.views
        return parts, (f"{line.partition('; remedy')[0]}; {objective.describe()}; "
                       f"{parts.targets.numel()} labelled + {unlabelled.targets.numel()} unlabelled "
                       f"({spec.unlabelled}) images")


KINDS = {SUPERVISED: Supervised(), PRETEXT: Pretext(), SEMI: Semi()}


def enter_stage(setup, index: int, *, fresh: bool) -> str:
    """Plug stage `index` into the Trainer; returns the line that describes it."""
    spec = setup.stages[index]
    parts, line = KINDS[spec.kind].parts(setup, spec, fresh)
    setup.trainer.begin_stage(parts)
    return line


def end_stage(setup, index: int, run_dir) -> None:
    spec = setup.stages[index]
    KINDS[spec.kind].end(setup, spec, run_dir)
