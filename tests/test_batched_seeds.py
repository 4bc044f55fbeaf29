"""Batched seeds (imbal/bench/batched_seeds.py): K seeds trained as one vmapped model give each
seed what its own separate run gives, to float tolerance, with and without BatchNorm."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from imbal.bench.batched_seeds import Batched, Separate, batches, make_models, max_difference

CPU = torch.device("cpu")


@pytest.mark.parametrize("backbone", ["lenet", "small_cnn"])
def test_each_seeds_gradient_is_its_own_runs(backbone):
    separate, batched = make_models(backbone, 3, CPU), Batched(make_models(backbone, 3, CPU), "sgd")
    (x, y), = batches(3, 1, 16, backbone, CPU)
    batched.losses(batched.stacked, batched.buffers, x, y).sum().backward()
    for k, m in enumerate(separate):
        F.cross_entropy(m(x[k]), y[k]).backward()
        for name, p in m.named_parameters():
            assert torch.allclose(batched.stacked[name].grad[k], p.grad, rtol=1e-4, atol=1e-6), name
        for name, b in m.named_buffers():  # BatchNorm's running statistics, per seed
            assert torch.allclose(batched.buffers[name][k].float(), b.float(), atol=1e-6), name


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_steps_of_the_stacked_optimizer_equal_separate_runs(optimizer):
    """torch.optim over the stacked parameters acts element by element: two steps of three
    seeds of LeNet agree with three separate runs; the seeds themselves differ."""
    sep, bat = (cls(make_models("lenet", 3, CPU), optimizer) for cls in (Separate, Batched))
    for x, y in batches(3, 2, 16, "lenet", CPU):
        sep.step(x, y)
        bat.step(x, y)
    # Adam divides by sqrt(v): an element whose gradient is ~0 turns a 1e-9 rounding
    # difference into a visible share of its 1e-3 step; SGD keeps it at rounding size.
    assert max_difference(sep, bat, 3) < (2e-4 if optimizer == "adam" else 1e-6)
    w = [bat.params(k)["head.weight"] for k in range(3)]
    assert not torch.allclose(w[0], w[1])
