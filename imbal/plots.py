"""Figures a run writes: the confusion matrix (PNG and TensorBoard) and the class-count chart."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def confusion_figure(conf: np.ndarray, classes: list[str], title: str):
    """Counts in each cell, rows coloured by row-normalised rate so small classes stay visible."""
    plt = _pyplot()
    c = len(classes)
    rates = conf / np.maximum(conf.sum(axis=1, keepdims=True), 1)
    size = max(4.0, 0.55 * c + 2)
    fig, ax = plt.subplots(figsize=(size, size * 0.9))
    im = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(c), classes, rotation=45, ha="right")
    ax.set_yticks(range(c), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    if c <= 30:
        for i in range(c):
            for j in range(c):
                ax.text(j, i, str(int(conf[i, j])), ha="center", va="center", fontsize=7,
                        color="white" if rates[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="row rate")
    fig.tight_layout()
    return fig


def save_confusion(conf: np.ndarray, classes: list[str], title: str, path: Path) -> None:
    plt = _pyplot()
    fig = confusion_figure(conf, classes, title)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)


def count_scale(train: list[int]) -> str:
    """A log axis when the largest class has 10x the smallest or more (a long tail's few-shot
    classes are invisible on a linear one)."""
    positive = [n for n in train if n > 0]
    return "log" if positive and max(positive) >= 10 * min(positive) else "linear"


def save_counts(counts: dict, classes: list[str], path: Path) -> None:
    """Grouped bars of per-class train/val/test counts (imbal data --plot)."""
    plt = _pyplot()
    x = np.arange(len(classes))
    fig, ax = plt.subplots(figsize=(max(5.0, 0.6 * len(classes) + 2), 4))
    splits = [s for s in ("train", "val", "test") if s in counts]
    width = 0.8 / len(splits)
    for k, split in enumerate(splits):
        ax.bar(x + (k - (len(splits) - 1) / 2) * width, counts[split], width, label=split)
    ax.set_xticks(x, classes, rotation=45, ha="right")
    ax.set_yscale(count_scale(counts["train"]))
    ax.set_ylabel("images" + (" (log scale)" if count_scale(counts["train"]) == "log" else ""))
    ax.set_title("per-class counts after imbalance")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def embedding_png(xy: np.ndarray, labels: np.ndarray, classes: list[str], minority: list[int],
                  title: str) -> bytes:
    """A 2-D embedding (t-SNE) as PNG bytes: one colour per class; minority classes drawn as
    larger triangles with a black outline, majority classes as dots."""
    import io

    plt = _pyplot()
    cmap = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
    fig, ax = plt.subplots(figsize=(7.5, 6))
    for c, name in enumerate(classes):
        pts = xy[labels == c]
        if not len(pts):
            continue
        colour = cmap(c % cmap.N)
        if c in minority:
            ax.scatter(pts[:, 0], pts[:, 1], s=28, marker="^", color=colour, edgecolors="black",
                       linewidths=0.6, label=f"{name} (minority)")
        else:
            ax.scatter(pts[:, 0], pts[:, 1], s=10, marker="o", color=colour, label=name)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, markerscale=1.2, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    return buf.getvalue()
