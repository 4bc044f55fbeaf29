"""The Python API (`imbal.train`, `imbal.load_run`): the same runs as `imbal train`, from code.

    run = imbal.train("configs/quickstart.yaml", overrides=["train.epochs=3"], out_dir="runs/q")
    run.results["test"]["balanced_acc"]
    again = imbal.load_run("runs/q")          # config, results, counts, metrics rows, meta

Bad input raises imbal.UserError (one line, raised before anything is written), as the command
line refuses it with exit status 2.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imbal.errors import UserError


@dataclass
class Run:
    """A run directory read back: what `imbal train` wrote there."""

    dir: Path
    config: dict[str, Any]  # config.yaml: the resolved config
    results: dict[str, Any] | None  # results.json (None while the run is unfinished)
    counts: dict[str, Any] | None  # counts.json: per-class train / val / test counts
    metrics: list[dict[str, Any]] = field(default_factory=list)  # metrics.jsonl, one per epoch
    meta: dict[str, Any] | None = None  # meta.json: provenance, plugins, status, times

    @property
    def complete(self) -> bool:
        return bool(self.results and self.results.get("complete"))

    def __repr__(self) -> str:
        status = (self.meta or {}).get("status", "unknown")
        test = (self.results or {}).get("test") or {}
        scores = ", ".join(f"{k} {test[k]:.2f}" for k in ("top1", "balanced_acc") if k in test)
        return f"Run('{self.dir}', {status}{', test ' + scores if scores else ''})"


def train(config: str | Path | dict[str, Any], overrides: list[str] | tuple[str, ...] = (),
          out_dir: str | Path | None = None, *, imports: list[str] | tuple[str, ...] = (),
          overwrite: bool = False, resume: bool = False, quiet: bool = True) -> Run:
    """Train one run and return it read back from its directory.

    `config`: a YAML path (relative `imports:` and `extends:` from the file) or a config mapping
    (relative paths from the working directory); `overrides`: "key.path=value" strings as with
    --set; `out_dir`: the run directory (default logging.out_dir/name); `imports`: extra
    plugins, as --import. Without `quiet=False` nothing is printed."""
    from imbal.config import load_config
    from imbal.training.run import train as run_train  # lazy: torch

    if not isinstance(config, (str, Path, dict)):
        raise UserError(f"config must be a YAML path or a mapping, got {type(config).__name__}")
    cfg = load_config(config, list(overrides), imports=list(imports))
    run_dir = Path(out_dir) if out_dir else Path(cfg["logging"]["out_dir"]) / cfg["name"]
    run_train(cfg, out_dir=str(run_dir), overwrite=overwrite, quiet=quiet, resume=resume)
    return load_run(run_dir)


def _json(path: Path) -> Any:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError:
        raise UserError(f"{path} is not valid JSON") from None


def load_run(run_dir: str | Path) -> Run:
    """Read a run directory (finished or not) without importing torch or any plugin."""
    d = Path(run_dir)
    cfg_path = d / "config.yaml"
    if not cfg_path.is_file():
        raise UserError(f"{d} is not a run directory: no config.yaml")
    from imbal.config import read_yaml

    config = read_yaml(cfg_path)
    metrics_path = d / "metrics.jsonl"
    rows = []
    if metrics_path.is_file():
        rows = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()]
    return Run(dir=d, config=config, results=_json(d / "results.json"),
               counts=_json(d / "counts.json"), metrics=rows, meta=_json(d / "meta.json"))
