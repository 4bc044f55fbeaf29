"""Issue 17, what a new user meets: --version, the result line under --quiet, progress into a
file, `imbal eval` without IMBAL_DATA and its per-class table, --resume on a finished run."""

import json

import pytest
from synth import write_mnist_idx

import imbal
from imbal.cli import main

FAST = ["train.epochs=1", "logging.tensorboard=false", "train.threads=1",
        "model.params={activation: relu}", "data.subset={per_class: 20}"]


def sets(*items):
    return [a for s in [*FAST, *items] for a in ("--set", s)]


def test_version(capsys):
    with pytest.raises(SystemExit) as code:
        main(["--version"])
    assert code.value.code == 0
    assert capsys.readouterr().out == f"imbal {imbal.__version__}\n"


def test_quiet_keeps_the_result_line_and_a_file_gets_lines_not_a_bar(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("name: q\n")
    assert main(["train", str(cfg), "--out", str(tmp_path / "q"), "--quiet", *sets()]) == 0
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("done in ") and err[0].endswith(
        f"-> {tmp_path / 'q'}/results.json")
    # not quiet, stderr not a terminal (captured): one line per epoch, no bar redraws
    assert main(["train", str(cfg), "--out", str(tmp_path / "v"), *sets("train.epochs=2")]) == 0
    err = capsys.readouterr().err
    assert "\r" not in err and "batch/s" not in err
    assert [ln.split()[:2] for ln in err.splitlines() if ln.startswith("epoch")] == [
        ["epoch", "1/2"], ["epoch", "2/2"]]


def test_resume_on_a_finished_run_is_refused_and_changes_nothing(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("name: r\n")
    run = tmp_path / "r"
    assert main(["train", str(cfg), "--out", str(run), "--quiet", *sets()]) == 0
    before = {n: (run / n).read_bytes() for n in ("meta.json", "results.json", "config.yaml")}
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--quiet"]) == 2
    assert capsys.readouterr().err == (f"imbal: error: run {run} is already complete (results.json): "
                                       "nothing to resume; start it again with imbal train CONFIG "
                                       "--overwrite\n")
    assert {n: (run / n).read_bytes() for n in before} == before


def test_eval_finds_the_data_the_run_recorded_and_prints_a_per_class_table(tmp_path, monkeypatch, capsys):
    data = tmp_path / "data"
    write_mnist_idx(str(data), 20, 5)
    monkeypatch.setenv("IMBAL_DATA", str(data))
    cfg = tmp_path / "c.yaml"
    cfg.write_text("name: e\ndata: {source: mnist}\n")
    run = tmp_path / "e"
    assert main(["train", str(cfg), "--out", str(run), "--quiet", *sets()]) == 0
    assert json.loads((run / "meta.json").read_text())["data_root"] == str(data)
    monkeypatch.delenv("IMBAL_DATA")
    monkeypatch.chdir(tmp_path)  # ./data would be found here: make sure the record is what works
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    capsys.readouterr()
    assert main(["eval", str(run)]) == 0
    out, err = capsys.readouterr()
    res = json.loads((run / "results.json").read_text())
    assert json.loads(out)["top1"] == res["test"]["top1"]
    lines = err.splitlines()
    assert lines[0].split() == ["class", "test", "acc"] and len(lines) == 11
    assert lines[1].startswith(res["classes"][0] + "  ")
    assert float(lines[1].split()[-1]) == pytest.approx(res["test"]["per_class_acc"][0], abs=0.01)
    # --data-root overrides the record
    assert main(["eval", str(run), "--data-root", str(tmp_path / "nowhere")]) == 2
    assert str(tmp_path / "nowhere") in capsys.readouterr().err


def test_readme_shows_the_cpu_only_install_and_documents_eval():
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert "pip install torch torchvision --index-url https://download.pytorch.org/whl/cpu" in text
    for needle in ("eval_<best|last>.json", "--data-root DIR", "`data_root`", "imbal --version"):
        assert needle in text, needle


def test_the_plan_is_written_and_a_remedy_without_effect_is_a_warning(tmp_path, capsys):
    from imbal.config import load_config
    from imbal.training.run import train

    cfg = load_config(None, ["train.epochs=1", "logging.tensorboard=false", "train.threads=1",
                             "data.subset={per_class: 20}", "remedy=[class_weights]",
                             "logging.progress=false"])
    res = train(cfg, out_dir=str(tmp_path / "r"), quiet=True)  # balanced: all weights equal
    err = capsys.readouterr().err
    assert err == ("warning: stage train: remedy class_weights has no effect on this training "
                   "set (all class weights equal)\n")
    assert res["remedy"][0].endswith("(no effect: every class has the same weight on this training set)")
    plan = (tmp_path / "r" / "plan.txt").read_text().splitlines()
    assert plan[0].split() == ["class", "train", "val", "test"]
    assert plan[-2].startswith("train: remedy: class_weights: inverse frequency N/N_j")
    assert plan[-1].startswith("optimizer: ")


def test_quickstart_validation_has_enough_images_of_every_class():
    from pathlib import Path

    from imbal.config import load_config
    from imbal.data.prepare import prepare_data

    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "quickstart.yaml")
    data = prepare_data(cfg["data"], data_seed=cfg["seeds"]["data"], minority_override=None)
    assert min(data.counts()["val"]) >= 7


def test_long_tail_count_plots_use_a_log_axis(tmp_path):
    from imbal.plots import count_scale, save_counts

    assert count_scale([500, 200, 80, 30, 5]) == "log"
    assert count_scale([100, 100, 20]) == "linear" and count_scale([0, 0]) == "linear"
    counts = {"train": [500, 5], "val": [50, 1], "test": [100, 100]}
    save_counts(counts, ["a", "b"], tmp_path / "c.png")
    assert (tmp_path / "c.png").stat().st_size > 0
