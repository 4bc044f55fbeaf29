"""`imbal eval RUN_DIR`: rebuild a run's data and model from its config, score a checkpoint."""

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


def evaluate_run(run_dir: Path, *, which: str = "best", device: str | None = None,
                 imports: list[str] | tuple[str, ...] = (), data_root: str | None = None) -> dict:
    """Score checkpoint `which` of a run on its test set; the run's config names its plugins
    (absolute paths), `imports` adds more. The data is read from `data_root`, else from the
    root the run recorded in meta.json when the config names none. Process-wide settings are
    restored after."""
    with process_settings():
        return _evaluate(run_dir, which, device, tuple(imports), data_root)


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


def _evaluate(run_dir: Path, which: str, device: str | None, imports: tuple[str, ...],
              data_root: str | None = None) -> dict:
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
        setup.trainer.model.load_state_dict(ckpt["model"])
    except RuntimeError as err:
        raise UserError(mismatch(run_dir / "checkpoints" / f"{which}.pt", ckpt,
                                 cfg["model"]["backbone"], err)) from None
    metrics, _ = evaluate_split(setup, setup.data.test)
    out = {"checkpoint": which, "epoch": ckpt.get("epoch", ckpt.get("cursor", {}).get("epoch")),
           "test": metrics}
    # printed first: a run directory that cannot be written to still shows its figures
    say(per_class_table(setup.data.classes, metrics))
    print(json.dumps({k: metrics[k] for k in ("top1", "balanced_acc", "macro_f1",
                                               "minority_acc", "majority_acc")}, indent=2), flush=True)
    atomic_write_json(run_dir / f"eval_{which}.json", out)
    return out
