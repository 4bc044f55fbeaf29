"""data.imbalance.apply: per_batch — S3's in-loop masking, reproduced on purpose and warned."""

from __future__ import annotations

import json

import pytest
import torch

from imbal.config import load_config
from imbal.data.per_batch import PerBatchMask
from imbal.errors import UserError
from imbal.training.run import train
from imbal.training.setup import check_names

FAST = ["data.source=digits", "model.params={activation: relu}", "logging.progress=false",
        "train.optimizer={name: adam, lr: 0.003}", "train.threads=1", "train.epochs=1",
        "data.imbalance={kind: step, classes: [0, 1, 2, 3, 4], keep: 0.1, apply: per_batch}"]


def test_the_mask_keeps_the_classes_in_one_batch_of_every_k():
    mask = PerBatchMask([0, 1], 10, 4, torch.device("cpu"))
    targets = torch.tensor([0, 1, 2, 3, 0, 3, 2, 1])
    idx = torch.tensor([7, 0, 2, 5, 4, 3])
    for step in (0, 10, 20):
        assert torch.equal(mask(idx, targets, step), idx)
    for step in (1, 9, 11):
        assert mask(idx, targets, step).tolist() == [2, 5, 3]


def test_a_per_batch_run_masks_its_batches_counts_them_and_warns(tmp_path, monkeypatch, capsys):
    seen = []
    inner = PerBatchMask.__call__

    def spy(self, idx, targets, step):
        out = inner(self, idx, targets, step)
        seen.append((step, targets[idx].tolist(), targets[out].tolist()))
        return out

    monkeypatch.setattr(PerBatchMask, "__call__", spy)
    cfg = load_config(None, [*FAST, "train.batch_size=20"])
    res = train(cfg, out_dir=str(tmp_path / "r"), quiet=True)
    counts = json.loads((tmp_path / "r" / "counts.json").read_text())
    assert counts["imbalance_applied"] == "per_batch" and counts["removed"] == [0] * 10
    assert res["minority_classes"] == [0, 1, 2, 3, 4]
    assert [s for s, _, _ in seen] == list(range(len(seen))) and len(seen) == -(-sum(counts["train"]) // 20)
    for step, before, after in seen:
        if step % 10 == 0:
            assert after == before
        else:
            assert after == [t for t in before if t >= 5]
    row = json.loads((tmp_path / "r" / "metrics.jsonl").read_text().splitlines()[0])
    assert row["train"]["images"] == sum(len(after) for _, _, after in seen)
    err = capsys.readouterr().err
    assert ("warning: data.imbalance.apply: per_batch masks classes [0, 1, 2, 3, 4] out of every "
            "batch but one in 10 inside the training loop") in err


@pytest.mark.parametrize("sets, message", [
    (["data.imbalance={kind: longtail, ratio: 10, apply: per_batch}"],
     r"^data.imbalance.apply: per_batch reproduces S3's masking of a step imbalance; kind "
     r"longtail cannot be applied per batch$"),
    (["data.imbalance={kind: step, keep: 0.3, apply: per_batch}"],
     r"^data.imbalance.apply: per_batch keeps the step's classes in one batch of every k: keep "
     r"must be 1/k for an integer k \(or ratio k\), got 1/3.33333$"),
])
def test_what_cannot_be_applied_per_batch_is_refused(sets, message):
    with pytest.raises(UserError, match=message):
        check_names(load_config(None, sets))


def test_s3_as_run_config_is_s3s_schedule_per_batch():
    from pathlib import Path

    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "s3_mnist_lenet_as_run.yaml")
    assert cfg["data"]["imbalance"]["apply"] == "per_batch" and cfg["model"]["init"] == "xavier_uniform"
    gammas = [st["remedy"][0]["gamma"] for st in cfg["stages"]]
    assert gammas == [0.2, 0.5, 0.8, 1, 1.5, 2, 2.5, 3, 4, 5, 10, 15]
    assert [st["epochs"] for st in cfg["stages"]] == [10] * 12
    assert [st["optimizer"] == "continue" for st in cfg["stages"]] == [False] + [True] * 11
