"""The epoch loop around the Trainer: evaluate, log, checkpoint, select on validation, finish.

The test set is evaluated every epoch for the logs only; `best.pt` is chosen on the validation
split (or is the last epoch when there is none), and results.json reports the test figures of
that checkpoint and of the last epoch.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from imbal.console import say
from imbal.errors import NonFiniteLoss
from imbal.metrics import summarize
from imbal.plots import confusion_figure, save_confusion
from imbal.training.runs import (
    EpochLog,
    atomic_torch_save,
    atomic_write_json,
    atomic_write_text,
    load_checkpoint,
)
from imbal.training.setup import Setup, checkpoint, resume_state
from imbal.training.trainer import Interrupted


def read_rows(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _progress(epoch: int, epochs: int, quiet: bool):
    if quiet:
        return None
    from tqdm import tqdm

    def make(total: int, initial: int):
        return tqdm(total=total, initial=initial, desc=f"epoch {epoch + 1}/{epochs}",
                    unit="batch", leave=False, dynamic_ncols=True)

    return make


def evaluate_split(setup: Setup, split) -> tuple[dict, np.ndarray]:
    conf = setup.trainer.confusion(split.images, split.targets, setup.data.num_classes)
    conf_np = conf.cpu().numpy()
    return summarize(conf_np, setup.groups), conf_np


def _short(m: dict | None) -> str:
    if m is None:
        return "-"
    minority = "" if m["minority_acc"] is None else f" min {m['minority_acc']:.2f}"
    return f"top1 {m['top1']:.2f} bal {m['balanced_acc']:.2f}{minority}"


def _epoch(setup: Setup, epoch: int, ckpt_dir: Path, log: EpochLog, quiet: bool) -> dict:
    cfg, tr = setup.cfg, setup.trainer
    stats = tr.train_epoch(epoch, _progress(epoch, cfg["train"]["epochs"], quiet))
    val = evaluate_split(setup, setup.data.val)[0] if setup.data.val.targets.numel() else None
    test = evaluate_split(setup, setup.data.test)[0]
    row = {"stage": "train", "epoch": epoch + 1, "train": stats, "val": val, "test": test}
    c = tr.cursor
    score = val[cfg["eval"]["select"]] if val is not None else float(epoch)
    if score > c.best_score:
        c.best_score, c.best_epoch = score, epoch + 1
        atomic_torch_save(ckpt_dir / "best.pt", {"format": "imbal", "model": tr.model.state_dict(),
                                                  "epoch": epoch + 1, "score": score})
    c.history.append(row)
    checkpoint(setup, ckpt_dir / "last.pt")  # before the log row: a logged epoch is resumable
    log.add(row, epoch + 1)
    say(f"epoch {epoch + 1:>3}/{cfg['train']['epochs']}  loss {stats['loss']:.4f}  "
        f"{stats['images_per_s']:.0f} img/s  val {_short(val)}  test {_short(test)}", quiet)
    return row


def fit(setup: Setup, *, run_dir: Path, meta: dict, resume: bool, quiet: bool, t_start: float) -> dict:
    cfg, tr = setup.cfg, setup.trainer
    ckpt_dir = run_dir / "checkpoints"
    pretrain_rows = []
    if resume:
        resume_state(setup, run_dir)
        pretrain_rows = [r for r in read_rows(run_dir) if r.get("stage") == "pretrain"]
        say(f"resuming at epoch {tr.cursor.epoch + 1}, step {tr.cursor.step}", quiet)
    log = EpochLog(run_dir, cfg["logging"]["tensorboard"], history=pretrain_rows + tr.cursor.history)
    if not resume and cfg["pretrain"] is not None:
        from imbal.pretext import run_pretrain

        run_pretrain(setup, run_dir=run_dir, log=log, quiet=quiet)
    if cfg["model"]["init_from"] and not resume:
        from imbal.pretext import load_backbone

        for line in load_backbone(tr.model, cfg["model"]["init_from"]):
            say(line, quiet)
    atomic_write_json(run_dir / "meta.json", {**meta, "status": "running"})
    last = None
    try:
        with tr.stop:
            for epoch in range(tr.cursor.epoch, cfg["train"]["epochs"]):
                last = _epoch(setup, epoch, ckpt_dir, log, quiet)
    except Interrupted as err:
        err.run_dir = str(run_dir)
        checkpoint(setup, ckpt_dir / "last.pt")
        atomic_write_json(run_dir / "meta.json", {**meta, "status": "interrupted"})
        log.close()
        raise
    except NonFiniteLoss:
        atomic_write_json(run_dir / "meta.json", {**meta, "status": "failed: non-finite loss"})
        log.close()
        raise
    results = finish(setup, run_dir, log, last)
    wall = time.time() - t_start
    results["wall_time_s"] = round(wall, 3)
    atomic_write_json(run_dir / "results.json", results)
    atomic_write_json(run_dir / "meta.json", {**meta, "status": "complete", "wall_time_s": round(wall, 3),
                                             "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    log.close()
    say(f"done in {wall:.1f}s: best epoch {results['best_epoch']}, test {_short(results['test'])}"
        f"  -> {run_dir}/results.json", quiet)
    return results


def finish(setup: Setup, run_dir: Path, log: EpochLog, last: dict | None) -> dict:
    """Test figures of best.pt (chosen on validation) and of the last epoch; confusion files."""
    cfg, tr, data = setup.cfg, setup.trainer, setup.data
    if last is None:  # resumed after the final epoch had already run: recompute its figures
        test_last, _ = evaluate_split(setup, data.test)
    else:
        test_last = last["test"]
    best = load_checkpoint(run_dir / "checkpoints" / "best.pt")
    last_state = {k: v.clone() for k, v in tr.model.state_dict().items()}
    tr.model.load_state_dict(best["model"])
    test, conf = evaluate_split(setup, data.test)
    val = evaluate_split(setup, data.val)[0] if data.val.targets.numel() else None
    tr.model.load_state_dict(last_state)
    _write_confusion(run_dir, conf, data.classes, log, best["epoch"])
    counts = data.counts()
    return {
        "name": cfg["name"], "complete": True, "best_epoch": best["epoch"],
        "selection": f"val {cfg['eval']['select']}" if val is not None else "last epoch (no validation split)",
        "epochs": cfg["train"]["epochs"], "classes": data.classes,
        "minority_classes": setup.groups.minority, "majority_classes": setup.groups.majority,
        "train_counts": tr.plan.class_counts, "counts": counts,
        "val": val, "test": test, "test_last": test_last,
        "seeds": dict(cfg["seeds"]), "remedy": tr.plan.describe, "config": cfg,
    }


def _write_confusion(run_dir: Path, conf: np.ndarray, classes: list[str], log: EpochLog, epoch: int) -> None:
    header = "true\\pred," + ",".join(classes)
    rows = [f"{c}," + ",".join(str(int(v)) for v in conf[i]) for i, c in enumerate(classes)]
    atomic_write_text(run_dir / "confusion.csv", "\n".join([header, *rows]) + "\n")
    title = f"test confusion, best epoch {epoch}"
    save_confusion(conf, classes, title, run_dir / "confusion.png")
    if log.writer is not None:
        import matplotlib.pyplot as plt

        fig = confusion_figure(conf, classes, title)
        log.figure("confusion/test", fig, epoch)
        plt.close(fig)

