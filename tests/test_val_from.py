"""data.val_from: removed — validation images from those the imbalance removed (the ImageNet-LT
convention), so the long-tail configs train on the published set."""

from __future__ import annotations

from pathlib import Path

import pytest
import synth
import torch
from test_standard_sources import as_official

from imbal.config import load_config
from imbal.data.imbalance import split_from_removed, target_counts
from imbal.data.prepare import prepare_data
from imbal.errors import UserError
from imbal.training.setup import format_counts

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_cifar10_lt_trains_on_the_published_set(tmp_path, monkeypatch):
    """CIFAR-shaped data, 5,000 a class, lt_cifar_resnet32.yaml: the long tail keeps 12,406;
    validation takes 100 a class from the removed images; class 0 lost none and gives 100 of
    its own, so training has 12,406 - 100 = 12,306 images."""
    synth.write_cifar10_batches(str(tmp_path), 5000, 2)
    as_official(monkeypatch, "cifar10", tmp_path)
    cfg = load_config(CONFIGS / "lt_cifar_resnet32.yaml",
                      ["data.source=cifar10", f"data.root={tmp_path}"])
    data = prepare_data(cfg["data"], data_seed=0)
    counts = data.counts()
    lt = target_counts("longtail", [5000] * 10, ratio=100)
    assert sum(lt) == 12406
    assert counts["train"] == [lt[0] - 100] + lt[1:] and sum(counts["train"]) == 12306
    assert counts["val"] == [100] * 10 and counts["val_from_kept"] == [100] + [0] * 9
    assert counts["removed"] == [0] + [5000 - n - 100 for n in lt[1:]]
    assert "1 class(es) short of them gave 100 of their kept images: airplane 100" in (
        format_counts(counts))


def test_split_from_removed_takes_the_removed_first_and_the_shortfall_from_the_kept():
    targets = torch.tensor([0] * 10 + [1] * 10 + [2] * 10)
    kept = torch.tensor([0, 1, 2, 3, 4, 5, 6, 7, 10, 11, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29])
    removed = torch.tensor([8, 9, 12, 13, 14, 15, 16, 17, 18, 19])
    tr, val, short = split_from_removed(targets, kept, removed, 3, torch.Generator().manual_seed(0))
    assert short == [1, 0, 3]
    assert torch.bincount(targets[val]).tolist() == [3, 3, 3]
    assert torch.bincount(targets[tr]).tolist() == [7, 2, 7]
    assert set(val[targets[val] == 0].tolist()) >= {8, 9}  # both removed ones, one kept
    assert set(val[targets[val] == 1].tolist()) <= set(removed.tolist())
    assert not set(tr.tolist()) & set(val.tolist()) and set(tr.tolist()) <= set(kept.tolist())
    with pytest.raises(UserError, match=r"^data.val_per_class 10: class 0 \('a'\) has 2 removed and "
                                        r"8 kept images, which leaves it no training image$"):
        split_from_removed(targets, kept, removed, 10, torch.Generator().manual_seed(0),
                           class_names=["a", "b", "c"])
