"""A run as a list of stages: cRT and DRS, the legacy configs as stages, resume inside a stage,
metrics and TensorBoard per stage, and the refusals."""

import json

import pytest
import torch
from synth import poison_training_batch
from torch import nn

from imbal.cli import main
from imbal.config import load_config
from imbal.training import loop
from imbal.training.run import train
from imbal.training.runs import EpochLog, load_checkpoint
from imbal.training.stage_kinds import HEAD_SEED_OFFSET
from imbal.training.trainer import Interrupted, Trainer

FAST = ["data.source=digits", "model.params={activation: relu}", "train.batch_size=64",
        "train.optimizer={name: adam, lr: 0.003}", "logging.progress=false",
        "logging.tensorboard=false", "data.imbalance={kind: step, keep: 0.3}",
        "data.subset.per_class=80", "data.subset.test_per_class=30"]
BALANCED = "[{name: oversample, mode: balanced}]"


def rows(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def spy_batches(monkeypatch, firsts: dict | None = None) -> dict[int, list[torch.Tensor]]:
    """The class ids each training step of each stage saw (the sampler reached the step);
    with `firsts`, also the model's state before each stage's first step."""
    seen: dict[int, list[torch.Tensor]] = {}
    real = Trainer._step

    def step(self, idx, s):
        stage = self.cursor.stage
        if firsts is not None and stage not in firsts:
            firsts[stage] = snapshot(self.model)
        seen.setdefault(stage, []).append(self.targets[idx].clone())
        real(self, idx, s)

    monkeypatch.setattr(Trainer, "_step", step)
    return seen


def class_counts(batches: list[torch.Tensor]) -> list[int]:
    return torch.bincount(torch.cat(batches), minlength=10).tolist()


def assert_balanced(batches: list[torch.Tensor]) -> None:
    share = torch.tensor(class_counts(batches), dtype=torch.float) / torch.cat(batches).numel()
    assert share.min() > 0.07 and share.max() < 0.13, share  # 10% each, within 3 points


# ---------------------------------------------------------------- cRT
def test_crt_freezes_the_backbone_and_retrains_a_new_head_on_balanced_batches(tmp_path, monkeypatch):
    """Stage 2 of cRT: backbone parameters and BatchNorm buffers never move, the head is
    re-initialised (exactly the documented seed's draw) and then trains, and the batches that
    reach the step are class-balanced; stage 1's are the data set's own frequencies."""
    firsts: dict[int, dict] = {}
    seen = spy_batches(monkeypatch, firsts)
    ends: dict[int, dict] = {}
    real_end = loop.end_stage

    def end(setup, index, run_dir):
        ends[index] = snapshot(setup.trainer.model)
        real_end(setup, index, run_dir)

    monkeypatch.setattr(loop, "end_stage", end)
    cfg = load_config(None, [*FAST, "model.backbone=small_cnn", "model.params={}",
                             "stages=[{name: represent, epochs: 3}, {name: crt, epochs: 2, "
                             f"trains: head, reinit_head: true, remedy: {BALANCED}}}]"])
    res = train(cfg, out_dir=str(tmp_path / "crt"), quiet=True)
    before, start, after = ends[0], firsts[1], ends[1]
    backbone = [k for k in before if k.startswith("features.")]
    assert any("running_mean" in k for k in backbone)  # small_cnn has BatchNorm
    for k in backbone:  # parameters and BatchNorm buffers (running stats, batch count)
        assert torch.equal(after[k], before[k]) and torch.equal(start[k], before[k]), k
    torch.manual_seed(cfg["seeds"]["train"] + HEAD_SEED_OFFSET + 1)
    fresh = nn.Linear(64, 10)
    assert torch.equal(start["head.weight"], fresh.weight.detach())
    assert torch.equal(start["head.bias"], fresh.bias.detach())
    assert not torch.equal(start["head.weight"], before["head.weight"])
    assert not torch.equal(after["head.weight"], start["head.weight"])  # the head trained
    counts = res["train_counts"]
    assert counts[0] * 2 < counts[9]  # imbalanced data ...
    assert class_counts(seen[0]) == [3 * c for c in counts]  # stage 1: every image once an epoch
    assert_balanced(seen[1])  # ... class-balanced batches in stage 2
    assert [(r["stage"], r["epoch"]) for r in rows(tmp_path / "crt")] == [
        ("represent", 1), ("represent", 2), ("represent", 3), ("crt", 1), ("crt", 2)]
    assert res["stage"] == "crt" and 1 <= res["best_epoch"] <= 2 and "within stage 'crt'" in res["selection"]
    assert load_checkpoint(tmp_path / "crt" / "checkpoints" / "best.pt")["stage"] == "crt"
    assert res["test"]["top1"] > 50  # chance is 10%


# ---------------------------------------------------------------- DRS
def test_drs_continues_one_schedule_and_switches_the_sampler_at_the_boundary(tmp_path, monkeypatch):
    """Deferred re-sampling: the lr of every epoch is the one-stage schedule's over the total
    epochs, stage 1 is exactly the first epochs of the plain run (same model, optimizer and
    random stream), and the batches turn class-balanced at the stage boundary."""
    sched = ["train.schedule={name: cosine}", "train.optimizer={name: sgd, lr: 0.05}"]
    plain = train(load_config(None, [*FAST, *sched, "train.epochs=4"]), out_dir=str(tmp_path / "plain"),
                  quiet=True)
    seen = spy_batches(monkeypatch)
    drs = train(load_config(None, [*FAST, *sched, "stages=[{name: plain, epochs: 2}, {name: drs, "
                                   f"epochs: 2, optimizer: continue, remedy: {BALANCED}}}]"]),
                out_dir=str(tmp_path / "drs"), quiet=True)
    one, two = rows(tmp_path / "plain"), rows(tmp_path / "drs")
    assert [r["train"]["lr"] for r in two] == [r["train"]["lr"] for r in one]
    assert len({r["train"]["lr"] for r in one}) == 4  # a schedule that moves every epoch
    for a, b in zip(one[:2], two[:2], strict=True):
        assert (a["train"]["loss"], a["val"], a["test"]) == (b["train"]["loss"], b["val"], b["test"])
    assert [r["stage"] for r in two] == ["plain"] * 2 + ["drs"] * 2
    assert class_counts(seen[0]) == [2 * c for c in drs["train_counts"]]
    assert_balanced(seen[1])
    assert drs["stage"] == "drs" and plain["stage"] == "train"


def test_two_continuing_stages_with_the_same_settings_are_one_stage(tmp_path):
    """optimizer: continue keeps the optimizer's state (momentum) and the schedule: splitting a
    run into two such stages changes no number."""
    sets = [*FAST, "train.schedule={name: multistep, milestones: [2], warmup_epochs: 1}",
            "train.optimizer={name: sgd, lr: 0.05, momentum: 0.9}"]
    one = train(load_config(None, [*sets, "train.epochs=4"]), out_dir=str(tmp_path / "one"), quiet=True)
    two = train(load_config(None, [*sets, "stages=[{name: a, epochs: 2}, {name: b, epochs: 2, "
                                   "optimizer: continue}]"]), out_dir=str(tmp_path / "two"), quiet=True)
    a, b = rows(tmp_path / "one"), rows(tmp_path / "two")
    assert [(r["train"]["loss"], r["train"]["lr"], r["val"]) for r in a] == [
        (r["train"]["loss"], r["train"]["lr"], r["val"]) for r in b]
    assert two["test_last"] == one["test_last"]


# ---------------------------------------------------------------- the legacy form is stages
def test_pretrain_and_train_sections_are_the_same_two_stages(tmp_path):
    pre = "{task: rotation, epochs: 1, batch_size: 32, use_removed: true, params: {symmetric_classes: [6, 9]}}"
    sets = [*FAST, "data.subset.per_class=60", "train.epochs=2", "model.freeze_backbone_epochs=1"]
    old = train(load_config(None, [*sets, f"pretrain={pre}"]), out_dir=str(tmp_path / "old"), quiet=True)
    new_form = ("stages=[{name: pretrain, task: rotation, epochs: 1, batch_size: 32, "
                "unlabelled: removed, params: {symmetric_classes: [6, 9]}, "
                "optimizer: {name: adam, lr: 0.001}, schedule: {name: none}}, "
                "{name: train, freeze_backbone_epochs: 1}]")
    new = train(load_config(None, [*sets, "model.freeze_backbone_epochs=0", new_form]),
                out_dir=str(tmp_path / "new"), quiet=True)
    strip = lambda rs: [{k: v for k, v in r.items() if k != "train"} | {"loss": r.get("train", {}).get("loss")}  # noqa: E731
                        for r in rs if "pretrain" not in r]
    assert strip(rows(tmp_path / "old")) == strip(rows(tmp_path / "new"))
    pre_old, pre_new = rows(tmp_path / "old")[0]["pretrain"], rows(tmp_path / "new")[0]["pretrain"]
    assert pre_old["train_loss"] == pre_new["train_loss"] and pre_old["val_acc"] == pre_new["val_acc"]
    assert old["test"] == new["test"]
    for run in ("old", "new"):
        assert load_checkpoint(tmp_path / run / "checkpoints" / "pretrained.pt")["task"] == "rotation"


# ---------------------------------------------------------------- resume inside a stage
def stop_at(monkeypatch, stage: int, epoch: int, step: int) -> None:
    """SIGTERM (as the handler records it) after that step of that epoch of that stage."""
    real = Trainer._step

    def spy(self, idx, s):
        real(self, idx, s)
        c = self.cursor
        if (c.stage, c.epoch, s + 1) == (stage, epoch, step):
            self.stop.signum = 15

    monkeypatch.setattr(Trainer, "_step", spy)


@pytest.mark.parametrize("stage,epoch", [(0, 1), (2, 0)])
def test_a_run_stopped_inside_a_stage_resumes_to_the_same_numbers(tmp_path, monkeypatch, stage, epoch):
    """Stopped inside the pretext stage (its second epoch) or inside the head-only stage of a
    cRT run with a pretext stage first; the resumed run ends with the uninterrupted results."""
    sets = [*FAST, "data.augment={crop_padding: 1}",
            "stages=[{name: rot, task: rotation, epochs: 2, unlabelled: removed}, "
            "{name: represent, epochs: 2}, "
            f"{{name: crt, epochs: 2, trains: head, reinit_head: true, remedy: {BALANCED}}}]"]
    full = train(load_config(None, sets), out_dir=str(tmp_path / "full"), quiet=True)
    stop_at(monkeypatch, stage, epoch, 3)
    with pytest.raises(Interrupted):
        train(load_config(None, sets), out_dir=str(tmp_path / "cut"), quiet=True)
    cursor = load_checkpoint(tmp_path / "cut" / "checkpoints" / "last.pt")["cursor"]
    assert (cursor["stage"], cursor["epoch"], cursor["step"]) == (stage, epoch, 3)
    monkeypatch.undo()
    resumed = train(load_config(tmp_path / "cut" / "config.yaml"), out_dir=str(tmp_path / "cut"),
                    quiet=True, resume=True)
    for key in ("val", "test", "test_last", "best_epoch", "stage"):
        assert resumed[key] == full[key], key
    cut, whole = rows(tmp_path / "cut"), rows(tmp_path / "full")
    assert [(r["stage"], r["epoch"]) for r in cut] == [(r["stage"], r["epoch"]) for r in whole]
    assert [r.get("pretrain", {}).get("val_acc") for r in cut] == [
        r.get("pretrain", {}).get("val_acc") for r in whole]
    saved = [load_checkpoint(d / "checkpoints" / "pretrained.pt")["model"] for d in
             (tmp_path / "cut", tmp_path / "full")]
    assert all(torch.equal(saved[0][k], saved[1][k]) for k in saved[0])


def test_a_non_finite_loss_in_a_pretext_stage_stops_the_run_naming_the_stage(tmp_path, monkeypatch, capsys):
    """The pretext stage has the supervised step's non-finite check (read once an epoch)."""
    poison_training_batch(monkeypatch, 3)
    cfg = tmp_path / "c.yaml"
    cfg.write_text("name: nan\n")
    sets = [*FAST, "stages=[{name: rot, task: rotation, epochs: 2}, {name: a, epochs: 1}]"]
    code = main(["train", str(cfg), "--out", str(tmp_path / "r"), "--quiet",
                 *[a for s in sets for a in ("--set", s)]])
    err = capsys.readouterr().err
    assert code == 3 and "non-finite loss at epoch 1, step 3 of stage 'rot'" in err, err
    assert not (tmp_path / "r" / "results.json").exists()


# ---------------------------------------------------------------- logs
def test_tensorboard_tags_are_grouped_by_stage():
    class Writer:
        def __init__(self):
            self.tags = []

        def add_scalar(self, tag, value, step):
            self.tags.append((tag, step))

    log = EpochLog.__new__(EpochLog)
    log.rows, log.writer, log.path = [], Writer(), None
    log._scalars({"stage": "represent", "epoch": 1, "train": {"loss": 1.0}}, 1, "represent/")
    log._scalars({"stage": "crt", "epoch": 1, "train": {"loss": 0.5}, "val": {"top1": 9.0}}, 4, "crt/")
    assert log.writer.tags == [("represent/train/loss", 1), ("crt/train/loss", 4), ("crt/val/top1", 4)]


# ---------------------------------------------------------------- refusals
@pytest.mark.parametrize("stages,message", [
    ("[{name: a, reinit_haed: true}]", "unknown key 'stages[0].reinit_haed' (did you mean 'reinit_head'?)"),
    ("[{name: a}, {name: a}]", "the name 'a' is used twice"),
    ("[{name: a, optimizer: continue}]", "optimizer: continue needs a supervised stage right before it"),
    ("[{name: p, task: rotation}, {name: a, optimizer: continue}]", "optimizer: continue needs a supervised"),
    ("[{name: a}, {name: b, optimizer: continue, schedule: {name: cosine}}]", "drop its schedule"),
    ("[{name: a, optimizer: {lrr: 0.1}}]", "stages[0].optimizer: adam takes no argument 'lrr' (did you mean 'lr'?)"),
    ("[{name: a, optimizer: {name: rmsprob}}]", "unknown optimizer 'rmsprob'"),
    ("[{name: a, optimizer: {name: adam, momentum: 0.9}}]",
     "stages[0].optimizer: adam takes no argument 'momentum'"),
    ("[{name: a, remedy: [focall]}]", "unknown remedy 'focall'"),
    ("[{name: p, task: rotation, remedy: [focal]}, {name: a}]", "remedy does not apply to a pretext stage"),
    ("[{name: p, task: rotation, trains: head}, {name: a}]", "trains: head does not apply to a pretext"),
    ("[{name: p, task: rotaton}, {name: a}]", "unknown pretext task 'rotaton' (did you mean 'rotation'?)"),
    ("[{name: p, task: rotation, params: {symetric_classes: [6]}}, {name: a}]",
     "unknown key 'stages[0].params.symetric_classes'"),
    ("[{name: p, task: rotation}]", "needs at least one supervised stage"),
    ("[{name: a}, {name: p, task: rotation}]", "a pretext stage after the last supervised stage"),
    ("[{name: a, unlabelled: removed}]", "unlabelled images would be ignored"),
    ("[{name: a, params: {x: 1}}]", "params are a pretext task's options"),
    ("[{name: a, trains: head, freeze_backbone_epochs: 1}]", "give one of them"),
    ("[{name: 'a b'}]", "bad value for 'stages[0].name'"),
    ("[]", "give at least one stage"),
    ("[{name: a}, {name: b, remedy: [ldam]}]", "stages need one classifier head"),
    ("[{name: a}, {name: b, schedule: {name: multistep}}]", "multistep needs train.schedule.milestones"),
])
def test_bad_stage_lists_are_refused_in_one_line_before_any_work(tmp_path, capsys, stages, message):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("name: refused\n")
    code = main(["train", str(cfg), "--out", str(tmp_path / "x"), "--quiet",
                 *[a for s in [*FAST, f"stages={stages}"] for a in ("--set", s)]])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1 and "Traceback" not in err, err
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("sets,message", [
    (["pretrain={task: rotation}", "stages=[{name: a}]"], "pretrain and stages are both set"),
    (["model.freeze_backbone_epochs=1", "stages=[{name: a}]"], "model.freeze_backbone_epochs is for runs without stages"),
    (["stages=[{name: p, task: rotation}, {name: a}]", "model.init_from=/tmp"], "a pretext stage and model.init_from"),
])
def test_stages_refuse_the_settings_they_replace(tmp_path, capsys, sets, message):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("name: refused\n")
    code = main(["train", str(cfg), "--out", str(tmp_path / "x"), "--quiet",
                 *[a for s in [*FAST, *sets] for a in ("--set", s)]])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1, err


def test_stage_defaults_come_from_the_main_config_and_are_saved():
    cfg = load_config(None, ["train.epochs=7", "train.batch_size=32", "remedy=[focal]",
                             "train.optimizer={name: adam, lr: 0.002}",
                             "stages=[{name: a}, {name: b, optimizer: {lr: 0.01}, remedy: []}]",
                             "stages.1.epochs=3"])  # an override into a list item
    a, b = cfg["stages"]
    assert (a["epochs"], a["batch_size"], a["remedy"], a["optimizer"]["lr"]) == (7, 32, ["focal"], 0.002)
    assert (b["epochs"], b["remedy"], b["optimizer"]["name"], b["optimizer"]["lr"]) == (3, [], "adam", 0.01)
    assert a["schedule"]["name"] == "none" and a["batch_transforms"] == []
    assert load_config(None, ["stages=[{name: a, optimizer: {lr: 0.5}}]"]) == load_config(
        None, ["stages=[{name: a, optimizer: {name: sgd, lr: 0.5}}]"])


def test_the_bundled_crt_and_drs_configs_resolve_to_their_stages():
    from pathlib import Path

    from imbal.training.stages import resolve_stages

    root = Path(__file__).resolve().parents[1] / "configs"
    crt = resolve_stages(load_config(root / "mnist_lenet_step_crt.yaml"))
    assert [(s.name, s.kind, s.epochs, s.trains, s.reinit_head) for s in crt] == [
        ("represent", "supervised", 10, "all", False), ("crt", "supervised", 3, "head", True)]
    assert crt[0].remedy == [] and crt[1].remedy == [{"name": "oversample", "mode": "balanced"}]
    drs = resolve_stages(load_config(root / "mnist_lenet_step_drs.yaml"))
    assert [(s.name, s.epochs, s.optimizer is None) for s in drs] == [("plain", 8, False), ("drs", 2, True)]
    assert drs[0].schedule_epochs == 10 and drs[0].schedule["milestones"] == [8]


def test_a_stage_naming_another_optimizer_or_schedule_starts_from_its_defaults(tmp_path):
    """train.optimizer's own arguments (sgd's momentum, multistep's milestones) belong to its
    kind: a stage that names adam or cosine does not inherit them; one that keeps the name does."""
    cfg = load_config(None, ["train.optimizer={name: sgd, lr: 0.1, momentum: 0.5, nesterov: true}",
                             "train.schedule={name: multistep, milestones: [1]}",
                             "stages=[{name: a}, {name: b, optimizer: {name: adam},"
                             " schedule: {name: cosine}}]"])
    a, b = cfg["stages"]
    assert (a["optimizer"]["momentum"], a["schedule"]["milestones"]) == (0.5, [1])
    assert b["optimizer"] == {"name": "adam", "lr": 0.01}
    assert b["schedule"]["name"] == "cosine" and b["schedule"]["milestones"] == []
    run = train(load_config(None, [*FAST, "train.epochs=1", *[
        "train.optimizer={name: sgd, lr: 0.05, momentum: 0.5}",
        "stages=[{name: a}, {name: b, optimizer: {name: adam, lr: 0.001}}]"]]),
        out_dir=str(tmp_path / "run"))
    saved = load_config(tmp_path / "run" / "config.yaml", [])["stages"][1]["optimizer"]
    assert run["complete"] and saved["name"] == "adam" and "momentum" not in saved
    assert saved["betas"] == [0.9, 0.999]  # config.yaml lists every argument the stage used
