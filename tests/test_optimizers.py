"""imbal's optimizers against torch.optim: identical tensors, step for step; schedules against
LambdaLR; state_dict compatible both ways."""

import pytest
import torch
from torch import nn

from imbal.training.optim import build_optimizer, build_scheduler
from imbal.training.optimizers import SGD, Adam, EpochSchedule


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 5))


def _batches(n: int = 12):
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(8, 1, 8, 8, generator=g), torch.randint(0, 5, (8,), generator=g))
            for _ in range(n)]


def _train(model, opt, batches, scaler=None):
    for x, y in batches:
        opt.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(model(x), y)
        if scaler is None:
            loss.backward()
            opt.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()


def _assert_same(a: nn.Module, b: nn.Module):
    for (name, p), q in zip(a.named_parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q), name


CASES = {
    "sgd": (lambda ps: SGD(ps, lr=0.1), lambda ps, fe: torch.optim.SGD(ps, lr=0.1, foreach=fe)),
    "sgd momentum wd": (lambda ps: SGD(ps, lr=0.05, momentum=0.9, weight_decay=5e-4),
                        lambda ps, fe: torch.optim.SGD(ps, lr=0.05, momentum=0.9,
                                                       weight_decay=5e-4, foreach=fe)),
    "sgd nesterov": (lambda ps: SGD(ps, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3),
                     lambda ps, fe: torch.optim.SGD(ps, lr=0.05, momentum=0.9, nesterov=True,
                                                    weight_decay=1e-3, foreach=fe)),
    "adam": (lambda ps: Adam(ps, lr=3e-3, weight_decay=1e-3),
             lambda ps, fe: torch.optim.Adam(ps, lr=3e-3, weight_decay=1e-3, foreach=fe)),
    "adamw": (lambda ps: Adam(ps, lr=3e-3, weight_decay=0.05, decoupled=True),
              lambda ps, fe: torch.optim.AdamW(ps, lr=3e-3, weight_decay=0.05, foreach=fe)),
}


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("case", list(CASES))
def test_same_parameters_and_state_as_torch_optim(case, foreach):
    ours_fn, torch_fn = CASES[case]
    a, b = _model(), _model()
    opt_a, opt_b = ours_fn(a.parameters()), torch_fn(b.parameters(), foreach)
    _train(a, opt_a, _batches())
    _train(b, opt_b, _batches())
    _assert_same(a, b)
    sa, sb = opt_a.state_dict()["state"], opt_b.state_dict()["state"]
    assert sa.keys() == sb.keys()
    for i in sa:
        assert sa[i].keys() == sb[i].keys()
        for k in sa[i]:
            assert torch.equal(sa[i][k], sb[i][k]), (i, k)


@pytest.mark.parametrize("case", ["sgd momentum wd", "adam"])
def test_state_dict_resumes_exactly_and_loads_torch_optim_state(case):
    ours_fn, torch_fn = CASES[case]
    batches = _batches()
    straight = _model()
    _train(straight, ours_fn(straight.parameters()), batches)
    # Stop after 5 steps, save, rebuild, load, go on: same as never stopping.
    first = _model()
    opt = ours_fn(first.parameters())
    _train(first, opt, batches[:5])
    saved_model, saved_opt = first.state_dict(), opt.state_dict()
    second = _model(seed=7)
    second.load_state_dict(saved_model)
    opt2 = ours_fn(second.parameters())
    opt2.load_state_dict(saved_opt)
    _train(second, opt2, batches[5:])
    _assert_same(second, straight)
    # A torch.optim state_dict (a checkpoint written by an older imbal) loads and goes on alike.
    ref = _model()
    topt = torch_fn(ref.parameters(), False)
    _train(ref, topt, batches[:5])
    third = _model(seed=3)
    third.load_state_dict(ref.state_dict())
    opt3 = ours_fn(third.parameters())
    opt3.load_state_dict(topt.state_dict())
    _train(third, opt3, batches[5:])
    _train(ref, topt, batches[5:])
    _assert_same(third, ref)


def test_load_state_dict_refuses_other_parameter_layout():
    opt = SGD(_model().parameters(), lr=0.1, momentum=0.9)
    other = SGD(nn.Linear(3, 2).parameters(), lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match="different number of parameters"):
        opt.load_state_dict(other.state_dict())


def test_grad_scaler_unscales_and_skips_non_finite_steps():
    a, b = _model(), _model()
    opt_a, opt_b = SGD(a.parameters(), lr=0.1, momentum=0.9), torch.optim.SGD(
        b.parameters(), lr=0.1, momentum=0.9)
    sc_a = torch.amp.GradScaler("cpu", init_scale=1024.0)
    sc_b = torch.amp.GradScaler("cpu", init_scale=1024.0)
    _train(a, opt_a, _batches(4), sc_a)
    _train(b, opt_b, _batches(4), sc_b)
    _assert_same(a, b)
    before = [p.detach().clone() for p in a.parameters()]
    for p in a.parameters():  # an overflowed fp16 backward
        p.grad = torch.full_like(p, float("inf"))
    sc_a.step(opt_a)
    sc_a.update()
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), before, strict=True))
    assert sc_a.get_scale() == 512.0


def test_parameters_without_gradient_are_left_alone():
    model = _model()
    opt = SGD(model.parameters(), lr=0.1, momentum=0.9)
    frozen = model[0].weight
    frozen.requires_grad_(False)
    kept = frozen.detach().clone()
    _train(model, opt, _batches(3))
    assert torch.equal(frozen, kept)
    assert frozen not in opt.state
    assert len(opt.state) == 3


def test_schedule_matches_lambda_lr_and_loads_its_state():
    sched = {"name": "multistep", "t_max": None, "milestones": [4, 7], "gamma": 0.1,
             "warmup_epochs": 2}
    opt = build_optimizer(_model().parameters(), {"name": "sgd", "lr": 0.1, "momentum": 0.9,
                                                  "nesterov": False, "weight_decay": 0.0})
    ours = build_scheduler(opt, sched, epochs=10)
    tm = _model()
    topt = torch.optim.SGD(tm.parameters(), lr=0.1, momentum=0.9)
    theirs = torch.optim.lr_scheduler.LambdaLR(topt, ours.fn)
    lrs, tlrs = [], []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        tlrs.append(topt.param_groups[0]["lr"])
        ours.step()
        topt.step()
        theirs.step()
    assert lrs == tlrs
    assert lrs[:3] == [0.05, 0.1, 0.1] and lrs[4] == pytest.approx(0.01)
    again = EpochSchedule(build_optimizer(_model().parameters(), {
        "name": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": False, "weight_decay": 0.0}),
        ours.fn)
    again.load_state_dict(theirs.state_dict())
    assert again.last_epoch == 10
    assert again.optimizer.param_groups[0]["lr"] == pytest.approx(topt.param_groups[0]["lr"])
