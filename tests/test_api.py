"""The Python API: imbal.train (a path or a mapping, overrides, imports) and imbal.load_run."""

from __future__ import annotations

import json
import re

import numpy as np
import pluginkit
import pytest
import torch
from pluginkit import EXAMPLES, FAST, ROOT, SHAPES
from synth import class_images

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


def readme_python(section: str) -> list[str]:
    text = (ROOT / "README.md").read_text()
    body = text.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", body, re.S)


def test_the_readme_plugin_examples_work_together(tmp_path, fresh):
    """Every code block of "Extending imbal" as one plugin file, in one short run."""
    blocks = readme_python("Extending imbal")
    assert len(blocks) == 7
    parts = tmp_path / "readme_parts.py"
    parts.write_text("\n\n".join(blocks))
    rng = np.random.default_rng(0)
    arrays = {"classes": np.array(["a", "b", "c"])}
    for split, n in (("train", 40), ("test", 10)):
        y = np.repeat(np.arange(3), n)
        arrays[f"x_{split}"], arrays[f"y_{split}"] = class_images(y, 3, 1, 12, rng), y
    np.savez(tmp_path / "my_data.npz", **arrays)
    cfg = {"imports": [str(parts)],
           "data": {"source": "my_npz", "root": str(tmp_path), "val_fraction": 0.2,
                    "imbalance": {"kind": "halve", "classes": [0]}},
           "model": {"backbone": "mlp", "params": {"hidden": 32}},
           "remedy": [{"name": "poly", "epsilon": 0.5}, {"name": "copy", "transforms": ["invert"]}],
           "pretrain": {"task": "flip", "epochs": 1, "params": {"p": 0.5}},
           "train": {"epochs": 2, "optimizer": {"name": "adamw_no_bias_decay", "lr": 0.001,
                                                 "weight_decay": 0.01},
                     "schedule": {"name": "halving", "every": 1}},
           "logging": {"tensorboard": False, "progress": False}}
    run = imbal.train(cfg, out_dir=tmp_path / "run")
    assert run.complete and run.results["classes"] == ["a", "b", "c"]
    assert run.results["remedy"][0] == "poly: epsilon 0.5"
    assert run.counts["train"][0] + run.counts["val"][0] == 20  # halved, then copied to balance
    assert run.results["train_counts"][0] == run.results["train_counts"][1]
    assert [r["stage"] for r in run.metrics if "stage" in r][:1] == ["pretrain"]
    lrs = [r["train"]["lr"] for r in run.metrics if r.get("stage") == "train"]
    assert lrs == pytest.approx([0.001, 0.0005])  # the plugin's halving schedule, every epoch
    noise = imbal.BATCH_TRANSFORMS.get("noise")({"std": 0.5}, num_classes=3, class_counts=[1, 1, 1])
    x, y = torch.zeros(4, 1, 2, 2), torch.arange(4)
    x2, y2 = noise(x, y, torch.Generator().manual_seed(0))
    assert x2.shape == x.shape and x2.abs().sum() > 0 and y2 is y
