"""Metrics from a hand-made confusion matrix: exact figures."""

import numpy as np
import pytest
import torch

from imbal.metrics import Groups, confusion_update, summarize


def test_confusion_update_counts_pairs():
    conf = torch.zeros(3, 3, dtype=torch.long)
    confusion_update(conf, torch.tensor([0, 1, 1, 2, 0]), torch.tensor([0, 1, 2, 2, 2]))
    assert conf.tolist() == [[1, 0, 0], [0, 1, 0], [1, 1, 1]]


def test_summary_figures_by_hand():
    # rows true, cols predicted
    conf = np.array([[8, 2, 0], [0, 5, 5], [0, 0, 10]])
    groups = Groups.make([100, 10, 1000], minority=[1], many_shot=100, few_shot=20)
    m = summarize(conf, groups)
    assert m["n"] == 30
    assert m["top1"] == pytest.approx(100 * 23 / 30, abs=1e-3)
    assert m["per_class_acc"] == [80.0, 50.0, 100.0]
    assert m["balanced_acc"] == pytest.approx(100 * (0.8 + 0.5 + 1.0) / 3, abs=1e-3)
    p = np.array([1.0, 5 / 7, 10 / 15])
    r = np.array([0.8, 0.5, 1.0])
    f1 = 2 * p * r / (p + r)
    assert m["macro_f1"] == pytest.approx(100 * f1.mean(), abs=1e-3)
    assert m["minority_acc"] == 50.0
    assert m["majority_acc"] == 90.0
    assert groups.many == [2] and groups.medium == [0] and groups.few == [1]
    assert m["many_acc"] == 100.0 and m["medium_acc"] == 80.0 and m["few_acc"] == 50.0


def test_empty_groups_are_null():
    m = summarize(np.eye(2, dtype=int) * 3, Groups.make([5, 5], [], 100, 20))
    assert m["minority_acc"] is None and m["majority_acc"] is None
    assert m["many_acc"] is None and m["few_acc"] == 100.0
