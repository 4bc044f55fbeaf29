"""Long-tail tricks, re-sampling and logits: progressively-balanced and deferred re-sampling,
class-dependent temperatures (CDT) and label-aware smoothing, each against its paper's formula
computed by hand."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from imbal.errors import UserError
from imbal.remedies import build_plan
from imbal.remedies.samplers import EpochSampler, progressive_probabilities
from imbal.remedies.tail_remedies import cdt_temperatures, label_aware_eps

COUNTS = [100, 40, 10]


def targets_for(counts: list[int]) -> torch.Tensor:
    return torch.cat([torch.full((n,), c, dtype=torch.long) for c, n in enumerate(counts)])


def plan(remedies, counts=COUNTS, epochs=4):
    t = targets_for(counts)
    return build_plan(remedies, images=torch.zeros(t.numel(), 1, 2, 2, dtype=torch.uint8),
                      targets=t, num_classes=len(counts), minority_classes=[2], epochs=epochs,
                      generator=torch.Generator().manual_seed(0))


def test_progressive_probabilities_by_hand():
    # Kang et al. eq. 3 at t = 1 of T = 4: 0.75 * N_j / 150 + 0.25 / 3
    p = progressive_probabilities(torch.tensor(COUNTS), 1, 4)
    hand = [0.75 * 100 / 150 + 0.25 / 3, 0.75 * 40 / 150 + 0.25 / 3, 0.75 * 10 / 150 + 0.25 / 3]
    assert p.tolist() == pytest.approx(hand, abs=1e-12)
    assert progressive_probabilities(torch.tensor(COUNTS), 0, 4).tolist() == pytest.approx(
        [100 / 150, 40 / 150, 10 / 150])


def test_progressive_sampler_draws_each_epochs_probabilities():
    p = plan([{"name": "oversample", "mode": "progressive", "epoch_size": 60_000}])
    s = p.sampler
    t = targets_for(COUNTS)
    for epoch in (0, 2, 3):
        idx = s.epoch_indices(epoch, torch.Generator().manual_seed(epoch))
        freq = torch.bincount(t[idx], minlength=3).double() / idx.numel()
        want = torch.tensor([(1 - epoch / 4) * n / 150 + (epoch / 4) / 3 for n in COUNTS])
        se = (want * (1 - want) / idx.numel()).sqrt()
        assert torch.all((freq - want).abs() <= 5 * se), (epoch, freq, want)
    assert "(1 - t/T) N_j/N + (t/T)/C" in p.describe[0]


def test_deferred_resampling_plain_then_balanced():
    p = plan([{"name": "oversample", "start_epoch": 2, "epoch_size": 30_000}])
    s, t = p.sampler, targets_for(COUNTS)
    assert isinstance(s, EpochSampler)
    before = s.epoch_indices(1, torch.Generator().manual_seed(0))
    assert sorted(before.tolist()) == list(range(150))  # one permutation: every image once
    after = s.epoch_indices(2, torch.Generator().manual_seed(0))
    freq = torch.bincount(t[after], minlength=3).double() / after.numel()
    assert torch.all((freq - 1 / 3).abs() < 0.02), freq
    assert "from epoch 2" in p.describe[0]
    # a fraction of the stage: round(0.5 * 4) = 2
    assert plan([{"name": "oversample", "start_epoch": 0.5}]).sampler.start == 2


@pytest.mark.parametrize(("start", "message"), [
    (4, "remedy 'oversample': start_epoch 4 starts re-sampling at epoch 4 but the stage has 4 "
        "epochs (0-based)"),
    (1.5, "remedy 'oversample': start_epoch must be an epoch number >= 0 (int) or a fraction in "
          "(0, 1), got 1.5"),
])
def test_deferred_resampling_refusals(start, message):
    with pytest.raises(UserError) as e:
        plan([{"name": "oversample", "start_epoch": start}])
    assert str(e.value) == message


def test_cdt_temperatures_and_loss_by_hand():
    a = cdt_temperatures(torch.tensor(COUNTS), 0.5)
    assert a.tolist() == pytest.approx([1.0, math.sqrt(100 / 40), math.sqrt(10.0)], rel=1e-6)
    p = plan([{"name": "cdt", "gamma": 0.5}])
    z = torch.tensor([[2.0, 1.0, 0.5], [0.1, 0.2, 3.0]])
    y = torch.tensor([2, 0])
    scaled = [[2.0, 1.0 / math.sqrt(2.5), 0.5 / math.sqrt(10)],
              [0.1, 0.2 / math.sqrt(2.5), 3.0 / math.sqrt(10)]]
    hand = 0.0
    for row, t in zip(scaled, y.tolist(), strict=True):
        hand += -(row[t] - math.log(sum(math.exp(v) for v in row))) / 2
    assert float(p.loss(z, y)) == pytest.approx(hand, rel=1e-6)
    assert p.eval_logit_offset is None  # plain logits at evaluation


def test_label_aware_eps_shapes_by_hand():
    n = torch.tensor([100, 55, 10])  # x = 1, 0.5, 0
    lin = label_aware_eps(n, 0.4, 0.1, "linear").tolist()
    assert lin == pytest.approx([0.4, 0.25, 0.1], abs=1e-7)
    con = label_aware_eps(n, 0.4, 0.1, "concave").tolist()
    assert con == pytest.approx([0.4, 0.1 + 0.3 * math.sin(math.pi / 4), 0.1], abs=1e-7)
    vex = label_aware_eps(n, 0.4, 0.1, "convex").tolist()
    assert vex == pytest.approx([0.4, 0.4 + 0.3 * math.sin(1.75 * math.pi), 0.1], abs=1e-7)


def test_label_aware_smoothing_loss_by_hand():
    p = plan([{"name": "label_aware_smoothing", "head": 0.4, "tail": 0.1, "shape": "linear"}],
             counts=[100, 55, 10])
    z = torch.tensor([[2.0, 1.0, 0.5], [0.1, 0.2, 3.0], [0.3, -1.0, 0.0]])
    y = torch.tensor([0, 1, 2])
    eps = [0.4, 0.25, 0.1]
    logp = F.log_softmax(z, 1).tolist()
    hand = sum((1 - eps[t]) * -logp[i][t] + eps[t] * -sum(logp[i]) / 3
               for i, t in enumerate(y.tolist())) / 3
    assert float(p.loss(z, y)) == pytest.approx(hand, rel=1e-6)
    # soft targets: one-hot rows give the hard-label value
    assert float(p.loss(z, F.one_hot(y, 3).float())) == pytest.approx(hand, rel=1e-6)


def test_label_aware_smoothing_refusals():
    with pytest.raises(UserError) as e:
        plan([{"name": "label_aware_smoothing", "head": 0.1, "tail": 0.3}])
    assert str(e.value) == ("remedy 'label_aware_smoothing': tail (0.3) must not exceed head "
                            "(0.1): the most frequent classes are smoothed most")
    with pytest.raises(UserError) as e:
        plan(["label_aware_smoothing", "label_smoothing"])
    assert "cannot be combined" in str(e.value)
    with pytest.raises(UserError) as e:
        plan(["cdt", "balanced_softmax"])
    assert "cannot be combined" in str(e.value)
