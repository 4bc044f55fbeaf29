"""Study S4's bundled configs: ResNet-34 on CIFAR-10 with 500-1000 random images per class,
each trick alone on top of the baseline (nothing else changed), both norms, and all resolvable."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from imbal.config import load_config
from imbal.data.batches import Normalizer
from imbal.data.imbalance import target_counts
from imbal.remedies.batch import build_batch_transforms
from imbal.training.setup import check_names

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
BASE = "s4_cifar_resnet34"
TRICKS = {  # config -> the dotted keys it changes from the baseline
    "s4_cifar_resnet34_groupnorm": {"model.params.norm"},
    "s4_crop_flip": {"data.augment.crop_padding", "data.augment.hflip"},
    "s4_cutout": {"train.batch_transforms"},
    "s4_gridmask": {"train.batch_transforms"},
    "s4_autoaugment": {"train.batch_transforms"},
    "s4_randaugment": {"train.batch_transforms"},
    "s4_mixup": {"train.batch_transforms"},
    "s4_cutmix": {"train.batch_transforms"},
    "s4_grad_clip": {"train.grad_clip"},
    "s4_weight_decay": {"train.optimizer.weight_decay"},
    "s4_dropout": {"model.params.dropout"},
    "s4_lr_decay": {"train.schedule.name"},
    "s4_sampler": {"remedy"},
}


def flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out |= flat(v, f"{prefix}{k}.")
        else:
            out[f"{prefix}{k}"] = v
    return out


def _load(name: str) -> dict:
    cfg = load_config(CONFIGS / f"{name}.yaml")
    cfg.pop("name")
    return cfg


def test_every_s4_config_is_listed():
    names = {p.stem for p in CONFIGS.glob("s4_*.yaml")}
    assert names == {BASE, "s4_combined", "s4_combined_sampler", "s4_mixmatch", *TRICKS}


@pytest.mark.parametrize("name", sorted(TRICKS))
def test_each_trick_changes_only_itself(name):
    base, cfg = flat(_load(BASE)), flat(_load(name))
    assert {k for k in base | cfg if base.get(k) != cfg.get(k)} == TRICKS[name]


def test_baseline_and_both_norms():
    base = load_config(CONFIGS / f"{BASE}.yaml")
    assert base["model"]["backbone"] == "resnet34" and base["data"]["root"] == "cifar10-jpeg"
    assert base["data"]["imbalance"] == {**base["data"]["imbalance"], "kind": "random",
                                         "low": 500, "high": 1000}
    norms = {load_config(p)["model"]["params"]["norm"] for p in CONFIGS.glob("s4_*.yaml")
             if p.stem != "s4_mixmatch"}  # S4's partial labels: its own base (MixMatch)
    assert norms == {"batch", "group"}
    counts = target_counts("random", [5000] * 10, low=500, high=1000,
                           generator=torch.Generator().manual_seed(0))
    assert all(500 <= n <= 1000 for n in counts)


@pytest.mark.parametrize("name", sorted({p.stem for p in CONFIGS.glob("s4_*.yaml")}))
def test_s4_configs_resolve(name):
    cfg = load_config(CONFIGS / f"{name}.yaml")
    check_names(cfg)
    norm = Normalizer([0.5] * 3, [0.25] * 3, torch.device("cpu"))
    t = build_batch_transforms(cfg["train"]["batch_transforms"], num_classes=10,
                               class_counts=[700] * 10, normalizer=norm)
    if t is not None:
        x = torch.randn(4, 3, 32, 32)
        assert t(x, torch.arange(4), torch.Generator().manual_seed(0))[0].shape == x.shape
