"""ComposedLoss with soft targets (N×C rows from mixup / cutmix): one-hot rows give the
hard-target loss, soft rows the q-weighted mixture of hard-target losses, the refusals, and a
tiny model that learns through a batch transform."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from imbal.errors import UserError
from imbal.remedies import REMEDIES, ComposedLoss, Plan, build_plan, parse_remedies
from imbal.remedies.batch import build_batch_transforms, soft_target_transforms
from imbal.remedies.plan import check_soft_targets

COUNTS = (40, 20, 10, 5)
C = len(COUNTS)
HARD_ONLY = {"ldam", "batch_inverse"}


def build(remedies, counts=COUNTS, epochs=10) -> Plan:
    t = torch.cat([torch.full((n,), c, dtype=torch.long) for c, n in enumerate(counts)])
    return build_plan(remedies, images=torch.zeros(t.numel(), 1, 4, 4, dtype=torch.uint8),
                      targets=t, num_classes=len(counts), minority_classes=[2, 3],
                      epochs=epochs, generator=torch.Generator().manual_seed(0))


SOFT_CASES = [[n] for n in REMEDIES.names() if n not in HARD_ONLY] + [
    [{"name": "focal", "gamma": 0.5}],
    [{"name": "focal", "gamma_schedule": [0.2, 0.5, 15]}, "label_smoothing", "balanced_softmax"],
    [{"name": "focal", "alpha": [0.25, 1, 1, 2]}, {"name": "logit_adjust", "tau": 2}],
    [{"name": "class_weights", "reduction": "mean"}, {"name": "label_smoothing",
                                                       "classes": "minority"}, "focal"],
    [{"name": "class_weights", "beta": 0.99}, "balanced_softmax"],
    [{"name": "class_weights", "reduction": "mean"}, "logit_adjust"],
    [{"name": "label_smoothing", "eps": 0.3, "classes": [1]}, "class_weights"],
    [{"name": "logit_adjust", "mode": "posthoc"}, "focal", "oversample"],
]


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(12, C, generator=g) * 3
    y = torch.tensor([0, 1, 2, 3, 0, 0, 1, 3, 3, 2, 0, 1])
    soft = torch.softmax(torch.randn(12, C, generator=g) * 2, 1)  # any rows of probabilities
    return logits, y, soft


def at_epoch(p: Plan, epoch: int) -> ComposedLoss:
    for hook in p.epoch_hooks:
        hook(epoch)
    return p.loss


def value_and_grad(loss, logits, targets):
    z = logits.clone().requires_grad_(True)
    out = loss(z, targets)
    out.backward()
    return out, z.grad


@pytest.mark.parametrize("remedies", SOFT_CASES, ids=str)
def test_one_hot_float_targets_give_the_hard_target_loss(batch, remedies):
    logits, y, _ = batch
    p = build(remedies)
    for epoch in (0, 9):
        loss = at_epoch(p, epoch)
        hard, hard_grad = value_and_grad(loss, logits, y)
        soft, soft_grad = value_and_grad(loss, logits, F.one_hot(y, C).float())
        torch.testing.assert_close(soft, hard, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(soft_grad, hard_grad, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("remedies", SOFT_CASES, ids=str)
def test_soft_loss_is_the_mixture_of_hard_losses(batch, remedies):
    """q = lam e_a + (1 - lam) e_b: the loss is mixup's lam L(y_a) + (1 - lam) L(y_b) per
    sample, the class weights mixed the same way in the weighted mean."""
    logits, ya, _ = batch
    yb = ya.roll(5)
    lam = torch.linspace(0.05, 1.0, ya.numel())
    q = lam[:, None] * F.one_hot(ya, C) + (1 - lam[:, None]) * F.one_hot(yb, C)
    loss = at_epoch(build(remedies), 9)
    la, lb = loss.per_sample(logits, ya), loss.per_sample(logits, yb)
    w = loss.class_weights(ya)
    if w is None:
        expect = (lam * la + (1 - lam) * lb).mean()
    else:
        total = (lam * w[ya] * la + (1 - lam) * w[yb] * lb).sum()
        mass = (lam * w[ya] + (1 - lam) * w[yb]).sum()
        expect = total / mass if loss.reduction == "weighted_mean" else total / ya.numel()
    torch.testing.assert_close(loss(logits, q), expect)


def test_soft_cross_entropy_and_offsets_by_hand(batch):
    logits, _, q = batch
    by_hand = -(q * F.log_softmax(logits, 1)).sum(1).mean()
    torch.testing.assert_close(build(None).loss(logits, q), by_hand)
    log_n = torch.log(torch.tensor(COUNTS, dtype=torch.float32))
    by_hand = -(q * F.log_softmax(logits + log_n, 1)).sum(1).mean()
    torch.testing.assert_close(build(["balanced_softmax"]).loss(logits, q), by_hand)


def test_soft_label_smoothing_is_ce_against_the_mixed_smoothed_rows(batch):
    logits, _, q = batch
    eps, smoothed = 0.2, torch.tensor([0.0, 0.0, 1.0, 1.0])  # classes 2, 3
    p = build([{"name": "label_smoothing", "eps": eps, "classes": "minority"}])
    # q'_k = q_k - eps q_k [k in S] + eps / K (sum_{t in S} q_t - q_k [k in S])
    mass = (q * smoothed).sum(1, keepdim=True)
    q2 = q - eps * q * smoothed + eps / C * (mass - q * smoothed)
    torch.testing.assert_close(p.loss(logits, q), -(q2 * F.log_softmax(logits, 1)).sum(1).mean())
    # the same as smoothing each one-hot row e_t first (S1), then mixing them with weights q_t
    rows = torch.stack([(1 - eps * smoothed[t]) * F.one_hot(torch.tensor(t), C)
                        + eps / C * smoothed[t] * (1 - F.one_hot(torch.tensor(t), C))
                        for t in range(C)])
    torch.testing.assert_close(q @ rows, q2)


def test_soft_focal_is_the_per_class_form(batch):
    logits, _, q = batch
    logp = F.log_softmax(logits, 1)
    for gamma in (0.5, 2.0):
        # Keras CategoricalFocalCrossentropy: -sum_k q_k (1 - p_k)^gamma log p_k
        by_hand = -(q * (1 - logp.exp()) ** gamma * logp).sum(1).mean()
        loss = build([{"name": "focal", "gamma": gamma}]).loss(logits, q)
        torch.testing.assert_close(loss, by_hand)


def test_soft_class_weights_by_hand(batch):
    logits, _, q = batch
    w = sum(COUNTS) / torch.tensor(COUNTS, dtype=torch.float32)  # N / N_j
    logp = F.log_softmax(logits, 1)
    per = -(q * w * logp).sum(1)
    torch.testing.assert_close(build(["class_weights"]).loss(logits, q), per.sum() / (q @ w).sum())
    mean = build([{"name": "class_weights", "reduction": "mean"}]).loss(logits, q)
    torch.testing.assert_close(mean, per.mean())
    alpha = torch.tensor([0.25, 0.5, 1.0, 2.0])
    focal = build([{"name": "focal", "gamma": 1.0, "alpha": alpha.tolist()}]).loss(logits, q)
    per = -(q * alpha * (1 - logp.exp()) * logp).sum(1)
    torch.testing.assert_close(focal, per.sum() / (q @ alpha).sum())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("remedies", SOFT_CASES, ids=str)
def test_soft_gradients_finite_under_amp_rounded_logits(remedies, dtype):
    p = build(remedies)
    g = torch.Generator().manual_seed(5)
    raw = torch.randn(8, C, generator=g) * 4
    raw[0] = torch.tensor([6e4, -6e4, 0, 0])  # saturated: p rounds to exactly 1 and 0
    raw[1] = torch.tensor([-6e4, 6e4, 0, 0])
    q = torch.softmax(torch.randn(8, C, generator=g), 1)
    q[0] = torch.tensor([0.7, 0.3, 0, 0])  # mass on the saturated classes, both ways
    q[1] = torch.tensor([0.6, 0.4, 0, 0])
    for epoch in (0, 9):
        loss = at_epoch(p, epoch)
        logits = raw.to(dtype).float().requires_grad_(True)
        out = loss(logits, q)
        out.backward()
        assert out.dtype == torch.float32 and torch.isfinite(out)
        assert torch.isfinite(logits.grad).all()
        half = loss(raw.to(dtype), q.to(dtype))
        assert half.dtype == torch.float32 and torch.isfinite(half)


# ---- refusals --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", REMEDIES.names())
def test_exactly_ldam_and_batch_inverse_refuse_soft_targets(name):
    remedies = parse_remedies([name])
    check_soft_targets(remedies, soft_target_transforms([]))  # no batch transform: no check
    if name not in HARD_ONLY:
        check_soft_targets(remedies, soft_target_transforms(["mixup", "cutmix"]))
        return
    with pytest.raises(UserError) as e:
        check_soft_targets(remedies, soft_target_transforms([{"name": "cutmix", "alpha": 0.5}]))
    assert str(e.value) == (f"remedy '{name}' needs one class per image, but batch transform "
                            "'cutmix' gives soft targets; drop one of them")


def test_refusal_names_the_remedy_and_the_transform():
    with pytest.raises(UserError) as e:
        check_soft_targets(parse_remedies(["focal", {"name": "ldam", "drw_epoch": None}]),
                           soft_target_transforms(["mixup"]))
    assert str(e.value) == ("remedy 'ldam' needs one class per image, but batch transform "
                            "'mixup' gives soft targets; drop one of them")


def test_hard_only_losses_raise_on_soft_targets(batch):
    logits, y, q = batch
    for remedies in (["ldam"], ["batch_inverse"]):
        loss = build(remedies).loss
        assert torch.isfinite(loss(torch.tanh(logits), y))
        with pytest.raises(ValueError, match="need int64 class targets"):
            loss(torch.tanh(logits), q)
    with pytest.raises(ValueError, match="do not match logits"):
        build(None).loss(logits, q[:, :3])


# ---- end to end ------------------------------------------------------------------------------


def quadrant_data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """1×8×8 images: noise, plus a bright quadrant that is the class (4 classes)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 4, (n,), generator=g)
    x = torch.randn(n, 1, 8, 8, generator=g) * 0.5
    for c in range(4):
        r, s = divmod(c, 2)
        x[y == c, :, 4 * r:4 * r + 4, 4 * s:4 * s + 4] += 1.5
    return x, y


@pytest.mark.parametrize("items,remedies", [
    ([{"name": "mixup", "alpha": 1.0}], ["label_smoothing", "balanced_softmax"]),
    ([{"name": "cutmix", "alpha": 1.0}], [{"name": "focal", "gamma": 1.0}, "class_weights"]),
    (["cutmix", {"name": "mixup", "alpha": 0.2, "p": 0.5}], None),
], ids=["mixup", "cutmix", "both"])
def test_tiny_model_learns_through_a_batch_transform(items, remedies):
    x, y = quadrant_data(512, 0)
    counts = torch.bincount(y, minlength=4).tolist()
    transform = build_batch_transforms(items, num_classes=4, class_counts=counts)
    check_soft_targets(parse_remedies(remedies), soft_target_transforms(items))
    loss_fn = build(remedies, counts=tuple(counts)).loss
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 4))
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    fixed_x, fixed_q = transform(x[:256], y[:256], torch.Generator().manual_seed(99))
    with torch.no_grad():
        before = loss_fn(model(fixed_x), fixed_q)
    g = torch.Generator().manual_seed(1)
    for step in range(40):
        idx = torch.arange(step * 64, step * 64 + 64) % 512
        xb, q = transform(x[idx], y[idx], g)
        assert q.shape == (64, 4) and q.dtype == torch.float32
        loss = loss_fn(model(xb), q)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = loss_fn(model(fixed_x), fixed_q)  # the same mixed batch, before and after
    assert after < 0.5 * before, (before, after)
    test_x, test_y = quadrant_data(512, 1)
    accuracy = (model(test_x).argmax(1) == test_y).float().mean().item()
    assert accuracy > 0.9
