"""Every bundled config, every cell of every bundled sweep and every row of every study script
resolves to its per-class counts (what `imbal data` prints) on synthetic data of the right
shape, so no shipped config can be broken again.

The files are found by glob (configs/**.yaml, scripts/study_*.sh), so a new config, sweep or
study is covered without editing this test. A study script is run with --emit (study_lib.sh),
which writes its generated sweep file(s) and --set items instead of running them, in its full
and its --quick form.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pluginkit
import pytest
import synth
import torch
import yaml
from test_standard_sources import as_official

from imbal.config import load_config
from imbal.data.prepare import prepare_data
from imbal.data.sources import resolve_root
from imbal.study.sweep import load_sweep
from imbal.training.setup import check_names, format_counts

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
UC_MERCED = ["agricultural", "airplane", "baseballdiamond", "beach", "buildings", "chaparral",
             "denseresidential", "forest", "freeway", "golfcourse", "harbor", "intersection",
             "mediumresidential", "mobilehomepark", "overpass", "parkinglot", "river", "runway",
             "sparseresidential", "storagetanks", "tenniscourts"]
# Image folders the configs name (data.root): their classes and training images per class
# (1,000 in cifar10-jpeg: S4 draws 500-1000 a class); any other: 10 classes of 500.
FOLDERS = {"cifar10-jpeg": (synth.CIFAR10_CLASSES, 1000), "landuse": (UC_MERCED, 50)}
# Training images per class: 500 lets a long tail of ratio 100 keep 5 a class, enough for a
# 10% validation split; CIFAR-100 (100 classes) only has long-tail configs that validate on
# removed images, and a balanced one.
PER_CLASS = {"cifar100": 100}
WRITERS = {
    "mnist": lambda root, n: synth.write_mnist_idx(root, n, 20),
    "fashion_mnist": lambda root, n: synth.write_fashion_mnist_idx(root, n, 20),
    "kmnist": lambda root, n: synth.write_mnist_idx(root, n, 20, folder="KMNIST"),
    "cifar10": lambda root, n: synth.write_cifar10_batches(root, n, 20),
    "cifar100": lambda root, n: synth.write_cifar100(root, n, 5),
    "svhn": lambda root, n: synth.write_svhn(root, n, 20),
}


def _is_sweep(path: Path) -> bool:
    raw = yaml.safe_load(path.read_text())
    return isinstance(raw, dict) and "base" in raw


CONFIG_FILES = sorted(p for p in CONFIGS.rglob("*.yaml") if not _is_sweep(p))
SWEEP_FILES = sorted(p for p in CONFIGS.rglob("*.yaml") if _is_sweep(p))
STUDY_SCRIPTS = sorted(p for p in (ROOT / "scripts").glob("study_*.sh") if p.name != "study_lib.sh")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """An empty data root; each source's synthetic files are written on first use."""
    return tmp_path_factory.mktemp("data"), tmp_path_factory.mktemp("cache"), set()


fresh = pluginkit.fresh  # the fixture: the plugins a config imports are forgotten afterwards


@pytest.fixture
def counts_of(data_root, monkeypatch, fresh):
    """counts_of(config, overrides, imports) -> the counts dict `imbal data` prints."""
    root, cache, written = data_root
    monkeypatch.setenv("IMBAL_DATA", str(root))
    monkeypatch.setenv("IMBAL_CACHE", str(cache))  # decoded once for the whole module

    def resolve(config, overrides=(), imports=()):
        cfg = load_config(config, list(overrides), list(imports))
        _place_weights(cfg["model"], monkeypatch, cache)
        check_names(cfg)
        _write_source(cfg["data"], root, written)
        if cfg["data"]["source"] in WRITERS:  # torchvision's md5 check passes on these files
            as_official(monkeypatch, cfg["data"]["source"], root)
        data = prepare_data(cfg["data"], data_seed=cfg["seeds"]["data"],
                            minority_override=cfg["eval"]["minority_classes"])
        counts = data.counts()
        assert any(line.startswith("total") for line in format_counts(counts).splitlines())
        assert min(counts["train"]) >= 1, (config, overrides, counts)
        return counts

    return resolve


def _place_weights(model: dict, monkeypatch, cache: Path) -> None:
    """A config with `pretrained: imagenet` finds torchvision's weight file in a local
    TORCH_HOME (the architecture's own state dict of fresh weights, under the file name the
    weights enum gives): what a user puts there by hand, as the README says."""
    if model.get("pretrained") != "imagenet":
        return
    from torchvision import models

    name = model["backbone"].split("/", 1)[1]
    home = cache / "torch_home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    path = home / "hub" / "checkpoints" / models.get_model_weights(name).DEFAULT.url.rsplit("/", 1)[1]
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(models.get_model(name, weights=None).state_dict(), path)


def _write_source(data: dict, root: Path, written: set) -> None:
    source = data["source"]
    if source == "imagefolder":
        folder = root / data["root"] if data["root"] else Path(resolve_root(None))
        if not folder.is_relative_to(root):  # an absolute data.root: a user's own folder
            pytest.fail(f"a bundled config names an image folder outside $IMBAL_DATA: {folder}")
        if folder.name not in written:
            classes, n = FOLDERS.get(folder.name, ([f"c{i}" for i in range(10)], 500))
            synth.write_image_folder(str(folder), classes, n, size=32, n_test_per_class=10)
            written.add(folder.name)
    elif source in WRITERS and source not in written:
        WRITERS[source](str(root), PER_CLASS.get(source, 500))
        written.add(source)


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_every_bundled_config_resolves_to_its_counts(path, counts_of):
    counts_of(path)


def _cells(sweep_file: Path, extra: dict | None = None) -> list[tuple[Path, list[str], list[str]]]:
    """(base config, overrides, imports) of each configuration of a sweep, at its first seeds."""
    from imbal.study.sweep import format_override

    sweep = load_sweep(sweep_file, extra=extra)
    out, seen = [], set()
    for run in sweep.runs:
        if run.label not in seen:
            seen.add(run.label)
            items = [format_override(k, v) for k, v in {**sweep.common, **run.overrides}.items()]
            out.append((sweep.base, items + [f"seeds.data={run.seeds['data']}"], sweep.imports))
    return out


@pytest.mark.parametrize("path", SWEEP_FILES, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_every_cell_of_every_bundled_sweep_resolves(path, counts_of):
    cells = _cells(path)
    assert cells
    for base, items, imports in cells:
        counts_of(base, items, imports)


@pytest.mark.parametrize("quick", [False, True], ids=["full", "quick"])
@pytest.mark.parametrize("script", STUDY_SCRIPTS, ids=lambda p: p.name)
def test_every_row_of_every_study_script_resolves(script, quick, counts_of, tmp_path):
    emit = tmp_path / "emit"
    args = ["bash", str(script), "--emit", str(emit)] + (["--quick"] if quick else [])
    done = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    sweeps = sorted(emit.glob("*.yaml"))
    assert sweeps, f"{script.name} --emit wrote no sweep file"
    for sweep_file in sweeps:
        lines = sweep_file.with_suffix(".set").read_text().splitlines()
        extra = {k: yaml.safe_load(v) for k, _, v in (x.partition("=") for x in lines if x)}
        for base, items, imports in _cells(sweep_file, extra):
            counts_of(base, items, imports)


def test_the_kind_change_rule_makes_the_balanced_rows_resolve(counts_of):
    """The four configs refused before the rule: the parent's step (or long-tail) parameters no
    longer reach kind none (or step); and --set data.imbalance.kind=none on a step config."""
    for name in ("s1_balanced", "s2_balanced", "s3_mnist_lenet_balanced"):
        counts = counts_of(CONFIGS / f"{name}.yaml")
        assert counts["removed"] == [0] * 10 and counts["minority_classes"] == [0, 1, 2, 3, 4]
    counts = counts_of(CONFIGS / "s3_mnist_lenet.yaml", ["data.imbalance.kind=none"])
    assert counts["removed"] == [0] * 10
    counts = counts_of(CONFIGS / "lt_cifar_resnet32_step10.yaml")  # step ratio 10, 1000 a class
    # validation: 100 a class from the removed images; classes 0-4 lost none and give their own
    assert counts["train"] == [900] * 5 + [100] * 5 and counts["val"] == [100] * 10
    assert counts["val_from_kept"] == [100] * 5 + [0] * 5
    assert counts["minority_classes"] == [5, 6, 7, 8, 9]
