"""The t-SNE map behind `imbal embed RUN_DIR` (imbal/study/embed.py): a t-SNE map of the penultimate features (model.features, the head's
input) of a run's test set, from a checkpoint.

The test set is subsampled to --max-points images (a seeded random choice, kept in test-set
order), embedded with scikit-learn's TSNE (PCA init, random_state = --seed), and written to
RUN/embed/ (or --out): tsne.csv (index in the test split, label, class, minority, x, y) and
tsne.png (coloured by class; minority classes drawn as triangles with a black outline).
`eval.embed: true` does the same with best.pt at the end of a run.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import torch

from imbal.errors import UserError
from imbal.training.runs import atomic_write_bytes, atomic_write_text, load_checkpoint

CSV_FIELDS = ("index", "label", "class", "minority", "x", "y")


def subsample(n: int, max_points: int, seed: int) -> torch.Tensor:
    """A seeded choice of min(n, max_points) indices of 0..n-1, in increasing order."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randperm(n, generator=gen)[:max_points].sort().values


@torch.inference_mode()
def features_of(trainer, images: torch.Tensor) -> np.ndarray:
    """The evaluated model's features of images (normalised as in training), N×feature_dim
    float32 (the moving average's, when train.ema is on)."""
    model = trainer.eval_model
    model.eval()
    out = []
    for start in range(0, len(images), trainer.eval_batch_size):
        x = trainer.prepare(images[start:start + trainer.eval_batch_size], train=False)
        with trainer.autocast():
            out.append(model.features(x).float().cpu())
    return torch.cat(out).numpy()


def tsne(features: np.ndarray, seed: int, perplexity: float) -> np.ndarray:
    from sklearn.manifold import TSNE

    n = len(features)
    if n < 4:
        raise UserError(f"t-SNE needs at least 4 test images, this run has {n}")
    perplexity = min(perplexity, (n - 1) / 3)  # sklearn: perplexity < n; ~3 perplexities a point
    return TSNE(n_components=2, perplexity=perplexity, init="pca",
                random_state=seed).fit_transform(features.astype(np.float64))


def embed_setup(setup, out_dir: Path, *, title: str, max_points: int = 2000, seed: int = 0,
                perplexity: float = 30.0) -> Path:
    """t-SNE of the loaded model's test features into out_dir; returns the CSV path."""
    if max_points < 4:
        raise UserError(f"--max-points must be at least 4, got {max_points}")
    test, classes, minority = setup.data.test, setup.data.classes, set(setup.data.minority)
    idx = subsample(len(test.targets), max_points, seed)
    feats = features_of(setup.trainer, test.images[idx.to(test.images.device)])
    xy = tsne(feats, seed, perplexity)
    labels = test.targets.cpu()[idx].tolist()
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_FIELDS)
    for i, y, (a, b) in zip(idx.tolist(), labels, xy.tolist(), strict=True):
        w.writerow([i, y, classes[y], int(y in minority), f"{a:.6g}", f"{b:.6g}"])
    atomic_write_text(out_dir / "tsne.csv", buf.getvalue())
    from imbal.plots import embedding_png

    png = embedding_png(xy, np.array(labels), classes, sorted(minority),
                        f"{title}: {len(labels)} of {len(test.targets)} test images, seed {seed}")
    atomic_write_bytes(out_dir / "tsne.png", png)
    return out_dir / "tsne.csv"


def embed_best(setup, run_dir: Path) -> Path:
    """eval.embed: the end of a run, best.pt's test features into RUN/embed (defaults)."""
    best = load_checkpoint(run_dir / "checkpoints" / "best.pt")["model"]
    setup.trainer.eval_model.load_state_dict(best)  # the moving average's, when train.ema is on
    return embed_setup(setup, run_dir / "embed", title=f"{setup.cfg['name']} best.pt")
