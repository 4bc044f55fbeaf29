"""Issue 17, careless and hostile input: each refused in one line before any work, with nothing
left behind."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from imbal.cli import main
from imbal.config import load_config
from imbal.errors import UserError
from imbal.input_checks import MAX_NODES, expanded_size


@pytest.mark.parametrize("sets,message", [
    (["name=../../x"], "bad value for 'name': value error, must be a single folder name (no '/', "
                       "not '.' or '..'); use --out to choose where the run goes (got '../../x')"),
    (["name=/abs"], "bad value for 'name': value error, must be a single folder name"),
    (["name=."], "bad value for 'name': value error, must be a single folder name"),
    (["name=.."], "bad value for 'name': value error, must be a single folder name"),
    (["model.params={activation: relu, slope: .nan}"],
     "bad value for 'model.params': value error, must be finite (no nan or inf)"),
    (["pretrain={task: rotation, params: {x: .inf}}"],
     "bad value for 'pretrain.params': value error, must be finite (no nan or inf)"),
    (["remedy=[{name: class_weights, beta: .nan}]"],
     "bad value for 'remedy[0]': value error, must be finite (no nan or inf)"),
    (["stages=[{name: a, remedy: [{name: focal, gamma: .inf}]}]"],
     "bad value for 'stages[0].remedy[0]': value error, must be finite (no nan or inf)"),
    (["train.epochs=true"], "bad value for 'train.epochs': value error, must be an integer (got True)"),
    (["train.epochs='2'"], "bad value for 'train.epochs': value error, must be an integer (got '2')"),
    (["seeds.data=false"], "bad value for 'seeds.data': value error, must be an integer (got False)"),
    (["train.grad_clip=true"], "bad value for 'train.grad_clip': value error, must be a number (got True)"),
    (["train.optimizer.lr=.inf"], "bad value for 'train.optimizer.lr': input should be a finite number"),
    (["train.optimizer={name: sgd, lr: 0.1, weight_decay: .inf}"],
     "bad value for 'train.optimizer.weight_decay': value error, must be finite"),
    (["train.batch_size=100000000000000000000000"],
     "bad value for 'train.batch_size': input should be less than or equal to 1048576"),
    (["seeds.train=100000000000000000000000000"],
     "bad value for 'seeds.train': input should be less than or equal to 9223372036854775807"),
    (["data.image_size=1000000"], "bad value for 'data.image_size': input should be less than or equal to 4096"),
    (["data.augment.crop_padding=100000"],
     "bad value for 'data.augment.crop_padding': input should be less than or equal to 1024"),
    (["train.threads=1000000"], "bad value for 'train.threads': input should be less than or equal to 4096"),
])
def test_hostile_values_are_refused(sets, message):
    with pytest.raises(UserError) as err:
        load_config(None, sets)
    assert str(err.value).startswith(message), str(err.value)


def test_numbers_as_yaml_reads_them_still_pass():
    cfg = load_config(None, ["train.optimizer.lr=1e-3", "train.epochs=2", "seeds.data=-1"])
    assert cfg["train"]["optimizer"]["lr"] == 0.001 and cfg["train"]["epochs"] == 2


BOMB = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{c}: &{c} [{', '.join(['*' + p] * 10)}]\n" for p, c in zip("abcdefgh", "bcdefghi", strict=True)) + \
    "model: {params: {big: *i}}\n"


def test_a_yaml_alias_bomb_is_refused_at_once(tmp_path):
    p = tmp_path / "bomb.yaml"
    p.write_text(BOMB)
    t0 = time.perf_counter()
    with pytest.raises(UserError) as err:
        load_config(p)
    assert time.perf_counter() - t0 < 0.5
    assert str(err.value) == (f"config {p}: YAML aliases expand to more than {MAX_NODES} values; "
                              "refused (not a config)")
    with pytest.raises(UserError, match="override 'model.params': YAML aliases expand"):
        load_config(None, ["model.params={a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1], b: &b [*a, *a, *a, *a, "
                           "*a, *a, *a, *a, *a, *a], c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b], "
                           "d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c], e: [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d, *d]}"])
    assert expanded_size({"a": [1, 2]}) == 5


@pytest.mark.parametrize("content,message", [
    (b"", "is empty; give at least data: {source: ...}"),
    (b"  \n\n", "is empty; give at least data: {source: ...}"),
    (b"# only a comment\n", "holds only comments; give at least data: {source: ...}"),
    (b"name: \xff\xfe caf\xe9\n", "is not UTF-8 text (byte 6); is it a YAML file?"),
])
def test_empty_and_binary_config_files_are_refused(tmp_path, content, message):
    p = tmp_path / "c.yaml"
    p.write_bytes(content)
    with pytest.raises(UserError) as err:
        load_config(p)
    assert str(err.value) == f"config {p} {message}"


def test_a_bad_init_from_leaves_nothing_behind(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("name: x\n")
    out = tmp_path / "out"
    code = main(["train", str(cfg), "--out", str(out), "--quiet", "--set", "train.epochs=1",
                 "--set", f"model.init_from={tmp_path / 'nowhere'}"])
    assert code == 2
    assert capsys.readouterr().err == (f"imbal: error: model.init_from {tmp_path / 'nowhere'}: "
                                       "no such run directory or checkpoint file\n")
    assert not out.exists()


def test_a_tilde_in_out_dir_is_expanded(tmp_path, monkeypatch):
    from imbal.training.run import run_dir_of

    monkeypatch.setenv("HOME", str(tmp_path))
    cfg = load_config(None, ["logging.out_dir=~/runs", "name=a"])
    assert run_dir_of(cfg, None) == tmp_path / "runs" / "a"
    assert run_dir_of(cfg, "~/elsewhere") == tmp_path / "elsewhere"


def test_a_refusal_returns_in_well_under_a_second(tmp_path):
    """The config is checked before torch is imported (a refusal used to take ~2 s)."""
    (tmp_path / "c.yaml").write_text("name: ../x\n")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    code = ("import sys, time; t = time.perf_counter(); from imbal.cli import main; "
            "rc = main(['train', 'c.yaml']); print(rc, 'torch' in sys.modules, time.perf_counter() - t)")
    got = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=120)
    rc, torch_loaded, _seconds = got.stdout.split()
    assert (rc, torch_loaded) == ("2", "False"), got.stderr
    assert "must be a single folder name" in got.stderr


def test_checkpoint_errors_are_complete_and_never_suggest_unsafe_loading(tmp_path):
    import torch

    from imbal.training.runs import load_checkpoint

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    evil, cut = tmp_path / "evil.pt", tmp_path / "cut.pt"
    torch.save({"format": "imbal", "model": Evil()}, evil)
    cut.write_bytes(evil.read_bytes()[:100])
    with pytest.raises(UserError) as err:
        load_checkpoint(evil)
    assert str(err.value) == (f"cannot load checkpoint {evil}: it holds objects other than plain "
                              "data (Trying to load unsupported GLOBAL posix.system whose module "
                              "posix is blocked); imbal loads checkpoints as data only and never "
                              "runs code from them")
    with pytest.raises(UserError) as err:
        load_checkpoint(cut)
    assert str(err.value) == (f"cannot load checkpoint {cut}: PytorchStreamReader failed reading "
                              "zip archive: failed finding central directory (the file is "
                              "truncated or corrupt)")


def test_a_shape_mismatch_names_the_backbones(tmp_path, capsys):
    import yaml

    from imbal.training.run import train

    run = tmp_path / "r"
    train(load_config(None, ["train.epochs=1", "logging.progress=false", "logging.tensorboard=false",
                             "train.threads=1", "data.subset={per_class: 20}"]), out_dir=str(run))
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["model"]["backbone"] = "small_cnn"
    cfg["model"]["params"] = {}
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    capsys.readouterr()
    assert main(["eval", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"imbal: error: checkpoint {run / 'checkpoints' / 'best.pt'} was made with "
                          "backbone 'lenet', the config builds 'small_cnn' (")
    assert err.count("\n") == 1


def test_a_symlink_loop_in_an_image_folder_is_one_line(tmp_path):
    from synth import write_image_folder

    from imbal.data.imagefolder import _list_files

    write_image_folder(str(tmp_path), ["a", "b"], 2)
    os.symlink("..", tmp_path / "train" / "a" / "loop")
    with pytest.raises(UserError) as err:
        _list_files(str(tmp_path), "train")
    assert str(err.value) == (f"imagefolder: {tmp_path}/train/a/loop is a link back to a folder "
                              "that contains it (a symbolic-link loop); remove that link")


def test_data_plot_into_a_missing_folder_is_refused_first(tmp_path, capsys, monkeypatch):
    from imbal.data import prepare

    monkeypatch.setattr(prepare, "prepare_data", lambda *a, **k: pytest.fail("the work ran"))
    cfg = tmp_path / "c.yaml"
    cfg.write_text("name: d\n")
    assert main(["data", str(cfg), "--plot", str(tmp_path / "no" / "c.png")]) == 2
    assert capsys.readouterr().err == (f"imbal: error: --plot {tmp_path / 'no' / 'c.png'}: folder "
                                       f"{tmp_path / 'no'} does not exist\n")


def test_report_calls_a_corrupt_results_json_corrupt(tmp_path):
    from imbal.study.report import load_run

    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "results.json").write_text('{"complete": tr')
    info = load_run(tmp_path / "r", label=None, source="x", metric_set="test")
    assert (info.status, info.error) == ("incomplete", "results.json is corrupt (not JSON)")


@pytest.mark.parametrize("remedy,message", [
    ({"name": "copy", "k": 10**9}, "remedy 'copy': k=1000000000 would need "),
    ({"name": "oversample", "epoch_size": 10**15}, "remedy 'oversample': epoch_size=1000000000000000 would need "),
])
def test_remedy_sizes_that_no_memory_holds_are_refused_before_allocating(remedy, message):
    import torch

    from imbal.input_checks import memory_bytes
    from imbal.remedies.plan import build_plan

    targets = torch.tensor([0] * 10 + [1] * 90)
    with pytest.raises(UserError) as err:
        build_plan([remedy], images=torch.zeros(100, 3, 32, 32, dtype=torch.uint8), targets=targets,
                   num_classes=2, minority_classes=[0], epochs=1, generator=torch.Generator())
    assert str(err.value).startswith(message)
    assert str(err.value).endswith(f"GiB of memory; this machine has {memory_bytes() / 2**30:,.1f} GiB")


def test_image_folder_errors_name_imbal_data(tmp_path):
    from imbal.data.imagefolder import _scan

    with pytest.raises(UserError) as err:
        _scan(str(tmp_path / "none"))
    assert str(err.value) == (f"imagefolder: data root {tmp_path / 'none'} is not a directory (the "
                              "root is data.root, else $IMBAL_DATA, else ./data)")
    with pytest.raises(UserError) as err:
        _scan(str(tmp_path))
    assert "(data.root, else $IMBAL_DATA, else ./data) must hold train/ and test/" in str(err.value)


def test_an_offline_download_leaves_no_empty_folders(tmp_path, monkeypatch):
    from urllib.error import URLError

    import torchvision.datasets.mnist as tv_mnist

    from imbal.data.sources import load_source

    def offline(*args, **kwargs):
        raise URLError("no internet")

    monkeypatch.setattr(tv_mnist, "download_and_extract_archive", offline)
    (tmp_path / "data").mkdir()
    with pytest.raises(UserError, match="download into .* failed"):
        load_source("mnist", root=str(tmp_path / "data" / "new"), download=True)
    assert os.listdir(tmp_path / "data") == []  # the folders torchvision made are gone
