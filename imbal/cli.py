"""`imbal` command line. A user mistake is one line on stderr and exit status 2, never a traceback."""

from __future__ import annotations

import argparse
import errno
import importlib
import signal
import sys
from pathlib import Path

from imbal.errors import Interrupted, NonFiniteLoss, SweepStopped, UserError

EXIT_USER, EXIT_NONFINITE = 2, 3


def _config_args(p: argparse.ArgumentParser, config_required: bool = True) -> None:
    p.add_argument("config", nargs=None if config_required else "?", help="YAML config file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set train.epochs=3 (value parsed as YAML)")
    p.add_argument("--device", help="override train.device (auto, cpu, cuda, cuda:N)")
    import_arg(p)


def import_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--import", dest="imports", action="append", default=[],
                   metavar="MODULE_OR_PATH", help="import a plugin (a module name or a .py "
                   "file) before the config is checked; repeatable. Added to the run's imports")


def _load(args: argparse.Namespace) -> dict:
    from imbal.config import load_config

    overrides = list(args.overrides)
    if getattr(args, "device", None):
        overrides.append(f"train.device={args.device}")
    return load_config(args.config, overrides, imports=args.imports)


def cmd_train(args: argparse.Namespace) -> int:
    if args.resume:
        run_dir = Path(args.resume)
        if args.config:
            raise UserError("give either a config or --resume RUN_DIR, not both")
        args.config = run_dir / "config.yaml"
        if not args.config.is_file():
            raise UserError(f"nothing to resume in {run_dir}: no config.yaml")
        out = str(run_dir)
    elif not args.config:
        raise UserError("missing config: imbal train CONFIG.yaml (or --resume RUN_DIR)")
    else:
        out = args.out
    cfg = _load(args)  # refused before torch is imported: a refusal returns at once
    from imbal.training import run as runner

    results = runner.train(cfg, out_dir=out, overwrite=args.overwrite, quiet=args.quiet,
                           resume=bool(args.resume))
    if args.quiet:  # --quiet silences the progress, never the result
        from imbal.training.loop import final_line
        from imbal.training.run import run_dir_of

        print(final_line(results, run_dir_of(cfg, out)), file=sys.stderr)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from imbal.training.evaluate import evaluate_run

    posthoc = {name: value for name, value in (("logit_adjust", args.logit_adjust),
                                               ("tau_norm", args.tau_norm)) if value is not None}
    evaluate_run(Path(args.run_dir), which=args.checkpoint, device=args.device, imports=args.imports,
                 data_root=args.data_root, posthoc=posthoc)
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    from imbal.data.prepare import prepare_data
    from imbal.training.setup import format_counts

    cfg = _load(args)
    if args.plot:  # before the work: a plot that cannot be written is refused at once
        folder = Path(args.plot).expanduser().resolve().parent
        if not folder.is_dir():
            raise UserError(f"--plot {args.plot}: folder {folder} does not exist")
    data = prepare_data(cfg["data"], data_seed=cfg["seeds"]["data"],
                        minority_override=cfg["eval"]["minority_classes"])
    counts = data.counts()
    print(f"{data.name}: {data.num_classes} classes, images {data.channels}x{data.image_size}x"
          f"{data.image_size}, data seed {cfg['seeds']['data']}")
    print(format_counts(counts))
    if args.plot:
        from imbal.plots import save_counts

        save_counts(counts, data.classes, Path(args.plot))
        print(f"wrote {args.plot}")
    return 0


# Commands that live in their own modules, with add_arguments(parser) and run(args).
MODULE_COMMANDS = (("sweep", "imbal.study.sweep", "run a grid of configs x seeds"),
                   ("report", "imbal.study.report", "mean ± std tables and plots of runs"),
                   ("bench", "imbal.bench.cli", "measure training throughput"),
                   ("embed", "imbal.study.embed", "t-SNE map of a run's test-set features"))
INLINE_COMMANDS = ("train", "eval", "data")


def _version() -> str:
    import imbal

    return imbal.__version__


def build_parser(modules: bool = True) -> argparse.ArgumentParser:
    """The whole parser; with modules=False the module commands' options are left out (and
    their modules not imported: ~0.1 s of every `imbal train`'s start-up)."""
    parser = argparse.ArgumentParser(
        prog="imbal", description="Experiment runner for class-imbalance studies in image classification.")
    parser.add_argument("--version", action="version", version=f"imbal {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("train", help="train one run from a YAML config")
    _config_args(p, config_required=False)
    p.add_argument("--out", help="run directory (default logging.out_dir/name)")
    p.add_argument("--quiet", action="store_true", help="no progress bar or per-epoch lines")
    p.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a stopped run from its last checkpoint")
    p.set_defaults(func=cmd_train)
    p = sub.add_parser("eval", help="re-evaluate a saved checkpoint on the test set")
    p.add_argument("run_dir", help="a run directory (holds config.yaml and checkpoints/)")
    p.add_argument("--checkpoint", choices=["best", "last"], default="best",
                   help="which checkpoint to score (default best); writes RUN_DIR/eval_<which>.json")
    p.add_argument("--device", default=None, help="override train.device (auto, cpu, cuda, cuda:N)")
    p.add_argument("--data-root", default=None, help="read the data here (default: data.root of "
                   "the run's config, else the root the run recorded in meta.json)")
    p.add_argument("--logit-adjust", nargs="?", const="auto", metavar="TAU",
                   help="also score logits - tau * log prior; tau chosen on validation from "
                        "0, 0.25, ..., 2 (no value or 'auto') or given")
    p.add_argument("--tau-norm", nargs="?", const="auto", metavar="TAU",
                   help="also score the classifier rows rescaled w_c / ||w_c||^tau; tau chosen "
                        "on validation from 0, 0.1, ..., 2 (no value or 'auto') or given")
    import_arg(p)
    p.set_defaults(func=cmd_eval)
    p = sub.add_parser("data", help="print per-class counts after imbalance, without training")
    _config_args(p)
    p.add_argument("--plot", metavar="PNG", help="also write a bar chart")
    p.set_defaults(func=cmd_data)
    for name, module, text in MODULE_COMMANDS:
        p = sub.add_parser(name, help=text)
        if modules:
            mod = importlib.import_module(module)
            mod.add_arguments(p)
            p.set_defaults(func=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    args = build_parser(modules=command not in INLINE_COMMANDS).parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UserError as err:
        print(f"imbal: error: {err}", file=sys.stderr)
        return EXIT_USER
    except Interrupted as err:
        print(f"imbal: stopped by {err}; checkpoint saved. Resume with: "
              f"imbal train --resume {err.run_dir}", file=sys.stderr)
        return 128 + err.signum
    except SweepStopped as err:
        print(f"imbal: sweep stopped by {err}; its running runs stopped after their step, "
              "with a checkpoint. Run the sweep again to finish the rest", file=sys.stderr)
        return 128 + err.signum
    except NonFiniteLoss as err:
        kept = getattr(err, "checkpoint", None)
        print(f"imbal: error: {err}; " + (f"the last good checkpoint is kept ({kept})" if kept
              else "no epoch had ended, so there is no checkpoint to keep"), file=sys.stderr)
        return EXIT_NONFINITE
    except KeyboardInterrupt:
        print("imbal: interrupted", file=sys.stderr)
        return 128 + signal.SIGINT
    except OSError as err:
        what = "disk full" if err.errno == errno.ENOSPC else (err.strerror or str(err))
        where = f": {err.filename}" if err.filename else ""
        print(f"imbal: error: {what}{where}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
