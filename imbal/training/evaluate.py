"""`imbal eval RUN_DIR`: rebuild a run's data and model from its config, score a checkpoint;
with --logit-adjust / --tau-norm, also a post-hoc adjustment chosen on validation (posthoc.py)."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from imbal.config import load_config
from imbal.console import say
from imbal.errors import UserError
from imbal.training.optim import without_untaken_arguments
from imbal.training.runs import atomic_write_json, load_checkpoint, mismatch
from imbal.training.settings import process_settings
from imbal.training.setup import build_setup
from imbal.training.stage_kinds import evaluate_split


def posthoc_taus(flag: str, value: str | float | None) -> list[float] | None:
    """An option's value -> the taus to try: 'auto' -> None (the adjustment's grid), a number
    >= 0 -> [it]. Anything else: UserError, before any work."""
    if value is None or value == "auto":
        return None
    try:
        tau = float(value)
    except (TypeError, ValueError):
        tau = -1.0
    if not tau >= 0 or tau == float("inf"):
        raise UserError(f"{flag} takes a number >= 0 or 'auto', got {value!r}")
    return [tau]


def evaluate_run(run_dir: Path, *, which: str = "best", device: str | None = None,
                 imports: list[str] | tuple[str, ...] = (), data_root: str | None = None,
                 posthoc: dict[str, str | float | None] | None = None) -> dict:
    """Score checkpoint `which` of a run on its test set; the run's config names its plugins
    (absolute paths), `imports` adds more. The data is read from `data_root`, else from the
    root the run recorded in meta.json when the config names none. `posthoc` maps POSTHOC names
    (logit_adjust, tau_norm) to a tau or 'auto' (chosen on validation from the adjustment's
    grid). Process-wide settings are restored after."""
    from imbal.training.posthoc import POSTHOC

    wanted = {name: posthoc_taus(POSTHOC.get(name).flag, v) for name, v in (posthoc or {}).items()}
    with process_settings():
        return _evaluate(run_dir, which, device, tuple(imports), wanted, data_root)


def _recorded_root(run_dir: Path) -> str | None:
    """meta.json's data_root when the run's config leaves data.root to $IMBAL_DATA/./data."""
    try:
        meta = json.loads((run_dir / "meta.json").read_text())
        cfg_root = yaml.safe_load((run_dir / "config.yaml").read_text())["data"].get("root")
    except (OSError, ValueError, KeyError, TypeError, AttributeError, yaml.YAMLError):
        return None
    return None if cfg_root else meta.get("data_root")


def per_class_table(classes: list[str], metrics: dict) -> str:
    width = max(len("class"), *(len(c) for c in classes))
    lines = [f"{'class':<{width}}  {'test acc':>8}"]
    for c, acc in zip(classes, metrics["per_class_acc"], strict=True):
        lines.append(f"{c:<{width}}  {'-' if acc is None else f'{acc:.2f}':>8}")
    return "\n".join(lines)


def load_run(run_dir: Path, which: str, *, device: str | None = None,
             imports: tuple[str, ...] = (), data_root: str | None = None):
    """(cfg, setup, checkpoint) of a finished run, its model holding checkpoint `which` (the
    moving average when the run kept one): what `imbal eval` and `imbal embed` score. The data
    is read from `data_root`, else from the root the run recorded when its config names none.
    Call it inside process_settings(): building a run sets process-wide state."""
    cfg_path = run_dir / "config.yaml"
    if not cfg_path.is_file():
        raise UserError(f"{run_dir} is not a run directory: no config.yaml")
    overrides = [f"train.device={device}"] if device else []
    root = data_root or _recorded_root(run_dir)
    if root:
        overrides.append(f"data.root={json.dumps(str(Path(root).expanduser()))}")
    cfg = load_config(cfg_path, overrides, imports=imports)
    for section in (cfg["train"], cfg["pretrain"]):  # built, never stepped: see the function
        if section is not None:
            section["optimizer"] = without_untaken_arguments(section["optimizer"])
    ckpt = load_checkpoint(run_dir / "checkpoints" / f"{which}.pt")
    setup = build_setup(cfg, quiet=True)
    try:
        tr = setup.trainer
        if tr.ema is not None and ckpt.get("ema") is not None:  # last.pt: the moving average
            tr.ema.load_state_dict(ckpt["ema"])
        else:  # best.pt holds the evaluated model (the moving average when train.ema is on)
            tr.eval_model.load_state_dict(ckpt["model"])
    except RuntimeError as err:
        raise UserError(mismatch(run_dir / "checkpoints" / f"{which}.pt", ckpt,
                                 cfg["model"]["backbone"], err)) from None
    return cfg, setup, ckpt


def _evaluate(run_dir: Path, which: str, device: str | None, imports: tuple[str, ...],
              wanted: dict[str, list[float] | None], data_root: str | None = None) -> dict:
    from imbal.training.posthoc import sweep

    cfg, setup, ckpt = load_run(run_dir, which, device=device, imports=imports,
                                data_root=data_root)
    metrics, _ = evaluate_split(setup, setup.data.test)
    out = {"checkpoint": which, "epoch": ckpt.get("epoch", ckpt.get("cursor", {}).get("epoch")),
           "test": metrics}
    for name, taus in wanted.items():
        out[name] = sweep(name, setup, taus)
    keys = ("top1", "balanced_acc", "macro_f1", "minority_acc", "majority_acc")
    shown = {k: metrics[k] for k in keys}
    for name in wanted:
        shown[name] = {"tau": out[name]["tau"], **{k: out[name]["test"][k] for k in keys}}
    # printed first: a run directory that cannot be written to still shows its figures
    say(per_class_table(setup.data.classes, metrics))
    print(json.dumps(shown, indent=2), flush=True)
    atomic_write_json(run_dir / f"eval_{which}.json", out)
    return out
