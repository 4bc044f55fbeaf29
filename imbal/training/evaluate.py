"""`imbal eval RUN_DIR`: rebuild a run's data and model from its config, score a checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

from imbal.config import load_config
from imbal.errors import UserError
from imbal.training.optim import without_untaken_arguments
from imbal.training.runs import atomic_write_json, load_checkpoint, mismatch
from imbal.training.settings import process_settings
from imbal.training.setup import build_setup
from imbal.training.stage_kinds import evaluate_split


def evaluate_run(run_dir: Path, *, which: str = "best", device: str | None = None,
                 imports: list[str] | tuple[str, ...] = ()) -> dict:
    """Score checkpoint `which` of a run on its test set; the run's config names its plugins
    (absolute paths), `imports` adds more. Process-wide settings are restored after."""
    with process_settings():
        return _evaluate(run_dir, which, device, tuple(imports))


def _evaluate(run_dir: Path, which: str, device: str | None, imports: tuple[str, ...]) -> dict:
    cfg_path = run_dir / "config.yaml"
    if not cfg_path.is_file():
        raise UserError(f"{run_dir} is not a run directory: no config.yaml")
    overrides = [f"train.device={device}"] if device else []
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
    print(json.dumps({k: metrics[k] for k in ("top1", "balanced_acc", "macro_f1",
                                               "minority_acc", "majority_acc")}, indent=2), flush=True)
    atomic_write_json(run_dir / f"eval_{which}.json", out)
    return out
