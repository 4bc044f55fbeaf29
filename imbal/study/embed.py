"""`imbal embed RUN_DIR`: the t-SNE map of a run's test features from a checkpoint (the map
itself: imbal/study/tsne.py), written to RUN_DIR/embed/tsne.{csv,png} or --out."""

from __future__ import annotations

import argparse
from pathlib import Path

from imbal.cli import import_arg
from imbal.errors import UserError
from imbal.study.tsne import embed_setup
from imbal.training.runs import load_checkpoint


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir")
    p.add_argument("--checkpoint", choices=["best", "last"], default="best")
    p.add_argument("--max-points", type=int, default=2000, help="test images embedded (default 2000)")
    p.add_argument("--seed", type=int, default=0, help="subsample and t-SNE seed (default 0)")
    p.add_argument("--perplexity", type=float, default=30.0,
                   help="t-SNE perplexity (default 30; lowered to fit few points)")
    p.add_argument("--out", help="output folder (default RUN_DIR/embed)")
    p.add_argument("--device", default=None)
    import_arg(p)


def run(args: argparse.Namespace) -> int:
    from imbal.config import load_config
    from imbal.training.setup import build_setup

    run_dir = Path(args.run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise UserError(f"{run_dir} is not a run directory: no config.yaml")
    if args.max_points < 4:
        raise UserError(f"--max-points must be at least 4, got {args.max_points}")
    ckpt = load_checkpoint(run_dir / "checkpoints" / f"{args.checkpoint}.pt")
    overrides = [f"train.device={args.device}"] if args.device else []
    cfg = load_config(run_dir / "config.yaml", overrides, imports=args.imports)
    setup = build_setup(cfg, quiet=True)
    try:
        setup.trainer.model.load_state_dict(ckpt["model"])
    except RuntimeError as err:
        raise UserError(f"checkpoint does not fit the run's model: {str(err).splitlines()[0]}") from None
    out = Path(args.out) if args.out else run_dir / "embed"
    path = embed_setup(setup, out, title=f"{cfg['name']} {args.checkpoint}.pt",
                       max_points=args.max_points, seed=args.seed, perplexity=args.perplexity)
    print(f"wrote {path} and {path.with_suffix('.png')}")
    return 0
