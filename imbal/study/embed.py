"""`imbal embed RUN_DIR`: the t-SNE map of a run's test features from a checkpoint (the map
itself: imbal/study/tsne.py), written to RUN_DIR/embed/tsne.{csv,png} or --out."""

from __future__ import annotations

import argparse
from pathlib import Path

from imbal.cli import import_arg
from imbal.errors import UserError
from imbal.study.tsne import embed_setup


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir")
    p.add_argument("--checkpoint", choices=["best", "last"], default="best")
    p.add_argument("--max-points", type=int, default=2000, help="test images embedded (default 2000)")
    p.add_argument("--seed", type=int, default=0, help="subsample and t-SNE seed (default 0)")
    p.add_argument("--perplexity", type=float, default=30.0,
                   help="t-SNE perplexity (default 30; lowered to fit few points)")
    p.add_argument("--out", help="output folder (default RUN_DIR/embed)")
    p.add_argument("--device", default=None, help="override train.device (auto, cpu, cuda, cuda:N)")
    p.add_argument("--data-root", default=None, help="read the data here (default: data.root of "
                   "the run's config, else the root the run recorded in meta.json)")
    import_arg(p)


def run(args: argparse.Namespace) -> int:
    from imbal.training.evaluate import load_run
    from imbal.training.settings import process_settings

    run_dir = Path(args.run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise UserError(f"{run_dir} is not a run directory: no config.yaml")
    if args.max_points < 4:
        raise UserError(f"--max-points must be at least 4, got {args.max_points}")
    with process_settings():  # the run's threads, seeds and modes stay the run's
        cfg, setup, _ = load_run(run_dir, args.checkpoint, device=args.device,
                                 imports=tuple(args.imports), data_root=args.data_root)
        out = Path(args.out) if args.out else run_dir / "embed"
        path = embed_setup(setup, out, title=f"{cfg['name']} {args.checkpoint}.pt",
                           max_points=args.max_points, seed=args.seed, perplexity=args.perplexity)
    print(f"wrote {path} and {path.with_suffix('.png')}")
    return 0
