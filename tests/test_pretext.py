"""Pretext stages (rotation, jigsaw) and the backbone hand-over: exact pieces, then end to end."""

import itertools
import json
import math

import pytest
import torch
import torch.nn.functional as F

from imbal.cli import main
from imbal.config import load_config
from imbal.data.batches import BatchAugment, Normalizer
from imbal.errors import UserError
from imbal.models import build_model
from imbal.pretext import (
    TASKS,
    PretextObjective,
    build_task,
    check_params,
    load_backbone,
    save_pretrained,
)
from imbal.pretext.jigsaw_ops import (
    crop_to_grid,
    decode,
    decode_hungarian,
    decode_table,
    from_tiles,
    permutation_bce,
    permutation_set,
    shuffle_tiles,
    sinkhorn,
    to_tiles,
    unshuffle_tiles,
)
from imbal.pretext.rotation import rotate, rotation_targets
from imbal.training.optim import build_optimizer, build_scheduler
from imbal.training.run import train
from imbal.training.runs import load_checkpoint
from imbal.training.stages import CONSTANT
from imbal.training.trainer import StageParts, Trainer

FAST = ["data.source=digits", "data.subset.per_class=40", "data.subset.test_per_class=10",
        "data.imbalance={kind: step, keep: 0.25}", "model.backbone=lenet",
        "model.params={activation: relu}", "train.optimizer={name: adam, lr: 0.003}",
        "train.batch_size=64", "train.epochs=1", "logging.progress=false",
        "logging.tensorboard=false"]


def lenet(num_classes=10, size=16):
    return build_model("lenet", in_channels=1, num_classes=num_classes, image_size=size,
                       activation="relu")


def task(name, params, feature_dim=64, num_classes=10, size=16):
    return build_task(name, params, feature_dim=feature_dim, in_channels=1, image_size=size,
                      num_classes=num_classes, generator=torch.Generator().manual_seed(0))


# ---------------------------------------------------------------- rotation
def test_rot90_of_a_known_image_is_counter_clockwise():
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).view(1, 1, 2, 2)
    k = torch.tensor([1])
    assert rotate(x, k).view(2, 2).tolist() == [[2.0, 4.0], [1.0, 3.0]]
    assert rotate(x, torch.tensor([2])).view(2, 2).tolist() == [[4.0, 3.0], [2.0, 1.0]]
    # per-image k in one batch equals rotating each image on its own
    batch = torch.arange(4 * 9, dtype=torch.float32).view(4, 1, 3, 3)
    ks = torch.tensor([3, 0, 2, 1])
    expect = torch.stack([torch.rot90(b, int(r), dims=(-2, -1)) for b, r in zip(batch, ks, strict=True)])
    assert torch.equal(rotate(batch, ks), expect)


def test_rotation_targets_hard_and_soft():
    sym = torch.zeros(10, dtype=torch.bool)
    sym[[6, 9]] = True
    k = torch.tensor([0, 1, 3, 2, 1])
    labels = torch.tensor([6, 9, 9, 3, 0])
    got = rotation_targets(k, labels, sym)
    assert torch.equal(got, torch.tensor([[0.5, 0.0, 0.5, 0.0],   # 6, k 0 -> 0 and 2
                                          [0.0, 0.5, 0.0, 0.5],   # 9, k 1 -> 1 and 3
                                          [0.0, 0.5, 0.0, 0.5],   # 9, k 3 -> 3 and 1
                                          [0.0, 0.0, 1.0, 0.0],   # 3 is not symmetric
                                          [0.0, 1.0, 0.0, 0.0]]))
    assert torch.equal(rotation_targets(k, None, sym), F.one_hot(k, 4).float())
    # the task builds the same targets; evaluation takes all four orientations of each image
    t = task("rotation", {"symmetric_classes": [9, 6]})
    x = torch.randn(2, 1, 16, 16)
    inputs, (soft, ks) = t.make_batch(x, torch.tensor([6, 1]), torch.Generator(), train=False)
    assert ks.tolist() == [0, 0, 1, 1, 2, 2, 3, 3] and inputs.shape == (8, 1, 16, 16)
    assert torch.equal(inputs[4], torch.rot90(x[0], 2, dims=(-2, -1)))
    assert soft[2].tolist() == [0.0, 0.5, 0.0, 0.5] and soft[3].tolist() == [0.0, 1.0, 0.0, 0.0]
    # soft cross-entropy with a soft target: -(0.5 log p_k + 0.5 log p_k+2)
    logp = torch.log(torch.tensor([[0.4, 0.1, 0.4, 0.1]]))
    loss = t.loss(logp, (torch.tensor([[0.5, 0.0, 0.5, 0.0]]), torch.tensor([0])))
    assert loss.item() == pytest.approx(-math.log(0.4))


# ---------------------------------------------------------------- jigsaw pieces
def test_sinkhorn_rows_and_columns_sum_to_one():
    scores = torch.randn(16, 4, 4, generator=torch.Generator().manual_seed(1))
    p = sinkhorn(scores, 20).exp()
    # columns are normalised last (exact to float32 rounding); rows converge geometrically:
    # within 1e-5 after 20 iterations for unit-scale scores, 1e-3 after the default 10
    assert torch.allclose(p.sum(1), torch.ones(16, 4), atol=1e-6)
    assert torch.allclose(p.sum(2), torch.ones(16, 4), atol=1e-5)
    assert torch.allclose(sinkhorn(scores, 10).exp().sum(2), torch.ones(16, 4), atol=1e-3)
    assert (p >= 0).all()
    # peaked scores converge more slowly: 100 iterations for 1e-3 at scale 3
    assert torch.allclose(sinkhorn(3 * scores, 100).exp().sum(2), torch.ones(16, 4), atol=1e-3)


def test_tiles_shuffled_and_unshuffled_give_the_image_back():
    x = torch.arange(2 * 3 * 6 * 6, dtype=torch.float32).view(2, 3, 6, 6)
    tiles = to_tiles(x, 2)
    assert tiles.shape == (2, 4, 3, 3, 3)
    assert torch.equal(tiles[0, 1], x[0, :, :3, 3:])  # row-major: tile 1 is the top-right
    assert torch.equal(tiles[1, 2], x[1, :, 3:, :3])
    perm = torch.tensor([[2, 0, 3, 1], [3, 2, 1, 0]])
    shuffled = shuffle_tiles(tiles, perm)
    assert torch.equal(shuffled[0, 0], tiles[0, 2]) and not torch.equal(from_tiles(shuffled, 2), x)
    assert torch.equal(from_tiles(unshuffle_tiles(shuffled, perm), 2), x)
    assert crop_to_grid(torch.zeros(1, 1, 31, 32), 3).shape[-2:] == (30, 30)


def test_decoded_permutations_are_valid_when_rowwise_argmax_repeats():
    # both rows prefer tile 0: argmax gives [0, 0]; the best assignment is [1, 0] (0.4 * 0.9)
    p = torch.tensor([[[0.6, 0.4], [0.9, 0.1]]])
    assert p.argmax(2).tolist() == [[0, 0]]
    table = torch.tensor(list(itertools.permutations(range(2))))
    assert decode_table(p.log(), table).tolist() == [[1, 0]]
    assert decode_hungarian(p.log()).tolist() == [[1, 0]]
    scores = torch.randn(64, 4, 4, generator=torch.Generator().manual_seed(2))
    scores[:, :, 0] += 5.0  # every row's argmax is tile 0
    log_p = scores.log_softmax(2)  # row-normalised only: Sinkhorn would undo the bias
    assert (log_p.argmax(2) == 0).all()
    table4 = torch.tensor(list(itertools.permutations(range(4))))
    by_table, by_hungarian = decode(log_p, table4), decode(log_p, None)
    assert torch.equal(by_table, by_hungarian)
    assert (by_table.sort(1).values == torch.arange(4)).all()  # each tile exactly once


def test_permutation_sets_are_seeded_distinct_and_spread():
    g = lambda: torch.Generator().manual_seed(5)  # noqa: E731
    assert permutation_set(4, None, g()).shape == (24, 4)
    assert permutation_set(9, None, g()) is None  # 9! is sampled, not tabled
    sub = permutation_set(4, 10, g())
    assert torch.equal(sub, permutation_set(4, 10, g())) and torch.unique(sub, dim=0).shape[0] == 10
    far = permutation_set(4, 4, g(), max_hamming=True)
    dist = [(a != b).sum().item() for a, b in itertools.combinations(far, 2)]
    assert min(dist) == 4  # greedy finds 4 mutually disjoint orders (a Latin square)
    big = permutation_set(16, 30, g())
    assert big.shape == (30, 16) and (big.sort(1).values == torch.arange(16)).all()


def test_permutation_bce_matches_the_definition():
    p = torch.tensor([[[0.7, 0.3], [0.2, 0.8]]])
    perm = torch.tensor([[0, 1]])
    expect = -(math.log(0.7) + math.log(0.7) + math.log(0.8) + math.log(0.8)) / 4
    assert permutation_bce(p.log(), perm).item() == pytest.approx(expect, rel=1e-5)


# ---------------------------------------------------------------- the loss falls
def _synthetic(n=96, size=16, seed=0):
    """A bright corner block plus noise: orientation and tile position are both visible."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 60, (n, 1, size, size), generator=g, dtype=torch.uint8)
    x[:, :, :5, :5] = 250
    x[:, :, -3:, size // 2:] = 160
    return x, torch.randint(0, 10, (n,), generator=g)


def pretext_trainer(model, objective, images, labels, batch_size=32, unlabelled=None,
                    unlabelled_batch_size=None):
    """The run's Trainer with a pretext stage plugged in, as stage_kinds builds it."""
    # x/255 - 0.5, the scale these thresholds were set with
    tr = Trainer(model, normalizer=Normalizer([0.5], [1.0], torch.device("cpu")),
                 device=torch.device("cpu"), generator=torch.Generator().manual_seed(5))
    opt = build_optimizer([*model.features.parameters(), *objective.task.parameters()],
                          {"name": "adam", "lr": 3e-3})
    tr.begin_stage(StageParts(
        name="pre", objective=objective, images=images, targets=labels, sampler=None,
        optimizer=opt, scheduler=build_scheduler(opt, CONSTANT, 10), batch_size=batch_size,
        generator=torch.Generator().manual_seed(0), augment=BatchAugment(),
        unlabelled=unlabelled, unlabelled_batch_size=unlabelled_batch_size))
    return tr


@pytest.mark.parametrize("name,params,epochs", [("rotation", {"symmetric_classes": [6]}, 6),
                                                ("jigsaw", {"hidden": 32}, 6)])
def test_pretext_loss_falls_on_a_small_synthetic_set(name, params, epochs):
    """A pretext task trains through the Trainer's one step (the supervised step)."""
    torch.manual_seed(0)
    model, t = lenet(), task(name, params)
    images, labels = _synthetic()
    tr = pretext_trainer(model, PretextObjective(model.features, t), images, labels)
    stats = [tr.train_epoch(e) for e in range(epochs)]
    losses = [s["loss"] for s in stats]
    assert losses[-1] < 0.7 * losses[0], losses
    assert stats[-1]["acc"] > stats[0]["acc"] and stats[-1]["images"] == 96
    ev = tr.objective.evaluate(tr.forward, tr.prepare, tr.autocast, images, labels, 64,
                               torch.Generator().manual_seed(1))
    key = "acc" if name == "rotation" else "permutation_acc"
    assert ev[key] > 50.0, ev  # chance: 25% for rotation, 1/24 for the jigsaw


def test_the_unlabelled_stream_reaches_the_objective_once_an_epoch():
    """A second stream (the removed images) goes to the objective in the same batch object:
    each unlabelled image once an epoch, spread over the steps; or a fixed number per step."""
    from imbal.data.sources import Split
    from imbal.training.objective import Batch

    model, t = lenet(), task("rotation", {})
    images, labels = _synthetic(96)
    extra, extra_labels = _synthetic(40, seed=1)
    extra_labels = extra_labels + 100  # tell them apart (labels are only read, not trained on)
    seen = []

    class Spy(PretextObjective):
        def inputs(self, batch: Batch, generator):
            seen.append((batch.x.shape[0], batch.u.shape[0], batch.u_y.clone()))
            return super().inputs(Batch(batch.x, batch.y, batch.u, batch.u_y - 100), generator)

    tr = pretext_trainer(model, Spy(model.features, t), images, labels,
                         unlabelled=Split(extra, extra_labels))
    stats = tr.train_epoch(0)
    assert [s[0] for s in seen] == [32, 32, 32] and [s[1] for s in seen] == [14, 14, 12]
    assert sorted(torch.cat([s[2] for s in seen]).tolist()) == sorted(extra_labels.tolist())
    assert stats["images"] == 96 + 40
    seen.clear()
    tr = pretext_trainer(model, Spy(model.features, t), images, labels,
                         unlabelled=Split(extra, extra_labels), unlabelled_batch_size=20)
    tr.train_epoch(0)
    drawn = torch.cat([s[2] for s in seen])
    assert [s[1] for s in seen] == [20, 20, 20]  # 60 draws: one permutation, then 20 of another
    assert sorted(drawn[:40].tolist()) == sorted(extra_labels.tolist())


# ---------------------------------------------------------------- hand-over
def test_load_backbone_copies_every_backbone_tensor_and_leaves_the_head(tmp_path):
    torch.manual_seed(0)
    src, dst = lenet(num_classes=4), lenet()
    save_pretrained(tmp_path / "p.pt", src.features, task="rotation", epoch=3)
    head_before = {k: v.clone() for k, v in dst.head.state_dict().items()}
    lines = load_backbone(dst, tmp_path / "p.pt")
    for k, v in src.features.state_dict().items():
        assert torch.equal(dst.features.state_dict()[k], v), k
    for k, v in dst.head.state_dict().items():
        assert torch.equal(v, head_before[k])
    n = len(src.features.state_dict())
    assert len(lines) == 1 and f"{n} backbone tensors transferred" in lines[0]
    assert "rotation pretext epoch 3" in lines[0] and "head is new" in lines[0]
    assert "convs.0" in lines[0] and "fc.0" in lines[0]


def test_load_backbone_refuses_missing_mismatched_and_foreign_tensors(tmp_path):
    model = lenet()
    state = {"features." + k: v for k, v in model.features.state_dict().items()}
    cases = {
        "missing": ({k: v for k, v in state.items() if k != "features.fc.0.bias"},
                    "backbone tensors missing from missing.pt: fc.0.bias"),
        "shape": ({**state, "features.fc.0.weight": torch.zeros(64, 7)},
                  "backbone shapes differ (checkpoint vs model): fc.0.weight (64, 7) vs"),
        "foreign": ({**state, "features.extra.weight": torch.zeros(1)},
                    "checkpoint has backbone tensors this model lacks"),
    }
    for name, (sd, message) in cases.items():
        torch.save({"format": "imbal", "model": sd, "epoch": 1}, tmp_path / f"{name}.pt")
        with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
            load_backbone(model, tmp_path / f"{name}.pt")
    with pytest.raises(UserError, match="no checkpoints/pretrained.pt or checkpoints/best.pt"):
        load_backbone(model, tmp_path)
    with pytest.raises(UserError, match="no such run directory or checkpoint file"):
        load_backbone(model, tmp_path / "nope")


# ---------------------------------------------------------------- refusals
@pytest.mark.parametrize("name,params,message", [
    ("rotation", {"symetric_classes": [6]},
     "unknown key 'pretrain.params.symetric_classes' (did you mean 'symmetric_classes'?)"),
    ("rotation", {"symmetric_classes": [6, 10]}, "symmetric_classes [10] out of range"),
    ("rotation", [6, 9], "must be a mapping"),
    ("jigsaw", {"grid": 1}, "bad value for 'pretrain.params.grid'"),
    ("jigsaw", {"gird": 3}, "(did you mean 'grid'?)"),
    ("jigsaw", {"permutations": 30}, "permutations 30 exceeds the 24 orders of a 2x2 grid"),
    ("jigsaw", {"max_hamming": True}, "max_hamming needs permutations"),
    ("jigsaw", {"sinkhorn_iters": 0}, "bad value for 'pretrain.params.sinkhorn_iters'"),
    ("jigsaw", {"grid": 4}, "too small for a 4x4 jigsaw"),
    ("rotaton", {}, "unknown pretext task 'rotaton' (did you mean 'rotation'?); valid: jigsaw, rotation"),
])
def test_bad_task_names_and_params_are_refused(name, params, message):
    with pytest.raises(UserError) as err:
        task(name, params, size=6)
    assert message in str(err.value) and "\n" not in str(err.value)
    assert TASKS.names() == ["jigsaw", "rotation"]


def test_check_params_refuses_without_data():
    check_params("jigsaw", {"grid": 3, "permutations": 100, "max_hamming": True})
    check_params("rotation", None)
    with pytest.raises(UserError, match="unknown key 'pretrain.params.hiden'"):
        check_params("jigsaw", {"hiden": 3})
    with pytest.raises(UserError, match="unknown pretext task 'rot'"):
        check_params("rot", {})


@pytest.mark.parametrize("sets,message", [
    (["pretrain={task: jigsw}"], "unknown pretext task 'jigsw' (did you mean 'jigsaw'?)"),
    (["pretrain={task: rotation, params: {symmetric: [6]}}"], "unknown key 'pretrain.params.symmetric'"),
    (["pretrain={task: rotation}", "model.init_from=/tmp"], "pretrain and model.init_from are both set"),
])
def test_cli_refuses_bad_pretrain_in_one_line(tmp_path, capsys, sets, message):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("name: refused\n")
    args = [a for s in [*FAST, *sets] for a in ("--set", s)]
    code = main(["train", str(cfg), "--out", str(tmp_path / "x"), "--quiet", *args])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1, err


# ---------------------------------------------------------------- end to end
def _rows(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_pretrain_run_then_a_run_started_from_it(tmp_path):
    first = tmp_path / "pre"
    cfg = load_config(None, [*FAST, "pretrain={task: rotation, epochs: 2, use_removed: true, "
                                     "params: {symmetric_classes: [6, 9]}}"])
    train(cfg, out_dir=str(first), quiet=True)
    rows = _rows(first)
    assert [(r["stage"], r["epoch"]) for r in rows] == [("pretrain", 1), ("pretrain", 2),
                                                        ("train", 1)]
    pre = rows[0]["pretrain"]
    assert rows[0]["eval_split"] == "val" and {"train_loss", "val_acc", "val_acc_sym"} <= set(pre)
    counts = json.loads((first / "counts.json").read_text())
    assert pre["images"] == sum(counts["train"]) + sum(counts["removed"])  # removed ones too
    ckpt = load_checkpoint(first / "checkpoints" / "pretrained.pt")
    assert ckpt["task"] == "rotation" and ckpt["epoch"] == 2 and ckpt["backbone"] == "lenet"
    assert all(k.startswith("features.") for k in ckpt["model"])

    # the second run starts from the first; a frozen first epoch keeps the backbone as handed over
    second = tmp_path / "from"
    cfg2 = load_config(None, [*FAST, f"model.init_from={first}", "model.freeze_backbone_epochs=1"])
    res = train(cfg2, out_dir=str(second), quiet=True)
    assert res["complete"] and all(r["stage"] == "train" for r in _rows(second))
    best = load_checkpoint(second / "checkpoints" / "best.pt")["model"]
    for k, v in ckpt["model"].items():
        assert torch.equal(best[k], v), k
    head = load_checkpoint(first / "checkpoints" / "best.pt")["model"]["head.weight"]
    assert not torch.equal(best["head.weight"], head)


def test_pretext_stage_changes_only_the_backbone(tmp_path):
    """The supervised stage starts as it would without pretraining, except for the backbone:
    same global RNG state, same trainer generator, same head; the backbone has moved."""
    from imbal.training.loop import _epoch
    from imbal.training.runs import EpochLog
    from imbal.training.setup import build_setup
    from imbal.training.stage_kinds import end_stage, enter_stage

    cfg = load_config(None, [*FAST, "data.subset.per_class=20", "pretrain={task: jigsaw, "
                                     "epochs: 1, params: {hidden: 8}}"])
    setup = build_setup(cfg, quiet=True)
    model = setup.trainer.model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng, gen = torch.get_rng_state(), setup.trainer.generator.get_state()
    enter_stage(setup, 0, fresh=True)
    _epoch(setup, 0, tmp_path / "checkpoints", EpochLog(tmp_path, False), quiet=True)
    assert not torch.equal(torch.get_rng_state(), rng)  # the stage used the global RNG ...
    end_stage(setup, 0, tmp_path)
    assert torch.equal(torch.get_rng_state(), rng)  # ... and gave it back
    assert torch.equal(setup.trainer.generator.get_state(), gen)
    after = model.state_dict()
    assert all(torch.equal(after[k], before[k]) for k in before if k.startswith("head."))
    assert not torch.equal(after["features.convs.0.weight"], before["features.convs.0.weight"])
    assert all(p.requires_grad for p in model.parameters())
    assert load_checkpoint(tmp_path / "checkpoints" / "pretrained.pt")["task"] == "jigsaw"


def test_jigsaw_run_writes_its_metrics_and_backbone(tmp_path):
    run_dir = tmp_path / "jig"
    cfg = load_config(None, [*FAST, "data.val_fraction=0", "pretrain={task: jigsaw, epochs: 1, "
                                     "params: {hidden: 16, permutations: 6}}"])
    train(cfg, out_dir=str(run_dir), quiet=True)
    row = _rows(run_dir)[0]
    assert row["stage"] == "pretrain" and row["eval_split"] == "test"  # no validation split
    assert {"test_position_acc", "test_permutation_acc", "test_confidence"} <= set(row["pretrain"])
    assert 0.0 <= row["pretrain"]["test_confidence"] <= 100.0
    assert load_checkpoint(run_dir / "checkpoints" / "pretrained.pt")["task"] == "jigsaw"
    # a lenet backbone does not fit a small_cnn classifier: refused, naming the difference
    other = build_model("small_cnn", in_channels=1, num_classes=10, image_size=8)
    with pytest.raises(UserError, match=r"\(a lenet backbone\): backbone tensors missing"):
        load_backbone(other, run_dir)
