"""`imbal report` from hand-made results.json files: exact means, sample stds, deltas, listings."""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
from pathlib import Path

import pytest

from imbal.errors import UserError
from imbal.study import report

CLASSES = ["c0", "c1", "c2"]
# label -> per-seed (top1, balanced_acc, minority_acc, majority_acc, macro_f1)
VALUES = {
    "none": [(98.0, 90.0, 80.0, 99.0, 90.0), (99.0, 92.0, 81.0, 99.0, 91.0),
             (100.0, 94.0, 85.0, 99.0, 92.0)],
    "focal": [(99.0, 95.0, 90.0, 98.0, 93.0), (99.5, 95.0, 91.0, 98.0, 93.5),
              (100.0, 95.0, 95.0, 98.0, 94.0)],
    "ldam": [(97.0, 96.0, 93.0, 97.0, 95.0)],
}
REMEDY = {"none": [], "focal": [{"name": "focal", "gamma": 2}], "ldam": [{"name": "ldam"}]}


def metrics(vals: tuple, per_class: list[float], minority=True) -> dict:
    out = dict(zip(report.METRICS, vals, strict=True))
    if not minority:
        out["minority_acc"] = None
    return {**out, "per_class_acc": per_class, "n": 100}


def write_run(d: Path, name: str, vals: tuple, remedy: list, *, seed: int = 0, lr: float = 0.1,
              per_class=None, last=None, complete=True) -> None:
    d.mkdir(parents=True)
    cfg = {"name": name, "remedy": remedy, "pretrain": None, "seeds": {"data": 0, "train": seed},
           "train": {"optimizer": {"lr": lr}, "threads": seed + 1}, "logging": {"out_dir": "x"}}
    res = {"name": name, "complete": complete, "classes": CLASSES, "config": cfg,
           "seeds": cfg["seeds"], "test": metrics(vals, per_class or [vals[0]] * 3),
           "test_last": last or metrics(vals, [50.0] * 3)}
    (d / "results.json").write_text(json.dumps(res))


def make_sweep(root: Path) -> Path:
    """A sweep dir: none x3, focal x3, ldam with 1 complete, 1 failed, 1 never started."""
    sd = root / "s"
    runs = []
    for label, rows in VALUES.items():
        for seed in range(3):
            name = f"{label}__d0_s{seed}"
            runs.append({"name": name, "label": label, "overrides": {"remedy": REMEDY[label]},
                         "seeds": {"data": 0, "train": seed}})
            if seed < len(rows):
                pc = [rows[seed][0], 50.0 + seed, 10.0 * seed]
                write_run(sd / name, name, rows[seed], REMEDY[label], seed=seed, per_class=pc)
    (sd / "ldam__d0_s1").mkdir()
    (sd / "ldam__d0_s1" / "error.txt").write_text(
        "Traceback (most recent call last):\n  File x\nValueError: boom\n")
    (sd / "sweep.json").write_text(json.dumps({"name": "s", "runs": runs}))
    return sd


def test_groups_means_sample_stds_and_deltas(tmp_path):
    rep = report.build_report([make_sweep(tmp_path)])
    assert rep["baseline"] == "none"  # the only configuration with an empty remedy list
    by = {g["label"]: g for g in rep["groups"]}
    assert [g["label"] for g in rep["groups"]] == ["none", "focal", "ldam"]
    assert [by[k]["n"] for k in by] == [3, 3, 1]
    none, focal, ldam = (by[k]["metrics"] for k in ("none", "focal", "ldam"))
    assert none["top1"]["mean"] == pytest.approx(99.0) and none["top1"]["std"] == pytest.approx(1.0)
    assert none["balanced_acc"]["std"] == pytest.approx(2.0)
    assert none["minority_acc"]["mean"] == pytest.approx(82.0)
    assert none["minority_acc"]["std"] == pytest.approx(math.sqrt(7.0))  # ddof=1: 14 / 2
    assert none["majority_acc"]["std"] == 0.0
    assert focal["top1"]["mean"] == pytest.approx(99.5) and focal["top1"]["std"] == pytest.approx(0.5)
    assert focal["top1"]["delta"] == pytest.approx(0.5)
    assert focal["balanced_acc"]["delta"] == pytest.approx(3.0)
    assert focal["minority_acc"]["delta"] == pytest.approx(10.0)
    assert focal["majority_acc"]["delta"] == pytest.approx(-1.0)
    assert focal["macro_f1"]["delta"] == pytest.approx(2.5)
    assert none["top1"]["delta"] == 0.0
    assert ldam["top1"]["std"] is None and ldam["top1"]["delta"] == pytest.approx(-2.0)
    assert by["none"]["per_class"]["mean"] == pytest.approx([99.0, 51.0, 10.0])
    assert by["none"]["per_class"]["std"] == pytest.approx([1.0, 1.0, 10.0])
    missing = {r["name"]: (r["status"], r["error"]) for r in rep["not_in_table"]}
    assert missing == {"ldam__d0_s1": ("failed", "ValueError: boom"),
                       "ldam__d0_s2": ("not started", None)}


def test_named_baseline_and_metric_set(tmp_path):
    sd = make_sweep(tmp_path)
    # The sweep's parent directory finds it one level down.
    assert report.build_report([tmp_path]) == report.build_report([sd])
    rep = report.build_report([sd], baseline="focal")
    by = {g["label"]: g for g in rep["groups"]}
    assert by["none"]["metrics"]["top1"]["delta"] == pytest.approx(-0.5)
    assert by["focal"]["baseline"] and not by["none"]["baseline"]
    with pytest.raises(UserError, match="--baseline 'ce' is not a configuration here; "
                                        "labels: none, focal, ldam"):
        report.build_report([sd], baseline="ce")
    last = metrics((10.0, 20.0, 30.0, 40.0, 50.0), [1.0, 2.0, 3.0])
    write_run(tmp_path / "loose" / "r__d0_s0", "r__d0_s0", VALUES["none"][0], [], last=last)
    rep = report.build_report([tmp_path / "loose"], metric_set="test_last")
    assert rep["groups"][0]["metrics"]["macro_f1"]["mean"] == 50.0


def test_loose_runs_grouped_by_config_without_seeds(tmp_path):
    root = tmp_path / "runs"
    for seed, top1 in ((0, 90.0), (1, 92.0)):
        write_run(root / f"ce__d0_s{seed}", f"ce__d0_s{seed}", (top1, 1, 1, 1, 1), [], seed=seed)
    # Same stripped name, another learning rate: a different configuration, told apart.
    write_run(root / "ce__d0_s5", "ce__d0_s5", (80.0, 1, 1, 1, 1), [], seed=5, lr=0.5)
    write_run(root / "half", "half", (70.0, 1, 1, 1, 1), [], complete=False)
    rep = report.build_report([root])
    groups = sorted(rep["groups"], key=lambda g: g["n"])
    assert [g["n"] for g in groups] == [1, 2]
    assert groups[1]["metrics"]["top1"]["mean"] == 91.0
    # the labels say which setting tells them apart
    assert groups[1]["label"] == "ce (train.optimizer.lr=0.1)"
    assert groups[0]["label"] == "ce (train.optimizer.lr=0.5)"
    assert rep["baseline"] is None  # two configurations without a remedy: none is guessed
    assert rep["not_in_table"] == [{"name": "half", "dir": str(root / "half"), "label": None,
                                    "status": "incomplete", "error": "results.json not complete"}]
    # Run dirs given directly work too; the same run named twice counts once.
    rep = report.build_report([root / "half", root / "ce__d0_s5", root])
    assert sorted(g["n"] for g in rep["groups"]) == [1, 2] and len(rep["not_in_table"]) == 1


def test_refused_inputs(tmp_path):
    with pytest.raises(UserError, match="not a directory"):
        report.build_report([tmp_path / "nope"])
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(UserError, match="no run .* or sweep .* in it or one level below"):
        report.build_report([tmp_path / "empty"])


def cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    report.add_arguments(parser)
    return report.run(parser.parse_args(argv))


def test_markdown_csv_json_outputs(tmp_path, capsys):
    sd = make_sweep(tmp_path)
    assert cli([str(sd)]) == 0
    md = capsys.readouterr().out
    lines = md.splitlines()
    assert "difference of means vs baseline 'none'" in lines[0]
    assert lines[2] == ("| configuration | n | top-1 | balanced acc | minority acc | "
                        "majority acc | macro-F1 |")
    # [95% CI]: t(0.975, 2) = 4.3027; (Δ, p of the paired t-test over the three seeds)
    assert lines[4].startswith("| none (baseline) | 3 | 99.00 ± 1.00 [96.52, 101.48] | "
                               "92.00 ± 2.00 [87.03, 96.97] |")
    assert lines[5].startswith("| focal | 3 | 99.50 ± 0.50 [98.26, 100.74] (+0.50, p=0.23) | "
                               "95.00 ± 0.00 [95.00, 95.00] (+3.00, p=0.12) |")
    assert lines[6].startswith("| ldam | 1 | 97.00 ± — (-2.00) |")
    assert "Not in the table (2 runs):" in md
    assert f"- ldam__d0_s1 ({sd / 'ldam__d0_s1'}): failed — ValueError: boom" in md
    assert "- ldam__d0_s2" in md and "not started" in md

    assert cli([str(sd), "--format", "csv", "--out", str(tmp_path / "r.csv")]) == 0
    rows = list(csv.DictReader(io.StringIO((tmp_path / "r.csv").read_text())))
    assert [r["label"] for r in rows] == ["none", "focal", "ldam", "ldam", "ldam"]
    assert float(rows[1]["top1_mean"]) == pytest.approx(99.5)
    assert float(rows[1]["top1_delta"]) == pytest.approx(0.5)
    assert rows[2]["top1_std"] == "" and rows[0]["status"] == "baseline"
    assert (rows[3]["status"], rows[3]["runs"], rows[3]["error"]) == (
        "failed", "ldam__d0_s1", "ValueError: boom")

    assert cli([str(sd), "--format", "json", "--baseline", "focal"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["baseline"] == "focal" and data["metric_set"] == "test"
    assert data["groups"][0]["metrics"]["minority_acc"]["values"] == [80.0, 81.0, 85.0]
    assert len(data["not_in_table"]) == 2


def test_null_metrics_and_no_complete_runs(tmp_path):
    d = tmp_path / "bal"
    write_run(d, "bal", (99.0, 99.0, 0.0, 99.0, 99.0), [])
    res = json.loads((d / "results.json").read_text())
    res["test"]["minority_acc"] = None  # a balanced set has no minority group
    (d / "results.json").write_text(json.dumps(res))
    md = report.to_markdown(report.build_report([d]))
    assert "| bal (baseline) | 1 | 99.00 ± — | 99.00 ± — | — | 99.00 ± — | 99.00 ± — |" in md
    (d / "results.json").unlink()
    (d / "error.txt").write_text("worker process exited with status 9\nlog tail\n")
    rep = report.build_report([d])
    assert rep["groups"] == [] and rep["not_in_table"][0]["error"].endswith("status 9")


def test_plots_are_pngs(tmp_path, capsys):
    sd = make_sweep(tmp_path)
    assert cli([str(sd), "--plots", str(tmp_path / "plots")]) == 0
    names = sorted(p.name for p in (tmp_path / "plots").iterdir())
    assert names == ["minority_majority.png", "per_class_acc.png"]
    for n in names:
        data = (tmp_path / "plots" / n).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    assert f"wrote {tmp_path / 'plots' / 'per_class_acc.png'}" in capsys.readouterr().err


def test_confidence_interval_and_paired_test_against_hand_values():
    from imbal.study.stats import ci95, paired_t

    # diffs 1, 2, 3: mean 2, sd 1, t = 2 sqrt(3); with 2 degrees of freedom the two-sided
    # p is 1 - t / sqrt(t^2 + 2) = 1 - sqrt(12/14)
    got = paired_t([(1.0, 0.0), (2.0, 0.0), (3.0, 0.0)])
    assert got["n"] == 3 and got["mean_diff"] == 2.0
    assert got["p"] == pytest.approx(1 - math.sqrt(12 / 14), rel=1e-9)
    assert ci95([1.0, 2.0, 3.0]) == pytest.approx(4.302652729749464 / math.sqrt(3), rel=1e-9)
    assert ci95([5.0]) is None and paired_t([(1.0, 0.0)]) is None
    assert paired_t([(2.0, 1.0), (3.0, 2.0)])["p"] == 0.0
    assert paired_t([(2.0, 2.0), (3.0, 3.0)])["p"] == 1.0


def test_runs_differing_only_by_folder_are_one_replicate(tmp_path):
    root = tmp_path / "runs"
    write_run(root / "a" / "ce__d0_s0", "ce__d0_s0", (90.0, 1, 1, 1, 1), [], seed=0)
    write_run(root / "b" / "ce__d0_s0", "ce__d0_s0", (90.0, 1, 1, 1, 1), [], seed=0)
    write_run(root / "c" / "ce__d0_s1", "ce__d0_s1", (92.0, 1, 1, 1, 1), [], seed=1)
    rep = report.build_report([root / "a", root / "b", root / "c"])
    assert [g["n"] for g in rep["groups"]] == [2]
    assert rep["groups"][0]["metrics"]["top1"]["values"] == [90.0, 92.0]
    assert rep["not_in_table"] == [{"name": "ce__d0_s0", "dir": str(root / "b" / "ce__d0_s0"),
                                    "label": None, "status": "duplicate",
                                    "error": f"same config and seeds as {root / 'a' / 'ce__d0_s0'}"}]
