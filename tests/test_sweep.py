"""Sweeps: expansion and names, refused files, skip-complete, failures, dry run, submitit path.

The trainer is never used: `fake_train` below (module-level, so worker processes and submitit
jobs can import it as test_sweep:fake_train) writes a results.json by hand, and the config
loader is replaced by a plain YAML + dotted-override reader.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import pytest
import yaml

from imbal.errors import UserError
from imbal.study import executors as sweep_exec
from imbal.study import sweep

FAKE = "test_sweep:fake_train"


def fake_load_config(path: str, overrides: list[str]) -> dict:
    cfg = yaml.safe_load(Path(path).read_text())
    for item in overrides:
        key, _, text = item.partition("=")
        *parents, leaf = key.split(".")
        node = cfg
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(text)
    if cfg.get("train", {}).get("epochs", 1) < 1:
        raise UserError("bad value for 'train.epochs': must be >= 1")
    return cfg


def fake_train(cfg: dict, *, out_dir: str, overwrite: bool = False, quiet: bool = True) -> dict:
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()) and not overwrite:  # what the real runner does
        raise RuntimeError(f"run directory {out} already holds a run")
    out.mkdir(parents=True, exist_ok=True)
    with open(cfg["fake"]["calls"], "a") as fh:
        fh.write(cfg["name"] + "\n")
    if cfg["fake"].get("crash") and cfg["name"].startswith(cfg["fake"]["crash"]):
        os._exit(3)  # a worker that dies without a Python exception (OOM killer, segfault)
    if cfg["fake"].get("fail") and cfg["name"].startswith(cfg["fake"]["fail"]):
        raise ValueError(f"boom in {cfg['name']}")
    res = {"name": cfg["name"], "complete": True, "config": cfg, "seeds": cfg["seeds"],
           "test": {"top1": 90.0 + cfg["seeds"]["train"]},
           "env_threads": os.environ.get("OMP_NUM_THREADS")}
    (out / "results.json").write_text(json.dumps(res))
    return res


@pytest.fixture(autouse=True)
def _fake_loader(monkeypatch):
    monkeypatch.setattr(sweep_exec, "_load_config", fake_load_config)
    monkeypatch.setattr(sweep_exec, "_check_config", lambda cfg: None)


def calls(tmp: Path) -> list[str]:
    p = tmp / "calls.txt"
    return p.read_text().split() if p.exists() else []


def write_sweep(tmp: Path, body: dict, fake: dict | None = None) -> Path:
    base = {"name": "x", "train": {"epochs": 1}, "fake": {"calls": str(tmp / "calls.txt"),
                                                           **(fake or {})}}
    (tmp / "base.yaml").write_text(yaml.safe_dump(base))
    spec = {"name": "demo", "base": "base.yaml", "out": str(tmp / "out"), **body}
    path = tmp / "sweep.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


GRID = {"grid": {"train.optimizer.lr": [0.1, 1.0e-5],
                 "remedy": [[], [{"name": "focal", "gamma": 2}],
                            [{"name": "focal", "gamma": 2}, {"name": "oversample"}]]},
        "seeds": {"train": [0, 1, 2], "data": [0, 1]}}


def test_grid_expansion_sizes_and_names(tmp_path):
    s = sweep.load_sweep(write_sweep(tmp_path, GRID))
    assert len(s.runs) == 2 * 3 * 3 * 2
    labels = list(dict.fromkeys(r.label for r in s.runs))
    assert labels == ["lr-0.1_none", "lr-0.1_focal", "lr-0.1_focal+oversample",
                      "lr-1e-05_none", "lr-1e-05_focal", "lr-1e-05_focal+oversample"]
    assert [r.name for r in s.runs[:6]] == [
        "lr-0.1_none__d0_s0", "lr-0.1_none__d0_s1", "lr-0.1_none__d0_s2",
        "lr-0.1_none__d1_s0", "lr-0.1_none__d1_s1", "lr-0.1_none__d1_s2"]
    assert len({r.name for r in s.runs}) == len(s.runs)
    assert s.out == tmp_path / "out"


def test_explicit_runs_times_grid_and_override_strings(tmp_path):
    body = {"set": {"train.epochs": 3},
            "runs": [{"name": "ce", "set": {"remedy": []}},
                     {"name": "ls04", "set": {"remedy": [{"name": "label_smoothing", "eps": 0.1,
                                                          "classes": [0, 1, 2, 3, 4]}]}},
                     {"name": "rot", "set": {"pretrain.task": "rotation",
                                             "pretrain.symmetric_classes": [6, 9]}}],
            "grid": {"data.imbalance.keep": [0.1, 1.0]}, "seeds": {"train": 7}}
    s = sweep.load_sweep(write_sweep(tmp_path, body), extra={"data.subset.per_class": 20})
    assert [r.name for r in s.runs] == [
        "ce_keep-0.1__d0_s7", "ce_keep-1.0__d0_s7", "ls04_keep-0.1__d0_s7",
        "ls04_keep-1.0__d0_s7", "rot_keep-0.1__d0_s7", "rot_keep-1.0__d0_s7"]
    items = s.runs[4].override_list(s.common)
    assert items == ["train.epochs=3", "data.subset.per_class=20", "pretrain.task=rotation",
                     "pretrain.symmetric_classes=[6, 9]", "data.imbalance.keep=0.1",
                     "seeds.data=0", "seeds.train=7", "name=rot_keep-0.1__d0_s7"]
    # Every value survives the trip through `key=value` text parsed as YAML.
    for v in ([{"name": "focal", "gamma_schedule": [0.2, 15]}], 1e-05, "rotation", None, True,
              "1e-3", [6, 9], {"a": 1}):
        key, _, text = sweep.format_override("k", v).partition("=")
        assert key == "k" and yaml.safe_load(text) == v


def test_remedy_names_in_labels(tmp_path):
    body = {"grid": {"remedy": [[], ["balanced_softmax"], ["focal", {"name": "ldam"}]],
                     "pretrain.params.symmetric_classes": [[6, 9]]}}
    labels = [r.label for r in sweep.load_sweep(write_sweep(tmp_path, body)).runs]
    assert labels == ["none_symmetric_classes-6+9", "balanced_softmax_symmetric_classes-6+9",
                      "focal+ldam_symmetric_classes-6+9"]


def test_label_collisions_refused(tmp_path):
    body = {"grid": {"remedy": [[{"name": "focal", "gamma": 1}], [{"name": "focal", "gamma": 2}]]}}
    with pytest.raises(UserError, match="two configurations get the label 'focal'"):
        sweep.load_sweep(write_sweep(tmp_path, body))
    body = {"runs": [{"name": "a", "set": {}}, {"name": "a", "set": {"train.epochs": 2}}]}
    with pytest.raises(UserError, match="label 'a'"):
        sweep.load_sweep(write_sweep(tmp_path, body))


def test_long_labels_are_short_deterministic_and_distinct():
    a, b = "x" * 100 + "_lr-0.1", "x" * 100 + "_lr-0.2"
    assert sweep.shorten(a) == sweep.shorten(a)
    assert len(sweep.shorten(a)) == sweep.MAX_LABEL
    assert sweep.shorten(a) != sweep.shorten(b)
    assert sweep.shorten("a b/c:d") == "a-b-c-d"


@pytest.mark.parametrize("body, message", [
    ({"grd": {}}, "unknown key 'grd'"),
    ({"base": None}, "bad value for 'base'"),
    ({"grid": {"train.epochs": []}}, "'train.epochs' has an empty list"),
    ({"grid": {"seeds.train": [1, 2]}}, "'seeds.train' is set by the sweep itself"),
    ({"set": {"name": "y"}}, "'name' is set by the sweep itself"),
    ({"grid": {"train epochs": [1]}}, "not a dotted config key"),
    ({"runs": [{"name": "a/b"}]}, "run name 'a/b' may only use"),
    ({"runs": [{"name": "a", "sett": {}}]}, "unknown key 'runs.0.sett'"),
    ({"runs": [{"name": "a", "set": {"remedy": []}}], "grid": {"remedy": [[]]}},
     "sets 'remedy', which the grid also varies"),
    ({"seeds": {"train": [1, 1]}}, "seeds.train lists a seed twice"),
    ({"seeds": {"train": []}}, "bad value for 'seeds.train'"),
    ({"base": "missing.yaml"}, "base config not found"),
])
def test_bad_sweep_files_are_user_errors(tmp_path, body, message):
    with pytest.raises(UserError, match=message):
        sweep.load_sweep(write_sweep(tmp_path, body))


def test_bad_files_and_set_conflicts(tmp_path):
    with pytest.raises(UserError, match="sweep file not found"):
        sweep.load_sweep(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("name: [unclosed\n")
    with pytest.raises(UserError, match="YAML syntax error"):
        sweep.load_sweep(tmp_path / "bad.yaml")
    path = write_sweep(tmp_path, GRID)
    with pytest.raises(UserError, match="--set remedy: the sweep varies this key"):
        sweep.load_sweep(path, extra={"remedy": []})
    # A config the loader refuses stops the sweep before anything runs, naming the run.
    with pytest.raises(UserError, match=r"sweep run lr-0.1_none__d0_s0: .*train.epochs"):
        sweep.run_sweep(path, extra={"train.epochs": 0}, train_fn=FAKE, say=lambda s: None)
    assert calls(tmp_path) == [] and not (tmp_path / "out").exists()


def test_unknown_component_stops_the_sweep_first(tmp_path, monkeypatch):
    def check(cfg):
        if cfg.get("remedy") == ["nope"]:
            raise UserError("unknown remedy 'nope'")

    monkeypatch.setattr(sweep_exec, "_check_config", check)
    path = write_sweep(tmp_path, {"grid": {"remedy": [[], ["nope"]]}})
    with pytest.raises(UserError, match="sweep run nope__d0_s0: unknown remedy 'nope'"):
        sweep.run_sweep(path, train_fn=FAKE, dry_run=True, say=lambda s: None)
    assert calls(tmp_path) == []


def cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    sweep.add_arguments(parser)
    return sweep.run(parser.parse_args(argv))


def test_dry_run_lists_runs_and_writes_nothing(tmp_path, capsys, monkeypatch):
    path = write_sweep(tmp_path, {**GRID, "out": None})
    monkeypatch.chdir(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    assert cli([str(path), "--dry-run", "--train-fn", FAKE]) == 0
    text = capsys.readouterr().out
    assert "36 runs (6 configurations) -> runs/demo" in text
    assert "lr-1e-05_focal+oversample__d1_s2" in text
    assert "remedy=[{name: focal, gamma: 2}, {name: oversample}]" in text
    assert "36 to run, 0 complete" in text
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert calls(tmp_path) == []


def test_runs_then_skips_completed(tmp_path, capsys):
    body = {"runs": [{"name": "ce", "set": {"remedy": []}},
                     {"name": "focal", "set": {"remedy": [{"name": "focal"}]}}],
            "seeds": {"train": [0, 1]}}
    path = write_sweep(tmp_path, body)
    assert cli([str(path), "--train-fn", FAKE]) == 0
    names = ["ce__d0_s0", "ce__d0_s1", "focal__d0_s0", "focal__d0_s1"]
    # Seed-major order: the first seed of every configuration runs first.
    assert calls(tmp_path) == ["ce__d0_s0", "focal__d0_s0", "ce__d0_s1", "focal__d0_s1"]
    record = json.loads((tmp_path / "out" / "sweep.json").read_text())
    assert [r["name"] for r in record["runs"]] == names
    assert [r["label"] for r in record["runs"]] == ["ce", "ce", "focal", "focal"]
    assert record["runs"][2]["overrides"] == {"remedy": [{"name": "focal"}]}
    assert "4 done, 0 skipped (complete), 0 failed" in capsys.readouterr().out
    assert cli([str(path), "--train-fn", FAKE]) == 0
    assert len(calls(tmp_path)) == 4
    assert "0 done, 4 skipped (complete), 0 failed" in capsys.readouterr().out
    # An unfinished run dir (no results.json) is run again from scratch.
    (tmp_path / "out" / "focal__d0_s1" / "results.json").unlink()
    assert cli([str(path), "--train-fn", FAKE]) == 0
    assert calls(tmp_path)[4:] == ["focal__d0_s1"]
    # Results made from a different config are not silently taken as done.
    with pytest.raises(UserError, match=r"different config \(train.epochs: 1 there, 5 now\)"):
        cli([str(path), "--train-fn", FAKE, "--set", "train.epochs=5"])
    assert cli([str(path), "--train-fn", FAKE, "--set", "train.epochs=5", "--overwrite"]) == 0
    assert len(calls(tmp_path)) == 9


def test_failing_run_is_recorded_and_sweep_goes_on(tmp_path, capsys):
    body = {"runs": [{"name": "bad", "set": {}}, {"name": "ok", "set": {}}, {"name": "crash"}],
            "seeds": {"train": [0, 1]}}
    path = write_sweep(tmp_path, body, fake={"fail": "bad", "crash": "crash"})
    assert cli([str(path), "--train-fn", FAKE, "--workers", "2"]) == 1
    out = tmp_path / "out"
    assert sorted(calls(tmp_path)) == sorted(f"{n}__d0_s{s}" for n in ("bad", "ok", "crash")
                                             for s in (0, 1))
    for s in (0, 1):
        assert sweep_exec.is_complete(out / f"ok__d0_s{s}")
        err = (out / f"bad__d0_s{s}" / "error.txt").read_text()
        assert err.startswith("Traceback") and f"ValueError: boom in bad__d0_s{s}" in err
        assert "exited with status 3" in (out / f"crash__d0_s{s}" / "error.txt").read_text()
    text = capsys.readouterr().out
    assert "2 done, 0 skipped (complete), 4 failed" in text
    assert "FAILED bad__d0_s1: ValueError: boom in bad__d0_s1" in text
    summary = json.loads((out / "summary.json").read_text())
    assert sorted(summary["done"]) == ["ok__d0_s0", "ok__d0_s1"]
    assert {f["name"] for f in summary["failed"]} == {"bad__d0_s0", "bad__d0_s1",
                                                       "crash__d0_s0", "crash__d0_s1"}
    # Two workers share the cores: each run was told cores // 2 threads, in config and env.
    threads = max(1, sweep._cores() // 2)
    res = json.loads((out / "ok__d0_s0" / "results.json").read_text())
    assert res["config"]["train"]["threads"] == threads
    assert res["env_threads"] == str(threads)
    # A re-run retries only the failures (the failing dirs are overwritten, not refused).
    assert cli([str(path), "--train-fn", FAKE]) == 1
    assert len(calls(tmp_path)) == 6 + 4


def test_submitit_local_executor(tmp_path, monkeypatch, capsys):
    # submitit's local jobs are fresh Python processes: they must import imbal and this file.
    here = Path(__file__).resolve().parent
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(here.parent), str(here)]))
    body = {"runs": [{"name": "ok"}, {"name": "bad"}], "seeds": {"train": [0, 1]},
            "slurm": {"gpus": 0, "cpus_per_task": 3, "time": 5}}  # the flag overrides 3
    path = write_sweep(tmp_path, body, fake={"fail": "bad"})
    status = cli([str(path), "--train-fn", FAKE, "--executor", "slurm", "--submitit-cluster",
                  "local", "--cpus-per-task", "1"])
    assert status == 1
    out = tmp_path / "out"
    assert sweep_exec.is_complete(out / "ok__d0_s0") and sweep_exec.is_complete(out / "ok__d0_s1")
    assert "ValueError: boom in bad__d0_s1" in (out / "bad__d0_s1" / "error.txt").read_text()
    res = json.loads((out / "ok__d0_s1" / "results.json").read_text())
    assert res["config"]["train"]["threads"] == 1  # = --cpus-per-task
    assert len(json.loads((out / "submitit" / "jobs.json").read_text())) == 4
    assert "2 done, 0 skipped (complete), 2 failed" in capsys.readouterr().out


def test_slurm_section_and_flags_make_the_submitit_parameters(tmp_path):
    section = {"partition": "gpu", "time": 30, "gpus": 2, "array_parallelism": 4,
               "options": {"account": "abc", "qos": "low"}}
    loaded = sweep.load_sweep(write_sweep(tmp_path, {"slurm": section}))
    assert loaded.slurm == section  # as written; defaults fill in when the flags are merged
    cli_opts = {"partition": None, "time": 90, "gpus": None, "mem_gb": 12.5,
                "options": {"qos": "high"}}
    opts = sweep_exec.slurm_options(loaded.slurm, cli_opts)
    assert sweep_exec.slurm_parameters(opts) == {
        "timeout_min": 90, "gpus_per_node": 2, "cpus_per_task": 8, "slurm_array_parallelism": 4,
        "name": "imbal", "slurm_partition": "gpu", "mem_gb": 12.5,
        "slurm_additional_parameters": {"account": "abc", "qos": "high"}}
    with pytest.raises(UserError) as err:
        sweep_exec.slurm_options(loaded.slurm, {"array_parallelism": 0})
    assert str(err.value) == ("--array-parallelism: input should be greater than or equal to 1 "
                              "(got 0)")


@pytest.mark.parametrize("section, message", [
    ({"gpu": 1}, "unknown key 'slurm.gpu' (valid: partition, time, gpus, cpus_per_task, mem_gb, "
                 "array_parallelism, options)"),
    ({"time": 0}, "bad value for 'slurm.time': input should be greater than or equal to 1 "
                  "(got 0)"),
    ({"gpus": -1}, "bad value for 'slurm.gpus': input should be greater than or equal to 0 "
                   "(got -1)"),
])
def test_bad_slurm_sections_are_refused(tmp_path, section, message):
    path = write_sweep(tmp_path, {"slurm": section})
    with pytest.raises(UserError) as err:
        sweep.load_sweep(path)
    assert str(err.value) == f"sweep file {path}: {message}"


def test_slurm_without_submitit_is_a_user_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "submitit", None)
    path = write_sweep(tmp_path, {})
    with pytest.raises(UserError, match=r"pip install 'imbal\[slurm\]'"):
        cli([str(path), "--train-fn", FAKE, "--executor", "slurm"])
    assert not (tmp_path / "out").exists()


def test_slurm_without_sbatch_is_a_user_error(tmp_path, monkeypatch):
    monkeypatch.setattr(sweep_exec.shutil, "which", lambda name: None)
    path = write_sweep(tmp_path, {})
    with pytest.raises(UserError, match="sbatch not found"):
        cli([str(path), "--train-fn", FAKE, "--executor", "slurm", "--partition", "gpu"])


def test_bad_cli_values(tmp_path):
    path = write_sweep(tmp_path, {})
    with pytest.raises(UserError, match="--workers must be at least 1"):
        cli([str(path), "--workers", "0"])
    with pytest.raises(UserError, match="--set 'train.epochs' must look like key=value"):
        cli([str(path), "--set", "train.epochs"])
