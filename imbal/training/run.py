"""`imbal train`: one run from a resolved config into its run directory."""

from __future__ import annotations

import time
from pathlib import Path

from imbal.config import dump_yaml, resolve
from imbal.console import say
from imbal.training.loop import fit
from imbal.training.runs import (
    atomic_write_json,
    atomic_write_text,
    check_run_dir,
    create_run_dir,
    provenance,
)
from imbal.training.setup import build_setup, check_names, format_counts


def train(cfg: dict, *, out_dir: str | None = None, overwrite: bool = False, quiet: bool = True,
          resume: bool = False) -> dict:
    """Train one run into `out_dir` (default logging.out_dir/name) and return results.json.
    The config's plugins (`imports:`) are imported first: a sweep worker needs nothing else."""
    cfg = resolve(cfg)
    check_names(cfg)
    quiet = quiet or not cfg["logging"]["progress"]
    run_dir = Path(out_dir) if out_dir else Path(cfg["logging"]["out_dir"]) / cfg["name"]
    check_run_dir(run_dir, overwrite=overwrite, resume=resume)
    t_start = time.time()
    setup = build_setup(cfg, quiet=quiet)
    create_run_dir(run_dir, overwrite=overwrite, resume=resume)  # only once the setup is sound
    counts = setup.data.counts()
    say(f"run {run_dir}  ({setup.data.name}, {cfg['model']['backbone']}, device {setup.device})", quiet)
    say(format_counts(counts), quiet)
    if len(setup.stages) == 1:  # several stages: each says its remedies when it starts
        for line in setup.plans[0].describe:
            say(f"remedy: {line}", quiet)
    meta = {**provenance(setup.device, cfg["imports"]), "run_dir": str(run_dir)}
    atomic_write_text(run_dir / "config.yaml", dump_yaml(cfg))  # on resume: with any --set applied
    atomic_write_json(run_dir / "counts.json", counts)
    results = fit(setup, run_dir=run_dir, meta=meta, resume=resume, quiet=quiet, t_start=t_start)
    if cfg["eval"]["embed"]:
        from imbal.study.tsne import embed_best

        say(f"t-SNE of best.pt's test features -> {embed_best(setup, run_dir)}", quiet)
    return results


