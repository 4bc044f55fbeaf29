"""Optimizers from torch.optim by name: the arguments a section may hold (refused, not ignored),
imbal's defaults, the foreach/fused choice, a hand-computed update, and resume."""

import pytest
import torch
from torch import nn

from imbal.errors import UserError
from imbal.training.optim import (
    OPTIMIZERS,
    UNUSABLE,
    build_optimizer,
    choose_implementation,
    describe_optimizer,
    implementation,
    resolve_optimizer,
    without_untaken_arguments,
)


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 5))


def _batches(n: int = 12):
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(8, 1, 8, 8, generator=g), torch.randint(0, 5, (8,), generator=g))
            for _ in range(n)]


def _train(model, opt, batches):
    for x, y in batches:
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()


def _assert_same(a: nn.Module, b: nn.Module):
    for (name, p), q in zip(a.named_parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q), name


def test_every_torch_optimizer_is_there_by_lower_case_and_class_name():
    names = OPTIMIZERS.names()
    assert names == ["adadelta", "adafactor", "adagrad", "adam", "adamax", "adamw", "asgd",
                     "nadam", "radam", "rmsprop", "rprop", "sgd"]
    for name in names:
        cls = OPTIMIZERS.get(name)
        assert cls.__name__.lower() == name and getattr(torch.optim, cls.__name__) is cls
        opt = build_optimizer(_model().parameters(), {"name": cls.__name__, "lr": 0.01})
        assert type(opt) is cls
        _train(_model(), build_optimizer(_model().parameters(), {"name": name, "lr": 0.01}),
               _batches(2))
    assert resolve_optimizer({"name": "RMSprop", "lr": 0.01})["name"] == "rmsprop"


def test_resolved_sections_list_every_argument_with_imbal_defaults():
    # sgd: momentum 0.9 unless given (imbal's default before torch.optim; torch's is 0)
    assert resolve_optimizer({"name": "sgd", "lr": 0.01}) == {
        "name": "sgd", "lr": 0.01, "momentum": 0.9, "dampening": 0.0, "weight_decay": 0.0,
        "nesterov": False, "maximize": False}
    assert resolve_optimizer({"name": "sgd", "lr": 0.1, "momentum": 0})["momentum"] == 0.0
    # adamw: weight_decay 0 unless given (torch's default is 0.01)
    assert resolve_optimizer({"name": "AdamW", "lr": 0.001}) == {
        "name": "adamw", "lr": 0.001, "betas": [0.9, 0.999], "eps": 1e-08, "weight_decay": 0.0,
        "amsgrad": False, "maximize": False}
    assert resolve_optimizer({"name": "adam", "lr": 0.001, "betas": [0.5, 0.9]}) == {
        "name": "adam", "lr": 0.001, "betas": [0.5, 0.9], "eps": 1e-08, "weight_decay": 0.0,
        "amsgrad": False, "maximize": False, "decoupled_weight_decay": False}
    # implementation keys only when given; resolving twice changes nothing
    once = resolve_optimizer({"name": "rmsprop", "lr": 0.01, "foreach": False})
    assert once["foreach"] is False and resolve_optimizer(once) == once
    opt = build_optimizer(_model().parameters(), {"name": "adamw", "lr": 0.001})
    assert opt.defaults["weight_decay"] == 0.0 and opt.defaults["betas"] == (0.9, 0.999)


VALID_ADAM = ("lr, betas, eps, weight_decay, amsgrad, foreach, maximize, capturable, "
              "differentiable, fused, decoupled_weight_decay")


@pytest.mark.parametrize("section,message", [
    ({"name": "adam", "lr": 0.001, "momentum": 0.9},
     f"train.optimizer: adam takes no argument 'momentum'; valid: {VALID_ADAM} (a changed "
     "train.optimizer.name keeps the section's other keys: set the whole section, e.g. "
     "--set 'train.optimizer={name: adam, lr: 0.001}')"),
    ({"name": "sgd", "lr": 0.1, "nesterow": True},
     "train.optimizer: sgd takes no argument 'nesterow' (did you mean 'nesterov'?); valid: lr, "
     "momentum, dampening, weight_decay, nesterov, maximize, foreach, differentiable, fused"),
    ({"name": "adamx", "lr": 0.1},
     "unknown optimizer 'adamx' (did you mean 'adamax'?); valid: adadelta, adafactor, adagrad, "
     "adam, adamax, adamw, asgd, nadam, radam, rmsprop, rprop, sgd"),
    ({"name": "Sgd", "lr": 0.1}, "unknown optimizer 'Sgd' (did you mean 'sgd'?)"),
    ({"name": "LBFGS", "lr": 0.1},
     "train.optimizer.name: lbfgs cannot train in imbal: its step needs a closure"),
    ({"name": "sgd", "lr": 0.1, "nesterov": "yes"},
     "bad value for 'train.optimizer.nesterov': expected true or false (got 'yes')"),
    ({"name": "sgd", "lr": 0.1, "nesterov": 1},
     "bad value for 'train.optimizer.nesterov': expected true or false (got 1)"),
    ({"name": "sgd", "lr": 0.1, "momentum": float("nan")},
     "bad value for 'train.optimizer.momentum': expected a finite number (got nan)"),
    ({"name": "sgd", "lr": 0.1, "weight_decay": float("inf")},
     "bad value for 'train.optimizer.weight_decay': expected a finite number (got inf)"),
    ({"name": "sgd", "lr": 0.1, "weight_decay": True},
     "bad value for 'train.optimizer.weight_decay': expected a finite number (got True)"),
    ({"name": "adam", "lr": 0.1, "betas": [0.9]},
     "bad value for 'train.optimizer.betas': expected a list of 2 (a finite number, a finite "
     "number) (got [0.9])"),
    ({"name": "adam", "lr": 0.1, "eps": "small"},
     "bad value for 'train.optimizer.eps': expected a finite number (got 'small')"),
    # torch's own checks, as one line
    ({"name": "sgd", "lr": 0.1, "momentum": 0, "nesterov": True},
     "train.optimizer: sgd refuses these arguments: Nesterov momentum requires a momentum and "
     "zero dampening"),
    ({"name": "adam", "lr": 0.1, "betas": [0.9, 1.5]},
     "train.optimizer: adam refuses these arguments: Invalid beta parameter at index 1: 1.5"),
    ({"name": "sgd", "lr": 0.1, "momentum": -0.5},
     "train.optimizer: sgd refuses these arguments: Invalid momentum value: -0.5"),
])
def test_refused_arguments_and_values(section, message):
    with pytest.raises(UserError) as err:
        resolve_optimizer(section, "train.optimizer")
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_the_unusable_optimizers_are_refused_with_their_reason():
    for name, reason in UNUSABLE.items():
        with pytest.raises(UserError) as err:
            resolve_optimizer({"name": name, "lr": 0.1}, "pretrain.optimizer")
        assert str(err.value) == f"pretrain.optimizer.name: {name} cannot train in imbal: {reason}"


def test_foreach_on_the_cpu_fused_on_cuda_where_the_class_has_it():
    params = list(_model().parameters())
    for name in ("sgd", "adam", "adamw", "rmsprop", "adagrad", "nadam"):
        opt = build_optimizer(params, {"name": name, "lr": 0.01})
        assert opt.defaults["foreach"] is True and not opt.defaults.get("fused"), name
        assert "(foreach)" in describe_optimizer(opt)
        assert implementation(OPTIMIZERS.get(name), params, {}) == {"foreach": True}
    # a key in the section wins
    opt = build_optimizer(params, {"name": "sgd", "lr": 0.01, "foreach": False})
    assert opt.defaults["foreach"] is False
    assert "(per-tensor loop)" in describe_optimizer(opt)
    assert implementation(OPTIMIZERS.get("sgd"), params, {"fused": False}) == {}
    # the rule for CUDA parameters (this machine may have no GPU): fused where the class has it
    sgd, rms = {"foreach", "fused", "lr"}, {"foreach", "lr"}
    assert choose_implementation(sgd, all_cuda_float=True, any_cuda=True) == {"fused": True}
    assert choose_implementation(rms, all_cuda_float=True, any_cuda=True) == {}
    assert choose_implementation(sgd, all_cuda_float=False, any_cuda=True) == {}  # mixed
    assert choose_implementation(sgd, all_cuda_float=False, any_cuda=False) == {"foreach": True}
    assert choose_implementation({"lr"}, all_cuda_float=False, any_cuda=False) == {}


def test_sgd_momentum_update_by_hand():
    """p=[1, -2], a constant gradient g=[0.5, 1], lr 0.1, momentum 0.9 (imbal's default):
    step 1: buf=g, p -= 0.1*g -> [0.95, -2.1]; step 2: buf=0.9g+g=1.9g -> [0.855, -2.29];
    with weight_decay 0.1 the gradient is g + 0.1p: step 1 -> [1 - 0.1*0.6, -2 - 0.1*0.8]."""
    p = torch.tensor([1.0, -2.0], dtype=torch.float64, requires_grad=True)
    opt = build_optimizer([p], {"name": "sgd", "lr": 0.1})
    for expected in ([0.95, -2.1], [0.855, -2.29]):
        p.grad = torch.tensor([0.5, 1.0], dtype=torch.float64)
        opt.step()
        assert p.detach().tolist() == pytest.approx(expected, abs=1e-15)
    q = torch.tensor([1.0, -2.0], dtype=torch.float64, requires_grad=True)
    opt = build_optimizer([q], {"name": "sgd", "lr": 0.1, "momentum": 0, "weight_decay": 0.1})
    q.grad = torch.tensor([0.5, 1.0], dtype=torch.float64)
    opt.step()
    assert q.detach().tolist() == pytest.approx([0.94, -2.08], abs=1e-15)


@pytest.mark.parametrize("section,direct", [
    ({"name": "sgd", "lr": 0.05, "nesterov": True, "weight_decay": 1e-3},
     lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3,
                                foreach=True)),
    ({"name": "adamw", "lr": 3e-3},
     lambda ps: torch.optim.AdamW(ps, lr=3e-3, weight_decay=0.0, foreach=True)),
])
def test_the_same_as_torch_optim_built_by_hand(section, direct):
    a, b = _model(), _model()
    _train(a, build_optimizer(a.parameters(), section), _batches())
    _train(b, direct(b.parameters()), _batches())
    _assert_same(a, b)


def test_state_dict_resumes_exactly():
    section = {"name": "adam", "lr": 3e-3, "weight_decay": 1e-3}
    batches = _batches()
    straight = _model()
    _train(straight, build_optimizer(straight.parameters(), section), batches)
    first = _model()
    opt = build_optimizer(first.parameters(), section)
    _train(first, opt, batches[:5])
    second = _model(seed=7)
    second.load_state_dict(first.state_dict())
    opt2 = build_optimizer(second.parameters(), section)
    opt2.load_state_dict(opt.state_dict())
    _train(second, opt2, batches[5:])
    _assert_same(second, straight)


def test_a_plugin_optimizer_builder_gets_its_own_arguments_checked():
    @OPTIMIZERS.register("test_plain_sgd")
    def plain_sgd(params, *, lr: float, kick: float = 1.0, steady: bool = False):
        return torch.optim.SGD(params, lr=lr * kick)

    try:
        assert resolve_optimizer({"name": "test_plain_sgd", "lr": 0.1}) == {
            "name": "test_plain_sgd", "lr": 0.1, "kick": 1.0, "steady": False}
        opt = build_optimizer(_model().parameters(), {"name": "test_plain_sgd", "lr": 0.1,
                                                      "kick": 3})
        assert opt.param_groups[0]["lr"] == pytest.approx(0.3)
        with pytest.raises(UserError, match="test_plain_sgd takes no argument 'momentum'; "
                                            "valid: lr, kick, steady"):
            resolve_optimizer({"name": "test_plain_sgd", "lr": 0.1, "momentum": 0.9})
        with pytest.raises(UserError, match="'train.optimizer.steady': expected true or false"):
            resolve_optimizer({"name": "test_plain_sgd", "lr": 0.1, "steady": "no"})
    finally:
        OPTIMIZERS._items.pop("test_plain_sgd")


def test_evaluation_drops_what_an_older_imbal_saved_for_every_optimizer():
    old = {"name": "adam", "lr": 0.001, "momentum": 0.9, "nesterov": False, "weight_decay": 0.0}
    assert without_untaken_arguments(old) == {"name": "adam", "lr": 0.001, "weight_decay": 0.0}
    sgd = {"name": "sgd", "lr": 0.01, "momentum": 0.9, "nesterov": False, "weight_decay": 0.0}
    assert without_untaken_arguments(sgd) == sgd
