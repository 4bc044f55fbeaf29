"""PNG plots for `imbal report --plots DIR`, drawn from the report's plain data (matplotlib Agg)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _zeros(values: list[float | None]) -> list[float]:
    """None (no value, or no std for n=1) drawn as 0."""
    return [0.0 if v is None else v for v in values]


def _ylim(ax: Any, means: list[float | None], stds: list[float | None]) -> None:
    """Accuracies near 100 would all look alike from 0: start the axis a little below the lowest."""
    lows = [m - (s or 0.0) for m, s in zip(means, stds, strict=True) if m is not None]
    lo = max(0.0, math.floor((min(lows, default=0.0) - 2.0) / 5.0) * 5.0)
    ax.set_ylim(lo, 100.5)
    ax.set_ylabel("accuracy (%)" if lo == 0 else f"accuracy (%, axis from {lo:g})")


def _save(fig: Any, ax: Any, path: Path) -> Path:
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.savefig(path, dpi=110, bbox_inches="tight")
    _plt().close(fig)
    return path


def per_class_figure(groups: list[dict[str, Any]], path: Path) -> Path:
    """Grouped bars: one cluster per class, one bar per configuration (mean, std error bars)."""
    classes = groups[0]["classes"] or [str(i) for i in range(len(groups[0]["per_class"]["mean"]))]
    width = 0.8 / len(groups)
    fig, ax = _plt().subplots(figsize=(max(6.0, 0.35 * len(classes) * len(groups) + 2), 4.5))
    for j, g in enumerate(groups):
        xs = [i - 0.4 + width * (j + 0.5) for i in range(len(classes))]
        pc = g["per_class"]
        ax.bar(xs, _zeros(pc["mean"]), width, yerr=_zeros(pc["std"]), capsize=2,
               label=f"{g['label']} (n={g['n']})")
    ax.set_xticks(range(len(classes)))
    ax.set_xticklabels([str(c) for c in classes], rotation=45 if len(classes) > 12 else 0)
    _ylim(ax, [m for g in groups for m in g["per_class"]["mean"]],
          [s for g in groups for s in g["per_class"]["std"]])
    ax.set_title("per-class accuracy: mean ± std over seeds")
    return _save(fig, ax, path)


def minority_majority_figure(groups: list[dict[str, Any]], path: Path) -> Path:
    """Per configuration: minority and majority accuracy side by side (mean, std error bars)."""
    fig, ax = _plt().subplots(figsize=(max(6.0, 0.9 * len(groups) + 2), 4.5))
    width, means, stds = 0.38, [], []
    for k, (metric, name) in enumerate((("minority_acc", "minority"), ("majority_acc", "majority"))):
        xs = [i - width / 2 + k * width for i in range(len(groups))]
        mean = [g["metrics"][metric]["mean"] for g in groups]
        std = [g["metrics"][metric]["std"] for g in groups]
        ax.bar(xs, _zeros(mean), width, yerr=_zeros(std), capsize=3, label=name)
        means, stds = means + mean, stds + std
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels([g["label"] for g in groups], rotation=30, ha="right")
    _ylim(ax, means, stds)
    ax.set_title("minority vs majority accuracy: mean ± std over seeds")
    return _save(fig, ax, path)


def write_plots(rep: dict[str, Any], out_dir: Path) -> list[Path]:
    """per_class_acc.png (one per distinct class list) and minority_majority.png."""
    groups = [g for g in rep["groups"] if g["n"] > 0]
    if not groups:
        return []
    out_dir.mkdir(parents=True, exist_ok=True)
    by_classes: dict[tuple, list[dict[str, Any]]] = {}
    for g in groups:
        key = tuple(g["classes"]) or (len(g["per_class"]["mean"]),)
        by_classes.setdefault(key, []).append(g)
    written = []
    for i, same in enumerate(by_classes.values()):
        name = "per_class_acc.png" if i == 0 else f"per_class_acc_{i + 1}.png"
        written.append(per_class_figure(same, out_dir / name))
    written.append(minority_majority_figure(groups, out_dir / "minority_majority.png"))
    return written
