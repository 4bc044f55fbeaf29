"""build_plan: every remedy builds, composition rules, refusals, AMP-rounded gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from imbal.errors import UserError
from imbal.remedies import REMEDIES, Plan, build_plan

COUNTS = (40, 20, 10, 5)


def build(remedies, counts=COUNTS, minority=(2, 3), epochs=10, seed=0) -> Plan:
    t = torch.cat([torch.full((n,), c, dtype=torch.long) for c, n in enumerate(counts)])
    images = torch.randint(0, 256, (t.numel(), 3, 8, 8), dtype=torch.uint8)
    return build_plan(
        remedies,
        images=images,
        targets=t,
        num_classes=len(counts),
        minority_classes=list(minority),
        epochs=epochs,
        generator=torch.Generator().manual_seed(seed),
    )


def refused(remedies, *fragments: str, **kw) -> str:
    with pytest.raises(UserError) as e:
        build(remedies, **kw)
    msg = str(e.value)
    assert "\n" not in msg
    for f in fragments:
        assert f in msg, msg
    return msg


@pytest.mark.parametrize("name", REMEDIES.names())
def test_every_remedy_builds_with_defaults(name):
    for item in (name, {"name": name}):
        p = build([item])
        assert isinstance(p, Plan) and len(p.describe) == 1 and p.describe[0].startswith(name)
        assert p.head in ("linear", "normed")
        assert p.images.shape[0] == p.targets.shape[0] == sum(p.class_counts)
        assert torch.bincount(p.targets, minlength=4).tolist() == p.class_counts
        for hook in p.epoch_hooks:
            hook(0)


# Defaults of every remedy, plus settings whose numerics differ from the defaults: a fractional
# focal gamma (infinite derivative of (1 - p)^gamma at p_t = 1 without the clamp), smoothing
# with focal on an offset, mean-reduced batch weights.
GRADIENT_CASES = [[n] for n in REMEDIES.names()] + [
    [{"name": "focal", "gamma": 0.2}],
    [{"name": "focal", "gamma_schedule": [0.2, 0.5, 15]}, "label_smoothing", "balanced_softmax"],
    [
        {"name": "batch_inverse", "reduction": "mean"},
        "label_smoothing",
        {"name": "ldam", "drw_epoch": None},
    ],
    [{"name": "focal", "alpha": [0.25, 1, 1, 2]}, {"name": "logit_adjust", "tau": 2}],
]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("remedies", GRADIENT_CASES, ids=str)
def test_gradients_finite_under_amp_rounded_logits(remedies, dtype):
    p = build(remedies)
    g = torch.Generator().manual_seed(5)
    y = torch.tensor([0, 1, 2, 3, 0, 3, 3, 2])
    raw = torch.randn(8, 4, generator=g) * 4
    raw[0] = torch.tensor([6e4, -6e4, 0, 0])  # saturated: p_t rounds to exactly 1
    raw[1] = torch.tensor([6e4, -6e4, 0, 0])  # confidently wrong
    if p.head == "normed":
        raw = torch.tanh(raw)  # a cosine head's range
    for epoch in (0, 9):  # e.g. LDAM before and after DRW, both ends of a schedule
        for hook in p.epoch_hooks:
            hook(epoch)
        logits = raw.to(dtype).float().requires_grad_(True)
        loss = p.loss(logits, y)
        loss.backward()
        assert loss.dtype == torch.float32 and torch.isfinite(loss)
        assert torch.isfinite(logits.grad).all()
    half = p.loss(raw.to(dtype), y)  # uncast half logits are cast to float32 inside
    assert half.dtype == torch.float32 and torch.isfinite(half)


def test_plan_fields_and_order_of_describe():
    p = build(["balanced_softmax", {"name": "focal", "gamma": 1.0}, "oversample"])
    assert [d.split(":")[0] for d in p.describe] == ["balanced_softmax", "focal", "oversample"]
    assert p.head == "linear" and p.eval_logit_offset is None and p.epoch_hooks == []
    idx = p.sampler.epoch_indices(0, torch.Generator().manual_seed(0))
    assert idx.numel() == 75 and idx.dtype == torch.long
    plain = build(None)
    assert plain.sampler is None and plain.describe == [] and plain.class_counts == list(COUNTS)
    assert build(["ldam"]).head == "normed"


def test_s1_combination_label_smoothing_minority_with_batch_inverse():
    p = build([{"name": "label_smoothing", "classes": "minority"}, "batch_inverse"])
    y = torch.tensor([0, 0, 1, 2])
    logits = torch.randn(4, 4, generator=torch.Generator().manual_seed(2))
    logp = F.log_softmax(logits, 1)
    per = -logp.gather(1, y[:, None]).squeeze(1)
    # sample 3 (class 2) is smoothed: -(0.9) logp_t - 0.1/4 * sum of the others
    per[3] = -0.9 * logp[3, 2] - 0.025 * (logp[3].sum() - logp[3, 2])
    w = torch.tensor([0.6, 0.6, 1.2, 1.2])  # 4 * [1/2, 1, 1] / 2.5 per class present
    torch.testing.assert_close(p.loss(logits, y), (w * per).sum() / w.sum())


def test_loss_remedies_see_counts_after_copy():
    p = build([{"name": "copy", "k": 1}, "class_weights"])  # order in the list does not matter
    assert p.class_counts == [40, 20, 20, 10]
    w = 90 / torch.tensor([40.0, 20, 20, 10])
    torch.testing.assert_close(p.loss.class_weight, w)


def test_allowed_combinations_build():
    for combo in (
        ["focal", "balanced_softmax"],
        ["focal", "ldam"],
        ["label_smoothing", "ldam", "oversample"],
        [{"name": "ldam", "drw_epoch": None}, "class_weights"],
        ["focal", "class_weights", {"name": "copy", "transforms": ["hflip"]}],
        [{"name": "logit_adjust", "mode": "posthoc"}, "class_weights", "undersample"],
    ):
        assert len(build(combo).describe) == len(combo)


@pytest.mark.parametrize(
    "combo,why",
    [
        (["balanced_softmax", "logit_adjust"], "adjust the logits"),
        (["ldam", "balanced_softmax"], "adjust the logits"),
        (["balanced_softmax", {"name": "logit_adjust", "mode": "posthoc"}], "adjust the logits"),
        (["class_weights", "batch_inverse"], "weight the loss"),
        (["ldam", "class_weights"], "weight the loss"),
        ([{"name": "focal", "alpha": [1, 1, 1, 1]}, "batch_inverse"], "weight the loss"),
        (["oversample", "copy"], "resample"),
        (["undersample", "copy"], "resample"),
        (["label_smoothing", "label_smoothing"], "given twice"),
    ],
)
def test_incompatible_pairs_refused_naming_both(combo, why):
    names = [c if isinstance(c, str) else c["name"] for c in combo]
    refused(combo, *(f"'{n}'" for n in names), why)


def test_unknown_remedy_lists_valid_names():
    msg = refused(["focall"], "unknown remedy 'focall'", "did you mean 'focal'", "valid:")
    assert all(n in msg for n in REMEDIES.names())


@pytest.mark.parametrize(
    "item,fragments",
    [
        ({"name": "focal", "gama": 1}, ["remedy 'focal'", "unknown parameter 'gama'", "'gamma'"]),
        ({"name": "focal", "gamma": -1}, ["parameter 'gamma' must be a number >= 0", "-1"]),
        ({"name": "focal", "gamma": "big"}, ["parameter 'gamma'", "'big'"]),
        ({"name": "focal", "gamma": True}, ["parameter 'gamma'", "True"]),
        ({"name": "focal", "gamma": 1, "gamma_schedule": [1, 2]}, ["not both"]),
        ({"name": "focal", "gamma_schedule": []}, ["gamma_schedule"]),
        ({"name": "focal", "gamma_schedule": {"start": 0}}, ["gamma_schedule"]),
        ({"name": "focal", "alpha": [1, 2]}, ["alpha has 2 values", "4"]),
        ({"name": "label_smoothing", "eps": 1.5}, ["parameter 'eps' must be"]),
        ({"name": "label_smoothing", "classes": [0, 9]}, ["[9] out of range"]),
        ({"name": "label_smoothing", "classes": "few"}, ["parameter 'classes'", "'minority'"]),
        ({"name": "class_weights", "normalize": "max"}, ["'sum_to_C'", "'max'"]),
        ({"name": "class_weights", "beta": 1.0}, ["parameter 'beta'"]),
        ({"name": "logit_adjust", "mode": "both"}, ["'posthoc'", "'both'"]),
        ({"name": "ldam", "drw_epoch": 1.5}, ["fraction in (0, 1)"]),
        ({"name": "ldam", "drw_epoch": 160}, ["epoch 160", "10 epochs"]),
        ({"name": "oversample", "mode": "square"}, ["'sqrt'"]),
        ({"name": "oversample", "epoch_size": 0}, ["epoch_size"]),
        ({"name": "copy", "k": 0}, ["parameter 'k'"]),
        ({"name": "copy", "k": "all"}, ["parameter 'k'", "'balance'"]),
        ({"name": "copy", "k": 2.0}, ["parameter 'k' must be an integer"]),
        ({"name": "copy", "transforms": ["rotate"]}, ["'hflip'", "'rotate'"]),
        ({"name": "undersample", "target": "max"}, ["parameter 'target'", "'min'"]),
        ({"name": "balanced_softmax", "tau": 1}, ["unknown parameter 'tau'", "valid: none"]),
        ({"gamma": 2}, ["needs a 'name'"]),
        (3, ["must be a name or a mapping"]),
    ],
)
def test_bad_parameters_refused_in_one_line(item, fragments):
    refused([item], *fragments)


def test_bad_run_facts_refused():
    refused(["focal"], "minority classes [7]", minority=(7,))
    refused(["focal"], "epochs must be >= 1", epochs=0)
    assert build("focal").describe == build(["focal"]).describe  # a bare name: a one-item list
