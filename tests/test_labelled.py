"""data.labelled_per_class: exactly N labels per class, drawn with the data seed from the
imbalanced training split; the rest is the `unlabelled: rest` stream."""

import pytest
import torch

from imbal.config import load_config
from imbal.data.prepare import prepare_data
from imbal.errors import UserError
from imbal.training.setup import check_names

STEP = ["data.source=digits", "data.imbalance={kind: step, keep: 0.3}"]


def prepared(*sets: str, seed: int = 0):
    cfg = load_config(None, [*STEP, *sets])
    return prepare_data(cfg["data"], data_seed=seed)


def test_exactly_n_labels_per_class_and_the_rest_unlabelled():
    plain, lab = prepared(), prepared("data.labelled_per_class=12")
    c_plain, c_lab = plain.counts(), lab.counts()
    assert c_lab["train"] == [12] * 10
    rest = [a - 12 for a in c_plain["train"]]
    assert c_lab["unlabelled_rest"] == rest and lab.rest.targets.numel() == sum(rest)
    assert "unlabelled_rest" not in c_plain and plain.rest.targets.numel() == 0
    # The other splits are those of the config without labels: val, test, removed.
    for key in ("val", "test", "removed"):
        assert c_lab[key] == c_plain[key]
    assert torch.equal(lab.val.images, plain.val.images)
    # labels + rest = the imbalanced training split, each image once
    pool = sorted(bytes(x.numpy()) for x in plain.train.images)
    mine = sorted(bytes(x.numpy()) for x in torch.cat([lab.train.images, lab.rest.images]))
    assert mine == pool


def test_the_draw_follows_the_data_seed_only():
    a, b = prepared("data.labelled_per_class=5"), prepared("data.labelled_per_class=5")
    c = prepared("data.labelled_per_class=5", seed=1)
    assert torch.equal(a.train.images, b.train.images)
    assert not torch.equal(a.train.images, c.train.images)


def test_more_labels_than_a_class_has_are_refused():
    counts = prepared().counts()["train"]
    with pytest.raises(UserError) as err:
        prepared("data.labelled_per_class=100")
    assert str(err.value) == (f"data.labelled_per_class 100: class '0' has only {counts[0]} "
                              f"training images (after the imbalance and the validation split)")


def test_unlabelled_rest_without_labelled_per_class_is_refused():
    cfg = load_config(None, [*STEP, "stages=[{name: rot, task: rotation, unlabelled: rest}, {name: t}]"])
    with pytest.raises(UserError) as err:
        check_names(cfg)
    assert str(err.value) == ("stage 'rot': unlabelled: rest needs data.labelled_per_class (the "
                              "training images left without labels are the rest)")
