"""Plugins: the worked examples end to end, --import, imports: paths, entry points, refusals.

Commands run in this process (imbal.cli.main) with the `fresh` fixture, which forgets every
plugin a test imported (registries, modules, records), so no other test sees them; `fresh()`
in the middle of a test makes the process look new, as a later command's would. Sweep workers,
the entry-point checks and one `imbal eval` run in real child processes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pluginkit
import pytest
import yaml
from pluginkit import EXAMPLES, FAST, ROOT, SHAPES, record, sets, sha256

import imbal
from imbal import plugins
from imbal.cli import main
from imbal.config import load_config
from imbal.data.sources import load_source
from imbal.training.setup import check_names

fresh = pluginkit.fresh  # the fixture: forget the plugins a test imported


def test_import_imbal_is_light_and_hands_out_every_registry():
    code = ("import sys, imbal\nlight = 'torch' not in sys.modules\n"
            "regs = [getattr(imbal, n) for n in imbal.REGISTRIES]\n"
            "print(light, all(isinstance(r, imbal.Registry) for r in regs), "
            "imbal.PRETEXT_TASKS is imbal.TASKS, 'lenet' in imbal.MODELS, 'focal' in imbal.REMEDIES, "
            "'digits' in imbal.SOURCES, 'step' in imbal.IMBALANCES, 'adam' in imbal.OPTIMIZERS, "
            "'cosine' in imbal.SCHEDULES, 'hflip' in imbal.COPY_TRANSFORMS, "
            "imbal.train.__module__, 'load_run' in dir(imbal))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(
                             [str(ROOT), os.environ.get("PYTHONPATH", "")])})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True"] * 10 + ["imbal.api", "True"]


@pytest.mark.parametrize("example", ["poly_loss", "mlp_backbone", "shapes_source"])
def test_example_trains_records_its_plugin_and_evaluates_from_its_run_dir(example, tmp_path, fresh):
    out, plugin = tmp_path / "run", EXAMPLES / f"{example}.py"
    assert main(["train", str(EXAMPLES / f"{example}.yaml"), "--out", str(out), *sets(FAST)]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["complete"] and res["test"]["top1"] > 200 / len(res["classes"])  # twice chance
    assert yaml.safe_load((out / "config.yaml").read_text())["imports"] == [str(plugin)]
    assert json.loads((out / "meta.json").read_text())["plugins"] == [record(plugin)]
    if example == "poly_loss":
        assert res["remedy"] == ["poly: cross-entropy + 1 (1 - p_t)"]
    if example == "mlp_backbone":
        assert res["config"]["model"] == {**res["config"]["model"], "backbone": "mlp",
                                          "params": {"hidden": 128, "depth": 2}}
    if example == "shapes_source":
        assert res["classes"] == SHAPES and sum(res["counts"]["test"]) == 6 * 60
    fresh()  # as in a new process: only config.yaml says which plugin to import
    assert "poly" not in imbal.REMEDIES and "mlp" not in imbal.MODELS
    assert main(["eval", str(out)]) == 0
    assert json.loads((out / "eval_best.json").read_text())["test"]["top1"] == res["test"]["top1"]


def test_sweep_with_two_workers_hands_every_import_to_the_workers(tmp_path, fresh, monkeypatch):
    """The base config imports the loss, the sweep file the backbone (relative to the sweep
    file), --import the data source (relative to the working directory)."""
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(yaml.safe_dump({
        "name": "p", "base": str(EXAMPLES / "poly_loss.yaml"),
        "imports": [os.path.relpath(EXAMPLES / "mlp_backbone.py", tmp_path)],
        "set": {"data.source": "shapes", "model.backbone": "mlp",
                "model.params": {"hidden": 32, "depth": 1}, "train.epochs": 2,
                "logging.tensorboard": False},
        "runs": [{"name": "ce", "set": {"remedy": []}},
                 {"name": "poly", "set": {"remedy": [{"name": "poly", "epsilon": 1.0}]}}],
        "out": str(tmp_path / "out")}))
    monkeypatch.chdir(EXAMPLES)
    assert main(["sweep", str(sweep), "--workers", "2", "--import", "shapes_source.py"]) == 0
    files = [EXAMPLES / f for f in ("poly_loss.py", "mlp_backbone.py", "shapes_source.py")]
    for name, remedy in (("ce__d0_s0", []), ("poly__d0_s0", ["poly: cross-entropy + 1 (1 - p_t)"])):
        run = tmp_path / "out" / name
        res = json.loads((run / "results.json").read_text())
        assert res["complete"] and res["remedy"] == remedy and res["classes"] == SHAPES
        assert res["config"]["imports"] == [str(f) for f in files]
        # recorded by the worker process that trained the run: it imported all three
        assert json.loads((run / "meta.json").read_text())["plugins"] == [record(f) for f in files]
    assert json.loads((tmp_path / "out" / "sweep.json").read_text())["imports"] == [
        str(files[1]), str(files[2])]
    # a new process with nothing but the run directory
    out = subprocess.run([sys.executable, "-m", "imbal.cli", "eval", str(tmp_path / "out" / "poly__d0_s0")],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "balanced_acc" in out.stdout


def test_bundled_plugin_configs_check_and_the_sweep_lists_its_runs(fresh, capsys):
    for path in sorted(EXAMPLES.glob("*.yaml")):
        if path.name != "sweep.yaml":
            check_names(load_config(path))
    assert main(["sweep", str(EXAMPLES / "sweep.yaml"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"imports: {EXAMPLES / 'mlp_backbone.py'} {EXAMPLES / 'shapes_source.py'}\n" in out
    assert "  ce__d0_s0 " in out and "  poly__d0_s0 " in out and "2 to run" in out


def test_import_flag_on_data_and_train_with_a_module_name(tmp_path, fresh, monkeypatch, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("data: {source: shapes}\n")
    assert main(["data", str(cfg)]) == 2
    assert "unknown dataset 'shapes'; valid: cifar10, cifar100, digits" in capsys.readouterr().err
    monkeypatch.chdir(EXAMPLES)  # --import paths are relative to the working directory
    assert main(["data", str(cfg), "--import", "shapes_source.py"]) == 0
    assert capsys.readouterr().out.startswith("shapes: 6 classes, images 1x16x16")
    # a module name, found on sys.path; the run directory re-runs with nothing else
    (tmp_path / "my_parts.py").write_text(
        "from imbal import IMBALANCES\n\n@IMBALANCES.register('halve')\n"
        "def halve(available):\n    return [n // 2 for n in available]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    run = tmp_path / "run"
    args = ["--set", "data.source=digits", "--set", "data.imbalance.kind=halve", "--quiet",
            *sets(["train.epochs=1", "logging.tensorboard=false"])]
    assert main(["train", str(cfg), "--import", "my_parts", "--out", str(run), *args]) == 0
    counts = json.loads((run / "counts.json").read_text())
    digits = load_source("digits").train.targets.bincount().tolist()
    assert [t + v for t, v in zip(counts["train"], counts["val"], strict=True)] == [
        n // 2 for n in digits]
    assert yaml.safe_load((run / "config.yaml").read_text())["imports"] == ["my_parts"]
    meta = json.loads((run / "meta.json").read_text())
    assert meta["plugins"] == [{"import": "my_parts", "module": "my_parts",
                                "file": str(tmp_path / "my_parts.py"),
                                "sha256": sha256(tmp_path / "my_parts.py")}]
    fresh()
    again = tmp_path / "again"
    assert main(["train", str(run / "config.yaml"), "--out", str(again)]) == 0
    assert json.loads((again / "counts.json").read_text()) == counts


def _plugin(path: Path, kind: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"from imbal import IMBALANCES\n\n@IMBALANCES.register('{kind}')\n"
                    f"def {kind}(available):\n    return list(available)\n")


def test_imports_are_relative_to_the_file_that_names_them(tmp_path, fresh, monkeypatch):
    for name in ("a/pa.py", "b/pb.py", "c/pc.py"):
        _plugin(tmp_path / name, f"{Path(name).stem}_kind")
    (tmp_path / "a" / "base.yaml").write_text("imports: [pa.py]\ndata: {source: digits}\n")
    (tmp_path / "b" / "child.yaml").write_text("extends: ../a/base.yaml\nimports: [pb.py]\n")
    monkeypatch.chdir(tmp_path)
    pa, pb, pc = (str(tmp_path / n) for n in ("a/pa.py", "b/pb.py", "c/pc.py"))
    child = tmp_path / "b" / "child.yaml"
    assert load_config(child)["imports"] == [pa, pb]  # the parent's plugins are kept
    assert load_config(child, imports=["c/pc.py"])["imports"] == [pa, pb, pc]
    assert load_config(child, ["imports=[c/pc.py]"])["imports"] == [pc]  # --set replaces
    assert load_config({"extends": "a/base.yaml", "imports": "c/pc.py"})["imports"] == [pa, pc]
    assert {"pa_kind", "pb_kind", "pc_kind"} <= set(imbal.IMBALANCES.names())


def test_the_same_file_imported_twice_is_a_noop(tmp_path, fresh, monkeypatch):
    plugin = tmp_path / "twice.py"
    _plugin(plugin, "twice_kind")
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path)
    first = plugins.load(["twice.py"])
    again = plugins.load([str(plugin), "./twice.py", "sub/../twice.py"])
    assert {r["module"] for r in first + again} == {plugins.module_name_for(plugin)}
    monkeypatch.syspath_prepend(str(tmp_path))  # and by its module name: still that module
    assert plugins.load(["twice"])[0]["module"] == plugins.module_name_for(plugin)
    assert plugins.loaded() == [record(plugin)]


DUP = "from imbal import REMEDIES\n\n@REMEDIES.register('focal')\nclass Focal:\n    pass\n"
BOOM = ("from imbal import MODELS\n\n@MODELS.register('half_done')\n"
        "def half_done(*, in_channels, image_size):\n    pass\n\nraise RuntimeError('boom')\n")
BAD = {  # case: (file to write, what `imports:` names, the one line after "imbal: error: ")
    "module not found": (None, "no_such_plugin_xyz",
                         "cannot import plugin 'no_such_plugin_xyz': no module named 'no_such_plugin_xyz'"),
    "package not found": (None, "no_such_pkg_xyz.parts",
                          "cannot import plugin 'no_such_pkg_xyz.parts': no module named 'no_such_pkg_xyz.parts'"),
    "file not found": (None, "missing.py", "cannot import plugin '{tmp}/missing.py': file not found"),
    "not a .py file": (None, "parts/notes.txt", "cannot import plugin '{tmp}/parts/notes.txt': a path "
                       "must name a .py file (or give a module name such as my_pkg.parts)"),
    "syntax error": (("bad.py", "x = 1\ndef f(:\n    pass\n"), "bad.py",
                     "cannot import plugin '{tmp}/bad.py': SyntaxError at line 2: invalid syntax"),
    "exception": (("boom.py", BOOM), "boom.py",
                  "cannot import plugin '{tmp}/boom.py': RuntimeError at line 7: boom"),
    "missing dependency": (("plug_dep.py", "import no_such_dependency_xyz\n"), "plug_dep",
                           "cannot import plugin 'plug_dep': ModuleNotFoundError at line 1: "
                           "No module named 'no_such_dependency_xyz'"),
    "registered twice": (("dup.py", DUP), "dup.py", "cannot import plugin '{tmp}/dup.py': remedy "
                         "'focal' is already registered (by imbal.remedies.loss_remedies)"),
    "not a list": (None, 3, "bad value for 'imports': must be a list of module names or .py "
                   "paths (got 3)"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_plugin_is_refused_in_one_line_before_anything_is_written(case, tmp_path, fresh,
                                                                        monkeypatch, capsys):
    file, spec, message = BAD[case]
    if file:
        (tmp_path / file[0]).write_text(file[1])
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"imports": [spec] if isinstance(spec, str) else spec}))
    before = {name: reg.names() for name, reg in ((n, getattr(imbal, n)) for n in imbal.REGISTRIES)}
    assert main(["train", str(cfg), "--out", str(tmp_path / "run")]) == 2
    assert capsys.readouterr().err == f"imbal: error: {message.format(tmp=tmp_path.resolve())}\n"
    assert not (tmp_path / "run").exists()
    # rolled back: a plugin that registered something, then failed, leaves nothing behind
    assert {n: getattr(imbal, n).names() for n in imbal.REGISTRIES} == before


def test_a_bad_import_flag_is_refused_by_every_command(tmp_path, fresh, monkeypatch, capsys):
    (tmp_path / "boom.py").write_text("raise ValueError('nope')\n")
    monkeypatch.chdir(tmp_path)
    cfg = tmp_path / "c.yaml"
    cfg.write_text("data: {source: digits}\n")
    sweep = tmp_path / "s.yaml"
    sweep.write_text(yaml.safe_dump({"name": "s", "base": "c.yaml", "out": str(tmp_path / "sw")}))
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.yaml").write_text("data: {source: digits}\n")
    line = f"imbal: error: cannot import plugin '{tmp_path.resolve()}/boom.py': ValueError at line 1: nope\n"
    for argv in (["train", str(cfg), "--out", "new"], ["data", str(cfg)], ["eval", "run"],
                 ["sweep", str(sweep)]):
        assert main([*argv, "--import", "boom.py"]) == 2, argv
        assert capsys.readouterr().err == line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["boom.py", "c.yaml", "run", "s.yaml"]
    assert os.listdir(tmp_path / "run") == ["config.yaml"]


def test_two_plugins_registering_one_name_are_refused(tmp_path, fresh, capsys):
    for name in ("a", "b"):
        (tmp_path / f"{name}.py").write_text(
            "from imbal import MODELS\n\n@MODELS.register('twin')\n"
            "def twin(*, in_channels, image_size):\n    pass\n")
    cfg = tmp_path / "c.yaml"
    cfg.write_text("imports: [a.py, b.py]\nmodel: {backbone: twin}\n")
    assert main(["data", str(cfg)]) == 2
    first = plugins.module_name_for((tmp_path / "a.py").resolve())
    assert capsys.readouterr().err == (f"imbal: error: cannot import plugin '{tmp_path.resolve()}/b.py': "
                                       f"backbone 'twin' is already registered (by {first})\n")


def test_a_plugin_component_is_checked_like_a_built_in(tmp_path, fresh, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"extends: {EXAMPLES / 'poly_loss.yaml'}\nimports: [{EXAMPLES / 'shapes_source.py'}]\n")
    run = tmp_path / "run"
    assert main(["train", str(cfg), "--out", str(run), "--set", "remedy=[polly]"]) == 2
    valid = ", ".join(imbal.REMEDIES.names())
    assert "poly" in valid.split(", ")
    assert capsys.readouterr().err == (
        f"imbal: error: unknown remedy 'polly' (did you mean 'poly'?); valid: {valid}\n")
    for override, message in (
            ("remedy=[{name: poly, epsilonn: 1}]",
             "remedy 'poly': unknown parameter 'epsilonn' (did you mean 'epsilon'?)"),
            ("remedy=[{name: poly, epsilon: -2}]",
             "remedy 'poly': parameter 'epsilon' must be a number >= -1 (got -2)"),
            ("remedy=[poly, focal]", "remedies 'poly' and 'focal' cannot be combined: one "
             "supplies a whole loss of its own, which replaces the composed cross-entropy "
             "(it combines with sampling remedies only)"),
            ("data.source=shape", "unknown dataset 'shape' (did you mean 'shapes'?); valid: "
             + ", ".join(imbal.SOURCES.names()))):
        assert main(["train", str(cfg), "--out", str(run), "--set", override]) == 2, override
        assert capsys.readouterr().err == f"imbal: error: {message}\n"
    assert not run.exists()


def _plan(remedies, images=None):
    import torch

    from imbal.remedies import build_plan

    targets = torch.arange(4).repeat_interleave(torch.tensor([8, 4, 2, 2]))
    if images is None:
        images = torch.arange(16, dtype=torch.uint8).view(16, 1, 1, 1).expand(16, 1, 4, 4).clone()
    return build_plan(remedies, images=images, targets=targets, num_classes=4,
                      minority_classes=[2, 3], epochs=2, generator=torch.Generator().manual_seed(0))


def test_a_remedy_supplies_its_own_loss(fresh):
    import torch
    import torch.nn.functional as F

    from imbal.remedies.plan import check_soft_targets, parse_remedies

    plugins.load([str(EXAMPLES / "poly_loss.py")])
    plan = _plan([{"name": "poly", "epsilon": 1.0}, "oversample"])  # sampling combines
    logits = torch.randn(16, 4, generator=torch.Generator().manual_seed(1))
    y = plan.targets
    p_t = logits.softmax(1)[torch.arange(16), y]
    assert torch.allclose(plan.loss(logits, y), (-p_t.log() + (1 - p_t)).mean())
    assert type(plan.loss).__name__ == "PolyLoss" and plan.sampler is not None
    plain = _plan([{"name": "poly", "epsilon": 0.0}])
    assert torch.allclose(plain.loss(logits, y), F.cross_entropy(logits, y))
    with pytest.raises(imbal.UserError, match="^remedies 'class_weights' and 'poly' cannot be "
                       "combined: one supplies a whole loss of its own"):
        _plan(["class_weights", "poly"])
    with pytest.raises(imbal.UserError, match="^remedy 'poly' needs one class per image"):
        check_soft_targets(parse_remedies(["poly"]), ["mixup"])


def test_a_copy_transform_from_a_plugin(tmp_path, fresh):
    (tmp_path / "invert.py").write_text(
        "from imbal import COPY_TRANSFORMS\n\n@COPY_TRANSFORMS.register('invert')\n"
        "def invert(x, generator, strength):\n    return 255 - x\n")
    plugins.load([str(tmp_path / "invert.py")])
    plan = _plan([{"name": "copy", "k": 1, "classes": [3], "transforms": ["invert"]}])
    assert plan.class_counts == [8, 4, 2, 4]
    assert plan.images[16:, 0, 0, 0].tolist() == [255 - 14, 255 - 15]
    with pytest.raises(imbal.UserError) as err:
        _plan([{"name": "copy", "transforms": ["invrt"]}])
    assert str(err.value) == ("remedy 'copy': unknown transform 'invrt' (did you mean 'invert'?); "
                              "valid: 'brightness', 'contrast', 'hflip', 'invert', 'vflip'")


def test_entry_point_plugins_are_imported_by_every_process(tmp_path):
    site = tmp_path / "site"
    dist = site / "imbal_ep_demo-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: imbal-ep-demo\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[imbal.plugins]\nparts = ep_parts\n")
    parts = site / "ep_parts.py"
    parts.write_text("from imbal import IMBALANCES\n\n@IMBALANCES.register('ep_half')\n"
                     "def ep_half(available):\n    return [n // 2 for n in available]\n")
    cfg = tmp_path / "c.yaml"
    cfg.write_text("data: {source: digits, val_fraction: 0, imbalance: {kind: ep_half}}\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(site), str(ROOT), os.environ.get("PYTHONPATH", "")])}
    code = ("import json, sys\nfrom imbal.cli import main\nfrom imbal import plugins\n"
            f"rc = main(['data', {str(cfg)!r}])\nprint(rc, json.dumps(plugins.loaded()))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    half = sum(n // 2 for n in load_source("digits").train.targets.bincount().tolist())
    assert lines[-2].split() == ["total", str(half), "0", "355"]  # half of each digit class
    rc, _, loaded = lines[-1].partition(" ")
    assert rc == "0" and json.loads(loaded) == [{
        "entry_point": "parts = ep_parts", "distribution": "imbal-ep-demo 0.1",
        "module": "ep_parts", "file": str(parts), "sha256": sha256(parts)}]
    parts.write_text("raise ImportError('half installed')\n")  # a broken one stops every command
    out = subprocess.run([sys.executable, "-m", "imbal.cli", "data", str(cfg)], capture_output=True,
                         text=True, timeout=300, env=env, cwd=tmp_path)
    assert out.returncode == 2
    assert out.stderr == ("imbal: error: cannot import plugin entry point 'parts = ep_parts' "
                          "(imbal-ep-demo 0.1): ImportError at line 1: half installed\n")


def train_needing_a_plugin(cfg: dict, *, out_dir: str, overwrite: bool, quiet: bool) -> dict:
    """A stand-in run for execute_job: it needs the plugin's imbalance kind to be known."""
    imbal.IMBALANCES.get(cfg["data"]["imbalance"]["kind"])
    res = {"complete": True}
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    (Path(out_dir) / "results.json").write_text(json.dumps(res))
    return res


def test_a_job_carries_its_imports_to_a_worker_or_slurm_job(tmp_path, fresh):
    """execute_job is what a local worker and a Slurm job (through submitit) run."""
    from imbal.study.executors import execute_job

    _plugin(tmp_path / "kinds.py", "job_kind")
    job = {"name": "j", "cfg": {"data": {"imbalance": {"kind": "job_kind"}}},
           "out_dir": str(tmp_path / "j"), "overwrite": False,
           "train_fn": "test_plugins:train_needing_a_plugin", "imports": []}
    failed = execute_job(job)
    assert failed["status"] == "failed" and "unknown imbalance 'job_kind'" in failed["error"]
    assert execute_job({**job, "imports": [str(tmp_path / "kinds.py")]})["status"] == "done"
    broken = execute_job({**job, "imports": [str(tmp_path / "gone.py")]})
    assert broken["error"] == f"UserError: cannot import plugin '{tmp_path}/gone.py': file not found"
