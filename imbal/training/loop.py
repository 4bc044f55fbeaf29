"""The loop around the Trainer: stages in order, epochs within each; evaluate, log,
checkpoint, select on validation, finish.

Every stage trains through the same Trainer step (stage_kinds.enter_stage plugs it in) and
writes one metrics.jsonl row per epoch carrying the stage's name; TensorBoard tags are
<stage>/..., stepped by the epoch counted over the whole run. A checkpoint (last.pt) is written
after every epoch of every stage and on SIGINT/SIGTERM; its cursor records the stage, so a run
resumes mid-stage, pretext stages included.

Selection: best.pt is chosen on the validation split (eval.select) among the epochs of the LAST
supervised stage only (earlier stages prepare the model: a cRT run's best.pt is a re-trained
classifier, never a stage-1 one), or is that stage's last epoch when there is no validation
split. results.json reports the test figures of best.pt and of the last epoch, and names the
stage they come from; the test set is evaluated in other epochs only with eval.test_every N
(every N supervised epochs, for the logs: nothing is selected on it), else metrics.jsonl's
"test" is null there.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from imbal.console import say
from imbal.errors import NonFiniteLoss, UserError
from imbal.plots import confusion_figure, save_confusion
from imbal.training.runs import (
    CHECKPOINT_VERSION,
    EpochLog,
    atomic_torch_save,
    atomic_write_json,
    atomic_write_text,
    load_checkpoint,
    mismatch,
    rng_states,
    set_rng_states,
)
from imbal.training.setup import Setup
from imbal.training.stage_kinds import KINDS, end_stage, enter_stage, evaluate_split, short
from imbal.training.trainer import Interrupted


def read_rows(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def checkpoint(setup: Setup, path: Path) -> None:
    atomic_torch_save(path, {"format": "imbal", "version": CHECKPOINT_VERSION,
                             "backbone": setup.cfg["model"]["backbone"],
                             **setup.trainer.state_dict(), "rng": rng_states()})


def resume_state(setup: Setup, run_dir: Path) -> None:
    """Enter the stage the checkpoint was written in, then restore everything into it."""
    path = run_dir / "checkpoints" / "last.pt"
    ckpt = load_checkpoint(path, resume=True)
    try:
        stage = int(ckpt["cursor"].get("stage", 0))
        if not 0 <= stage < len(setup.stages):
            raise ValueError(f"stage {stage + 1} of a run with {len(setup.stages)} stages")
        enter_stage(setup, stage, fresh=False)
        optimizer = setup.trainer.optimizer
        # How the update runs (fused on CUDA, foreach on the CPU) is this machine's choice, not
        # the checkpoint's: a run started on a GPU may be resumed on a CPU.
        how = [{k: g[k] for k in ("foreach", "fused") if k in g} for g in optimizer.param_groups]
        setup.trainer.load_state_dict(ckpt)
    except RuntimeError as err:
        raise UserError(mismatch(path, ckpt, setup.cfg["model"]["backbone"], err)) from None
    except (KeyError, ValueError) as err:
        raise UserError(f"checkpoint {path} does not match this config: "
                        f"{str(err).splitlines()[0][:300]}") from None
    for group, kept in zip(optimizer.param_groups, how, strict=True):
        group.update(kept)
    set_rng_states(ckpt["rng"])


def _progress(title: str, quiet: bool):
    """A progress bar on a terminal only: into a file or a pipe (a sweep's log, a batch job)
    the per-epoch line is the progress, not a bar's redraws."""
    import sys

    if quiet or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    def make(total: int, initial: int):
        return tqdm(total=total, initial=initial, desc=title, unit="batch", leave=False,
                    dynamic_ncols=True)

    return make


def _epoch(setup: Setup, epoch: int, ckpt_dir: Path, log: EpochLog, quiet: bool) -> dict:
    """One epoch of the stage the Trainer is in: train, evaluate, select, checkpoint, log."""
    tr, stages = setup.trainer, setup.stages
    c = tr.cursor
    spec = stages[c.stage]
    many = len(stages) > 1
    title = f"{spec.name + ' ' if many else ''}epoch {epoch + 1}/{spec.epochs}"
    stats = tr.train_epoch(epoch, _progress(title, quiet), f" of stage '{spec.name}'" if many else "")
    row, line = KINDS[spec.kind].row(setup, spec, stats, epoch)
    if spec.index == setup.selection.index:
        val = row["val"]
        score = val[setup.cfg["eval"]["select"]] if val is not None else float(epoch)
        if score > c.best_score:
            c.best_score, c.best_epoch = score, epoch + 1
            atomic_torch_save(ckpt_dir / "best.pt", {"format": "imbal", "model": tr.eval_model.state_dict(),
                                                      "backbone": setup.cfg["model"]["backbone"],
                                                      "epoch": epoch + 1, "stage": spec.name,
                                                      "score": score})
    c.history.append(row)
    checkpoint(setup, ckpt_dir / "last.pt")  # before the log row: a logged epoch is resumable
    log.add(row, sum(s.epochs for s in stages[:spec.index]) + epoch + 1)
    say(f"{spec.name + ' ' if many else ''}epoch {epoch + 1:>3}/{spec.epochs}  {line}", quiet)
    return row


def run_stages(setup: Setup, *, run_dir: Path, log: EpochLog, resumed: bool, quiet: bool) -> dict | None:
    """From the cursor's stage and epoch to the end of the run; the last row of the selection
    stage run here (None when it had already ended before a resume)."""
    tr = setup.trainer
    c, last = tr.cursor, None
    for i in range(c.stage, len(setup.stages)):
        if not (resumed and i == c.stage):
            c.stage, c.epoch = i, 0
            say(enter_stage(setup, i, fresh=True), quiet or len(setup.stages) == 1)
        for epoch in range(c.epoch, setup.stages[i].epochs):
            row = _epoch(setup, epoch, run_dir / "checkpoints", log, quiet)
            last = row if i == setup.selection.index else last
        end_stage(setup, i, run_dir)
        resumed = False
    return last


def fit(setup: Setup, *, run_dir: Path, meta: dict, resume: bool, quiet: bool, t_start: float) -> dict:
    cfg, tr = setup.cfg, setup.trainer
    if resume:
        resume_state(setup, run_dir)
        name = setup.stages[tr.cursor.stage].name
        say(f"resuming {f'stage {name}, ' if len(setup.stages) > 1 else ''}at epoch "
            f"{tr.cursor.epoch + 1}, step {tr.cursor.step}", quiet)
    elif cfg["model"]["init_from"]:
        from imbal.pretext import load_backbone

        for line in load_backbone(tr.model, cfg["model"]["init_from"]):
            say(line, quiet)
    log = EpochLog(run_dir, cfg["logging"]["tensorboard"], history=tr.cursor.history)
    atomic_write_json(run_dir / "meta.json", {**meta, "status": "running"})
    try:
        with tr.stop:
            last = run_stages(setup, run_dir=run_dir, log=log, resumed=resume, quiet=quiet)
    except Interrupted as err:
        err.run_dir = str(run_dir)
        checkpoint(setup, run_dir / "checkpoints" / "last.pt")
        atomic_write_json(run_dir / "meta.json", {**meta, "status": "interrupted"})
        log.close()
        raise
    except NonFiniteLoss as err:
        last_pt = run_dir / "checkpoints" / "last.pt"
        err.checkpoint = str(last_pt) if last_pt.is_file() else None
        atomic_write_json(run_dir / "meta.json", {**meta, "status": "failed: non-finite loss"})
        log.close()
        raise
    except OSError as err:  # a full disk: record it if there is room for that, keep last.pt
        try:
            atomic_write_json(run_dir / "meta.json", {**meta, "status": "failed: cannot write "
                                                      f"{err.filename or 'a file'}: {err.strerror}"})
        except OSError:
            pass
        log.close()
        raise
    results = finish(setup, run_dir, log, last)
    wall = time.time() - t_start
    results["wall_time_s"] = round(wall, 3)
    atomic_write_json(run_dir / "results.json", results)
    atomic_write_json(run_dir / "meta.json", {**meta, "status": "complete", "wall_time_s": round(wall, 3),
                                             "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    log.close()
    say(final_line(results, run_dir), quiet)
    return results


def final_line(results: dict, run_dir: Path) -> str:
    """The run's one-line result (printed by `imbal train` even with --quiet)."""
    return (f"done in {results['wall_time_s']:.1f}s: best epoch {results['best_epoch']}, test {short(results['test'])}"
            f"  -> {run_dir}/results.json")


def finish(setup: Setup, run_dir: Path, log: EpochLog, last: dict | None) -> dict:
    """Test figures of best.pt (chosen on validation in the last supervised stage) and of the
    last epoch; confusion files."""
    cfg, tr, data = setup.cfg, setup.trainer, setup.data
    chosen = setup.selection
    plan = setup.plans[chosen.index]
    if last is None or last["test"] is None:  # not tested in that epoch (eval.test_every), or
        test_last, _ = evaluate_split(setup, data.test)  # resumed after it: the model is its own
    else:
        test_last = last["test"]
    best = load_checkpoint(run_dir / "checkpoints" / "best.pt")
    last_state = {k: v.clone() for k, v in tr.eval_model.state_dict().items()}
    tr.eval_model.load_state_dict(best["model"])
    test, conf = evaluate_split(setup, data.test)
    val = evaluate_split(setup, data.val)[0] if data.val.targets.numel() else None
    tr.eval_model.load_state_dict(last_state)
    _write_confusion(run_dir, conf, data.classes, log, best["epoch"])
    counts = data.counts()
    return {
        "name": cfg["name"], "complete": True, "best_epoch": best["epoch"], "stage": chosen.name,
        "selection": (f"val {cfg['eval']['select']}" if val is not None else
                      "last epoch (no validation split)") + f", within stage '{chosen.name}'",
        "epochs": chosen.epochs, "classes": data.classes,
        "stages": [{"name": s.name, "kind": s.kind, "epochs": s.epochs, "task": s.task,
                    "trains": s.trains, "remedy": setup.plans[s.index].describe
                    if s.index in setup.plans else []} for s in setup.stages],
        "minority_classes": setup.groups.minority, "majority_classes": setup.groups.majority,
        "train_counts": plan.class_counts, "counts": counts,
        "val": val, "test": test, "test_last": test_last,
        "seeds": dict(cfg["seeds"]), "remedy": plan.describe, "config": cfg,
    }


def _write_confusion(run_dir: Path, conf: np.ndarray, classes: list[str], log: EpochLog, epoch: int) -> None:
    import csv
    import io

    buf = io.StringIO()  # the csv module quotes class names with commas or quotes in them
    out = csv.writer(buf, lineterminator="\n")
    out.writerow(["true\\pred", *classes])
    out.writerows([c, *(int(v) for v in conf[i])] for i, c in enumerate(classes))
    atomic_write_text(run_dir / "confusion.csv", buf.getvalue())
    title = f"test confusion, best epoch {epoch}"
    save_confusion(conf, classes, title, run_dir / "confusion.png")
    if log.writer is not None:
        import matplotlib.pyplot as plt

        fig = confusion_figure(conf, classes, title)
        log.figure("confusion/test", fig, epoch)
        plt.close(fig)

