"""Schedules from torch.optim.lr_scheduler: the lr of every epoch against lists computed by hand
from the formulas imbal used before (warm-up lr*(e+1)/w for e < w, then base*fn(e) at the
absolute epoch e), refusals, a plugin schedule, and resume through state_dict."""

import math
from pathlib import Path

import pytest
import torch

from imbal.config import load_config
from imbal.errors import UserError
from imbal.training.optim import (
    SCHEDULES,
    build_optimizer,
    build_scheduler,
    check_schedule,
    lr_factors,
)

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
BASE = {"name": "none", "t_max": None, "milestones": [], "gamma": 0.1, "warmup_epochs": 0}
R3 = math.sqrt(3)


def sched(**kw) -> dict:
    return {**BASE, **kw}


def lrt(e: int) -> float:
    """configs/lt_cifar_resnet32.yaml by the old formula: warm-up 5, x0.01 at 160 and 180."""
    return (e + 1) / 5 if e < 5 else 1.0 if e < 160 else 0.01 if e < 180 else 0.0001


CASES = {
    "none": (sched(), 4, [1.0, 1.0, 1.0, 1.0]),
    "none, warm-up 3": (sched(warmup_epochs=3), 5, [1 / 3, 2 / 3, 1.0, 1.0, 1.0]),
    "multistep [3, 5] x0.1": (sched(name="multistep", milestones=[3, 5]), 7,
                              [1, 1, 1, 0.1, 0.1, 0.01, 0.01]),
    "long-tail config (warm-up 5, [160, 180] x0.01)": (
        sched(name="multistep", milestones=[160, 180], gamma=0.01, warmup_epochs=5), 200,
        [lrt(e) for e in range(200)]),
    "study_lt --quick (warm-up 1, [2] x0.01)": (
        sched(name="multistep", milestones=[2], gamma=0.01, warmup_epochs=1), 3, [1, 1, 0.01]),
    "a milestone inside the warm-up": (
        sched(name="multistep", milestones=[2, 6], gamma=0.5, warmup_epochs=4), 8,
        [0.25, 0.5, 0.75, 1.0, 0.5, 0.5, 0.25, 0.25]),
    "a milestone at the warm-up's end": (
        sched(name="multistep", milestones=[2, 4], gamma=0.5, warmup_epochs=2), 5,
        [0.5, 1.0, 0.5, 0.5, 0.25]),
    # 0.5 (1 + cos(pi e / 6)): cos(pi/6) = sqrt3/2, cos(pi/3) = 1/2, cos(pi/2) = 0, ...
    "cosine over the run (6 epochs)": (sched(name="cosine"), 6,
                                       [1, (2 + R3) / 4, 0.75, 0.5, 0.25, (2 - R3) / 4]),
    # configs/s1_mnist_resnet50.yaml: t_max 100, 40 epochs: the first 40 of 100
    "cosine t_max 100, 40 epochs": (sched(name="cosine", t_max=100), 40,
                                    [0.5 * (1 + math.cos(math.pi * e / 100)) for e in range(40)]),
    # New with torch's schedulers: after a warm-up the cosine starts at the full lr and ends at
    # t_max (before: the absolute-epoch cosine, 0.5 (1 + cos(pi e / 6)) from epoch 2 on).
    # cos(pi/4) = sqrt2/2: 1, (2 + sqrt2)/4, 1/2, (2 - sqrt2)/4
    "cosine after a 2-epoch warm-up": (sched(name="cosine", warmup_epochs=2), 6,
                                       [0.5, 1, 1, (2 + math.sqrt(2)) / 4, 0.5,
                                        (2 - math.sqrt(2)) / 4]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_the_lr_of_every_epoch(case):
    section, epochs, expected = CASES[case]
    assert lr_factors(section, epochs) == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_the_shipped_configs_schedules_are_the_old_ones():
    cfg = load_config(CONFIGS / "lt_cifar_resnet32.yaml")
    tr = cfg["train"]
    assert lr_factors(tr["schedule"], tr["epochs"]) == pytest.approx(
        [lrt(e) for e in range(200)], rel=1e-12)
    cfg = load_config(CONFIGS / "quickstart.yaml")  # cosine over its 15 epochs
    assert lr_factors(cfg["train"]["schedule"], 15) == pytest.approx(
        [0.5 * (1 + math.cos(math.pi * e / 15)) for e in range(15)], rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("section,epochs,message", [
    (sched(name="multistep"), 10, "schedule multistep needs train.schedule.milestones"),
    (sched(name="multistep", milestones=[5, 3]), 10,
     "schedule milestones must be increasing epochs >= 1, got [5, 3]"),
    (sched(name="multistep", milestones=[0, 3]), 10, "increasing epochs >= 1, got [0, 3]"),
    (sched(name="cosine", t_max=5), 10,
     "train.schedule.t_max (5) is shorter than the run (10 epochs): its last epochs would "
     "train at lr 0; set t_max >= epochs"),
    (sched(name="cosine", t_max=10, warmup_epochs=10), 10,
     "train.schedule.t_max (10) must be larger than warmup_epochs (10)"),
    (sched(name="cosine", milestones=[3]), 10,
     "train.schedule: cosine takes no 'milestones'; it takes: t_max, warmup_epochs"),
    (sched(name="none", t_max=4), 10,
     "train.schedule: none takes no 't_max'; it takes: warmup_epochs"),
    (sched(name="multistep", milestones=[3], period=2), 10,
     "train.schedule: multistep takes no 'period'; it takes: milestones, gamma, warmup_epochs"),
    (sched(name="step"), 10, "unknown schedule 'step' (did you mean 'multistep'?); valid: cosine, multistep, none"),
])
def test_refused_schedules(section, epochs, message):
    with pytest.raises(UserError) as err:
        check_schedule(section, epochs)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_plugin_schedule_gets_its_own_keys():
    @SCHEDULES.register("test_halving")
    def halving(optimizer, *, epochs, warmup_epochs, every: int = 2):
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=every, gamma=0.5)

    try:
        assert lr_factors(sched(name="test_halving", every=3), 7) == [1, 1, 1, .5, .5, .5, .25]
        assert lr_factors(sched(name="test_halving", warmup_epochs=2), 6) == \
            pytest.approx([0.5, 1, 1, 1, 0.5, 0.5])  # its count starts after the warm-up
        with pytest.raises(UserError, match="test_halving takes no 'milestones'"):
            check_schedule(sched(name="test_halving", milestones=[2]), 5)
    finally:
        SCHEDULES._items.pop("test_halving")


def test_resumed_schedule_goes_on_as_uninterrupted():
    section = sched(name="multistep", milestones=[3, 6], gamma=0.5, warmup_epochs=2)
    straight = lr_factors(section, 9)
    p = [torch.zeros(1, requires_grad=True)]
    opt = build_optimizer(p, {"name": "sgd", "lr": 1.0})
    first = build_scheduler(opt, section, 9)
    for _ in range(4):
        opt.step()
        first.step()
    saved_opt, saved = opt.state_dict(), first.state_dict()
    q = [torch.zeros(1, requires_grad=True)]
    opt2 = build_optimizer(q, {"name": "sgd", "lr": 1.0})
    second = build_scheduler(opt2, section, 9)
    opt2.load_state_dict(saved_opt)
    second.load_state_dict(saved)
    rest = []
    for _ in range(5):
        rest.append(opt2.param_groups[0]["lr"])
        opt2.step()
        second.step()
    assert rest == straight[4:]
