"""Config: defaults, overrides, and each refusal with its one-line message."""

import pytest
import yaml

from imbal.config import apply_override, dump_yaml, load_config
from imbal.errors import UserError


def write(tmp_path, text, name="c.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_defaults_fill_every_section(tmp_path):
    cfg = load_config(write(tmp_path, "data: {source: digits}\n"))
    assert cfg["train"]["epochs"] == 10
    assert cfg["data"]["val_fraction"] == 0.1
    assert cfg["seeds"] == {"data": 0, "train": 0}
    assert cfg["remedy"] == [] and cfg["pretrain"] is None


def test_overrides_are_parsed_as_yaml(tmp_path):
    cfg = load_config(write(tmp_path, "name: x\n"), [
        "train.epochs=3", "data.imbalance.kind=step", "data.imbalance.keep=0.05",
        "data.imbalance.classes=[1, 2]", "remedy=[{name: focal, gamma: 2}]", "train.grad_clip=null"])
    assert cfg["train"]["epochs"] == 3
    assert cfg["data"]["imbalance"]["keep"] == 0.05
    assert cfg["data"]["imbalance"]["classes"] == [1, 2]
    assert cfg["remedy"] == [{"name": "focal", "gamma": 2}]
    assert cfg["train"]["grad_clip"] is None


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config(write(tmp_path, "train: {epochs: 4}\n"), ["seeds.data=7"])
    again = load_config(write(tmp_path, dump_yaml(cfg), "resolved.yaml"))
    assert again == cfg


def test_a_single_remedy_becomes_a_list(tmp_path):
    assert load_config(write(tmp_path, "remedy: balanced_softmax\n"))["remedy"] == ["balanced_softmax"]


@pytest.mark.parametrize("text,overrides,message", [
    ("train: {epoch: 3}\n", [], "unknown key 'train.epoch' (did you mean 'epochs'?)"),
    ("trian: {}\n", [], "unknown key 'trian' (did you mean 'train'?)"),
    ("train: {epochs: ten}\n", [], "bad value for 'train.epochs'"),
    ("train: {epochs: 0}\n", [], "bad value for 'train.epochs': input should be greater than or equal to 1"),
    ("train: {batch_size: -5}\n", [], "bad value for 'train.batch_size'"),
    ("data: {val_fraction: 1.5}\n", [], "bad value for 'data.val_fraction'"),
    ("train: {amp: fp8}\n", [], "bad value for 'train.amp'"),
    ("train: {channels_last: maybe}\n", [], "bad value for 'train.channels_last'"),
    ("name: x\n", ["train.epochs"], "override 'train.epochs' must look like key.path=value"),
    ("name: x\n", ["name.sub=1"], "'name' is not a section"),
    ("- a\n- b\n", [], "must be a YAML mapping"),
])
def test_refusals(tmp_path, text, overrides, message):
    with pytest.raises(UserError) as err:
        load_config(write(tmp_path, text), overrides)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_channels_last_auto_is_on_for_the_cpu_only():
    import torch

    from imbal.training.setup import channels_last_for

    cfg = load_config(None)
    assert cfg["train"]["channels_last"] == "auto"
    assert load_config(None, ["train.channels_last=false"])["train"]["channels_last"] is False
    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    assert [channels_last_for(s, d) for s in ("auto", True, False) for d in (cpu, cuda)] == [
        True, False, True, True, False, False]


def test_yaml_syntax_error_names_the_line(tmp_path):
    p = write(tmp_path, "name: x\ntrain:\n  epochs: [1, 2\n  batch_size: 3\n")
    with pytest.raises(UserError, match=r"YAML syntax error in .* at line \d+"):
        load_config(p)


def test_missing_config_file(tmp_path):
    with pytest.raises(UserError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_override_creates_sections():
    raw = {}
    apply_override(raw, "data.imbalance.ratio=100")
    assert raw == {"data": {"imbalance": {"ratio": 100}}}


def test_bundled_configs_validate():
    from pathlib import Path

    configs = sorted(Path(__file__).resolve().parents[1].glob("configs/*.yaml"))
    assert len(configs) >= 8
    for path in configs:
        cfg = load_config(path)
        assert yaml.safe_load(dump_yaml(cfg)) == cfg, path


def test_readme_config_reference_is_current():
    from pathlib import Path

    from imbal.docs import with_reference

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert with_reference(readme) == readme, "run: python -m imbal.docs --write README.md"


def test_extends_merges_onto_the_parent(tmp_path):
    write(tmp_path, "name: base\ntrain: {epochs: 7, batch_size: 32}\nremedy: [focal]\n", "base.yaml")
    sub = tmp_path / "sub"
    sub.mkdir()
    child = write(sub, "extends: ../base.yaml\nname: child\ntrain: {epochs: 2}\nremedy: []\n")
    cfg = load_config(child)
    assert cfg["name"] == "child" and cfg["train"]["epochs"] == 2
    assert cfg["train"]["batch_size"] == 32 and cfg["remedy"] == []
    loop = write(tmp_path, "extends: loop.yaml\n", "loop.yaml")
    with pytest.raises(UserError, match="loops back"):
        load_config(loop)


def test_bundled_sweeps_expand_to_valid_configs():
    from pathlib import Path

    from imbal.study.sweep import load_sweep
    from imbal.training.setup import check_names

    files = sorted(Path(__file__).resolve().parents[1].glob("configs/sweeps/*.yaml"))
    assert files
    for path in files:
        sweep = load_sweep(path)
        assert sweep.runs, path
        for run in sweep.runs:
            sets = [f"{k}={yaml.safe_dump(v, default_flow_style=True).strip()}"
                    for k, v in {**sweep.common, **run.overrides}.items()]
            check_names(load_config(sweep.base, sets))


def test_a_new_kind_drops_the_old_kinds_parameters_in_extends_and_set(tmp_path):
    """The kind-change rule (KIND_KEYS): in `extends` and `--set`, a section whose kind changes
    keeps none of the old kind's parameters; the same kind keeps them."""
    base = write(tmp_path, """
model: {backbone: lenet, params: {activation: relu}}
data: {imbalance: {kind: step, classes: [0, 1], keep: 0.2}}
train:
  optimizer: {name: sgd, lr: 0.1, momentum: 0.9}
  schedule: {name: multistep, milestones: [3], gamma: 0.5}
remedy: [{name: focal, gamma: 2}]
stages: [{name: a, optimizer: {name: sgd, momentum: 0.5}}]
""", "base.yaml")
    child = write(tmp_path, "extends: base.yaml\ndata: {imbalance: {kind: longtail, ratio: 10}}\n"
                  "model: {backbone: resnet32}\ntrain: {optimizer: {name: adam, lr: 0.001}}\n")
    cfg = load_config(child)
    imb = {k: v for k, v in cfg["data"]["imbalance"].items() if v is not None}
    assert imb == {"kind": "longtail", "ratio": 10, "apply": "once"}
    assert cfg["model"]["params"] == {} and cfg["train"]["optimizer"] == {"name": "adam", "lr": 0.001}
    assert cfg["train"]["schedule"]["milestones"] == [3]  # not changed: merged as ever
    cfg = load_config(base, ["data.imbalance.kind=none", "train.schedule.name=cosine",
                             "remedy.0.name=balanced_softmax", "stages.0.optimizer.name=adam",
                             "train.optimizer.name=SGD"])
    assert {k for k, v in cfg["data"]["imbalance"].items() if v is not None} == {"kind", "apply"}
    assert cfg["train"]["schedule"]["milestones"] == [] and cfg["remedy"] == [{"name": "balanced_softmax"}]
    assert cfg["train"]["optimizer"] == {"name": "SGD", "lr": 0.1, "momentum": 0.9}  # same kind
    assert cfg["stages"][0]["optimizer"] == {"name": "adam", "lr": 0.01}
    # the kind is set first whatever the order given, so the new kind's keys stay
    cfg = load_config(base, ["data.imbalance.ratio=5", "data.imbalance.kind=longtail"])
    assert {k: v for k, v in cfg["data"]["imbalance"].items() if v is not None} == {
        "kind": "longtail", "ratio": 5, "apply": "once"}
    # how an imbalance is applied is not a parameter of its kind: it stays
    cfg = load_config(base, ["data.imbalance.apply=per_batch", "data.imbalance.kind=explicit",
                             "data.imbalance.counts=[3]"])
    assert {k: v for k, v in cfg["data"]["imbalance"].items() if v is not None} == {
        "kind": "explicit", "counts": [3], "apply": "per_batch"}


def test_val_from_removed_needs_val_per_class(tmp_path):
    for sets in (["data.val_from=removed"], ["data.val_per_class=20"]):
        with pytest.raises(UserError, match=r"^data.val_from: removed takes its validation images "
                                            r"per class from data.val_per_class: give both or neither$"):
            load_config(None, sets)


def test_the_kind_rule_knows_every_imbalance_parameter():
    from imbal.config import Imbalance
    from imbal.overrides import IMBALANCE_PARAMS

    assert set(IMBALANCE_PARAMS) == set(Imbalance.model_fields) - {"kind", "apply"}
