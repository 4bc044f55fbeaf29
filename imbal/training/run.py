"""`imbal train`: one run from a resolved config into its run directory."""

from __future__ import annotations

import time
from pathlib import Path

from imbal.config import dump_yaml, resolve
from imbal.console import say
from imbal.locks import FolderLock
from imbal.training.loop import fit
from imbal.training.optim import build_optimizer, describe_optimizer, describe_schedule
from imbal.training.runs import (
    atomic_write_json,
    atomic_write_text,
    check_resumable_file,
    check_run_dir,
    create_run_dir,
    provenance,
)
from imbal.training.settings import process_settings
from imbal.training.setup import build_setup, check_names, format_counts, resolve_parts
from imbal.training.stages import chain_head


def train(cfg: dict, *, out_dir: str | None = None, overwrite: bool = False, quiet: bool = True,
          resume: bool = False) -> dict:
    """Train one run into `out_dir` (default logging.out_dir/name) and return results.json.
    The config's plugins (`imports:`) are imported first: a sweep worker needs nothing else.
    Process-wide settings (threads, deterministic mode, global RNGs, ...) are the caller's
    again when it returns."""
    with process_settings():
        return _train(cfg, out_dir=out_dir, overwrite=overwrite, quiet=quiet, resume=resume)


def _train(cfg: dict, *, out_dir: str | None, overwrite: bool, quiet: bool, resume: bool) -> dict:
    cfg = resolve(cfg)
    run_dir = run_dir_of(cfg, out_dir)
    if resume:  # an older imbal's run: say so, before its config meets today's checks
        check_resumable_file(run_dir / "checkpoints" / "last.pt")
    check_names(cfg)
    if cfg["model"]["init_from"] and not resume:  # before anything is built or created
        from imbal.pretext.transfer import resolve_source

        resolve_source(cfg["model"]["init_from"])
    cfg = resolve_parts(cfg)  # config.yaml lists every optimizer argument used
    quiet = quiet or not cfg["logging"]["progress"]
    check_run_dir(run_dir, overwrite=overwrite, resume=resume)
    t_start = time.time()
    setup = build_setup(cfg, quiet=quiet)
    lock = FolderLock(run_dir, "run directory")  # one writer: held until this run ends
    create_run_dir(run_dir, overwrite=overwrite, resume=resume, lock=lock)  # once the setup is sound
    try:
        return _run(setup, cfg, run_dir, resume=resume, quiet=quiet, t_start=t_start)
    finally:
        lock.release()


def _run(setup, cfg: dict, run_dir: Path, *, resume: bool, quiet: bool, t_start: float) -> dict:
    counts = setup.data.counts()
    say(f"run {run_dir}  ({setup.data.name}, {cfg['model']['backbone']}, device {setup.device})", quiet)
    say(format_counts(counts), quiet)
    if setup.batch_filter is not None:  # shown even when quiet: the run is not a sound one
        say(f"warning: {setup.batch_filter.describe()}")
    if len(setup.stages) == 1:  # several stages: each says its remedies when it starts
        for line in setup.plans[0].describe:
            say(f"remedy: {line}", quiet)
    optimizer, schedule = describe_parts(setup)
    say(f"optimizer: {optimizer}; schedule: {schedule}", quiet)
    write_plan(setup, run_dir, f"optimizer: {optimizer}; schedule: {schedule}")
    meta = {**provenance(setup.device, cfg["imports"]), "run_dir": str(run_dir),
            "optimizer": optimizer, "data_root": data_root(cfg)}  # imbal eval needs no IMBAL_DATA
    atomic_write_text(run_dir / "config.yaml", dump_yaml(cfg))  # on resume: with any --set applied
    atomic_write_json(run_dir / "counts.json", counts)
    results = fit(setup, run_dir=run_dir, meta=meta, resume=resume, quiet=quiet, t_start=t_start)
    if cfg["eval"]["embed"]:
        from imbal.study.tsne import embed_best

        say(f"t-SNE of best.pt's test features -> {embed_best(setup, run_dir)}", quiet)
    return results


def write_plan(setup, run_dir: Path, optimizer_line: str) -> None:
    """RUN/plan.txt: the counts, what each stage's remedies resolved to (with their weights),
    the optimizer; a remedy that has no effect is also a warning on the terminal, --quiet or
    not."""
    from imbal.remedies.plan import NO_EFFECT

    lines = [format_counts(setup.data.counts()), ""]
    for spec in setup.stages:
        plan = setup.plans.get(spec.index)
        for line in (plan.describe if plan is not None else []) or ["(no remedy)"]:
            lines.append(f"{spec.name}: remedy: {line}")
            if line.endswith(NO_EFFECT):
                say(f"warning: stage {spec.name}: remedy {line.split(':')[0]} has no effect "
                    f"on this training set (all class weights equal)")
    atomic_write_text(run_dir / "plan.txt", "\n".join([*lines, optimizer_line]) + "\n")


def data_root(cfg: dict) -> str:
    """The data root this run read, absolute (data.root, else $IMBAL_DATA, else ./data)."""
    import os

    from imbal.data.sources import resolve_root

    return os.path.abspath(resolve_root(cfg["data"]["root"]))


def run_dir_of(cfg: dict, out_dir: str | None) -> Path:
    """--out, else logging.out_dir/name; a leading ~ is the user's home in both."""
    return Path(out_dir or Path(cfg["logging"]["out_dir"]) / cfg["name"]).expanduser()


def describe_parts(setup) -> tuple[str, str]:
    """The optimizer (as torch builds it here: fused, foreach) and schedule of the stage that
    best.pt is chosen in, for the log and meta.json; built on the model's parameters, never
    stepped."""
    spec = chain_head(setup.stages, setup.selection.index)
    opt = build_optimizer(setup.trainer.model.parameters(), spec.optimizer)
    return describe_optimizer(opt), describe_schedule(spec.schedule)
