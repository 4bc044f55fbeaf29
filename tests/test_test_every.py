"""eval.test_every: by default the test set is scored only for best.pt and the last epoch."""

import json

from imbal.config import load_config
from imbal.study.report import build_report
from imbal.training.run import train

FAST = ["data.source=digits", "model.backbone=lenet", "model.params={activation: relu}",
        "train.optimizer={name: adam, lr: 0.003}", "train.batch_size=64", "logging.progress=false",
        "train.epochs=2", "data.subset.total=500", "train.threads=1"]


def rows_of(d):
    return [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()]


def test_test_every_scores_only_what_it_is_asked_and_trains_the_same(tmp_path):
    runs = {}
    for every in (None, 2, 1):
        d = tmp_path / f"every{every}"
        res = train(load_config(None, [*FAST, f"eval.test_every={every if every else 'null'}"]),
                    out_dir=str(d), quiet=True)
        runs[every] = res, rows_of(d)
    (plain, plain_rows), (two, two_rows), (one, one_rows) = runs[None], runs[2], runs[1]
    assert [r["test"] is None for r in plain_rows] == [True, True]
    assert [r["test"] is None for r in two_rows] == [True, False]
    assert all(r["test"] is not None and r["val"] is not None for r in one_rows)
    # testing does not change training: the same losses, validation, choice and figures
    for rows in (plain_rows, two_rows):
        assert [(r["train"]["loss"], r["val"]) for r in rows] == [
            (r["train"]["loss"], r["val"]) for r in one_rows]
    assert two_rows[1]["test"] == one_rows[1]["test"]
    for res in (plain, two):
        assert res["best_epoch"] == one["best_epoch"] and res["test"] == one["test"]
        assert res["test_last"] == one_rows[-1]["test"] == one["test_last"]
    # the report reads results.json: both metric sets are there without per-epoch tests
    rep = build_report([tmp_path / "everyNone"], metric_set="test_last")
    assert rep["groups"][0]["metrics"]["top1"]["mean"] == one["test_last"]["top1"]
