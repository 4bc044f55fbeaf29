"""The bad-input catalogue: each case is one line on stderr, a non-zero exit, no traceback, and no
run directory left behind. Data cases use synthetic files in the real on-disk formats."""

import os

import pytest
from synth import write_image_folder, write_mnist_idx

from imbal.cli import main

FAST = ["data.source=digits", "train.epochs=1", "logging.progress=false",
        "model.params={activation: relu}"]


def refuse(tmp_path, capsys, sets, *, config="name: bad\n", out=None, code=2):
    cfg = tmp_path / "c.yaml"
    if config is not None:
        cfg.write_text(config)
    out = out or tmp_path / "out"
    got = main(["train", str(cfg), "--out", str(out), "--quiet",
                *[a for s in [*FAST, *sets] for a in ("--set", s)]])
    err = capsys.readouterr().err
    assert got == code, err
    assert err.startswith("imbal: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    assert not os.path.exists(out), "a refused run must not leave a directory behind"
    return err


@pytest.mark.parametrize("sets,message", [
    (["train.epochs=0"], "bad value for 'train.epochs'"),
    (["train.batch_size=-1"], "bad value for 'train.batch_size'"),
    (["train.epochs=[1]"], "bad value for 'train.epochs'"),
    (["data.imbalance={kind: step, keep: 0}"], "keep"),
    (["data.imbalance={kind: step, keep: 1.5}"], "keep"),
    (["data.imbalance={kind: longtail, ratio: 0.5}"], "ratio"),
    (["data.imbalance={kind: step, classes: [3, 10]}"], "10"),
    (["data.imbalance={kind: explicit, counts: [5, 5]}"], "counts"),
    (["data.imbalance={kind: step, keep: 0.001}"], "no training images"),
    (["data.imbalance={kind: zipf}"], "unknown imbalance 'zipf'"),
    (["data.val_fraction=0.01", "data.imbalance={kind: step, keep: 0.2}"], "validation"),
    (["model.backbone=vgg"], "unknown backbone 'vgg'"),
    (["remedy=[{name: focal, gama: 2}]"], "gama"),
    (["remedy=[focal, focall]"], "unknown remedy 'focall'"),
    (["remedy=[balanced_softmax, {name: logit_adjust}]"], "balanced_softmax"),
    (["train.schedule.name=multistep"], "milestones"),
])
def test_config_and_data_refusals(tmp_path, capsys, sets, message):
    assert message in refuse(tmp_path, capsys, sets)


def test_missing_config_file(tmp_path, capsys):
    err = refuse(tmp_path, capsys, [], config=None)
    assert "config file not found" in err


def test_yaml_syntax_error(tmp_path, capsys):
    err = refuse(tmp_path, capsys, [], config="train:\n  epochs: [1,\n")
    assert "YAML syntax error" in err and "line" in err


def test_unknown_key(tmp_path, capsys):
    assert "did you mean 'epochs'" in refuse(tmp_path, capsys, [], config="train: {epoch: 2}\n")


def test_missing_dataset_files_say_how_to_get_them(tmp_path, capsys):
    err = refuse(tmp_path, capsys, ["data.source=mnist", f"data.root={tmp_path / 'empty'}"])
    assert "MNIST" in err and ("download" in err or "IMBAL_DATA" in err)


def test_unwritable_output_directory(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    err = refuse(tmp_path, capsys, [], out=blocker / "run")
    assert "cannot write to output directory" in err


def test_imagefolder_with_an_empty_class_folder(tmp_path, capsys):
    root = tmp_path / "imgs"
    write_image_folder(str(root), ["a", "b"], 4, size=8)
    for f in (root / "train" / "b").iterdir():
        f.unlink()
    err = refuse(tmp_path, capsys, ["data.source=imagefolder", f"data.root={root}"])
    assert "'b'" in err or "/b" in err


def test_imagefolder_without_class_folders(tmp_path, capsys):
    (tmp_path / "imgs" / "train").mkdir(parents=True)
    (tmp_path / "imgs" / "test").mkdir()
    err = refuse(tmp_path, capsys, ["data.source=imagefolder", f"data.root={tmp_path / 'imgs'}"])
    assert "no class sub-folders" in err


def test_imagefolder_skips_a_non_image_with_a_warning(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("IMBAL_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "imgs"
    write_image_folder(str(root), ["a", "b"], 6, size=8)
    (root / "train" / "a" / "notes.txt").write_text("not an image")
    cfg = tmp_path / "c.yaml"
    cfg.write_text("name: folder\n")
    sets = [*FAST, "data.source=imagefolder", f"data.root={root}", "data.val_fraction=0.2"]
    assert main(["train", str(cfg), "--out", str(tmp_path / "run"), "--quiet",
                 *[a for s in sets for a in ("--set", s)]]) == 0
    err = capsys.readouterr().err
    assert "skipped 1" in err and "notes.txt" in err


def test_mnist_files_in_real_format_train(tmp_path, capsys):
    write_mnist_idx(str(tmp_path / "data"), 30, 10)
    cfg = tmp_path / "c.yaml"
    cfg.write_text("name: synth-mnist\n")
    sets = ["data.source=mnist", f"data.root={tmp_path / 'data'}", "train.epochs=4",
            "logging.progress=false", "model.params={activation: relu}",
            "train.optimizer={name: adam, lr: 0.003}", "train.batch_size=32"]
    assert main(["train", str(cfg), "--out", str(tmp_path / "run"), "--quiet",
                 *[a for s in sets for a in ("--set", s)]]) == 0
    import json

    res = json.loads((tmp_path / "run" / "results.json").read_text())
    assert res["train_counts"] == [27] * 10 and res["test"]["n"] == 100
    assert res["test"]["top1"] > 50  # separable synthetic classes; chance is 10%
