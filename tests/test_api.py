"""The Python API: imbal.train (a path or a mapping, overrides, imports) and imbal.load_run."""

from __future__ import annotations

import json

import pluginkit
import pytest
from pluginkit import EXAMPLES, FAST, SHAPES

import imbal

fresh = pluginkit.fresh  # the fixture: forget the plugins a test imported


def test_train_a_path_and_read_the_run_back(tmp_path, fresh):
    run = imbal.train(EXAMPLES / "poly_loss.yaml", overrides=FAST, out_dir=tmp_path / "api")
    assert isinstance(run, imbal.Run) and run.dir == tmp_path / "api" and run.complete
    assert run.results["remedy"] == ["poly: cross-entropy + 1 (1 - p_t)"]
    assert run.config["imports"] == [str(EXAMPLES / "poly_loss.py")]
    assert [row["epoch"] for row in run.metrics] == [1, 2, 3]
    assert run.counts["train"] == run.results["counts"]["train"]
    assert run.meta["status"] == "complete" and run.meta["plugins"][0]["import"] == run.config["imports"][0]
    assert "complete, test top1" in repr(run)
    back = imbal.load_run(str(run.dir))
    for key in ("config", "results", "counts", "metrics", "meta"):
        assert getattr(back, key) == getattr(run, key), key


def test_train_a_mapping_with_imports_from_the_working_directory(tmp_path, fresh, monkeypatch):
    monkeypatch.chdir(EXAMPLES)
    cfg = {"name": "dict", "data": {"source": "shapes", "subset": {"per_class": 40}},
           "train": {"epochs": 1}, "logging": {"out_dir": str(tmp_path), "tensorboard": False,
                                               "progress": False}}
    run = imbal.train(cfg, imports=["shapes_source.py"])
    assert run.dir == tmp_path / "dict" and run.complete and run.results["classes"] == SHAPES
    assert run.config["imports"] == [str(EXAMPLES / "shapes_source.py")]
    assert "imports" not in cfg  # the caller's mapping is left as it was
    fresh()
    again = imbal.train({**cfg, "imports": ["shapes_source.py"]}, ["name=again"])
    assert again.results["test"] == run.results["test"]


def test_bad_input_raises_before_anything_is_written(tmp_path, fresh):
    with pytest.raises(imbal.UserError, match="^cannot import plugin 'nope_xyz': no module named"):
        imbal.train({"imports": ["nope_xyz"]}, out_dir=tmp_path / "bad")
    with pytest.raises(imbal.UserError, match="^unknown remedy 'polly' .*valid: .*poly"):
        imbal.train(EXAMPLES / "poly_loss.yaml", ["remedy=[polly]"], tmp_path / "bad")
    with pytest.raises(imbal.UserError, match="^config must be a YAML path or a mapping"):
        imbal.train(["data"], out_dir=tmp_path / "bad")
    assert not (tmp_path / "bad").exists()
    with pytest.raises(imbal.UserError, match="is not a run directory: no config.yaml"):
        imbal.load_run(tmp_path)


def test_load_run_of_an_unfinished_run(tmp_path):
    (tmp_path / "config.yaml").write_text("name: x\n")
    (tmp_path / "meta.json").write_text(json.dumps({"status": "running"}))
    (tmp_path / "metrics.jsonl").write_text('{"epoch": 1}\n')
    run = imbal.load_run(tmp_path)
    assert not run.complete and run.results is None and run.counts is None
    assert run.config == {"name": "x"} and run.metrics == [{"epoch": 1}]
    assert repr(run) == f"Run('{tmp_path}', running)"
