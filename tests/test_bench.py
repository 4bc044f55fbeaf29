"""`imbal bench` code paths on tiny inputs: JSON structure and ratios from the measured medians.
No timing assertions (the machine is shared); nothing here reads /work/shared/data."""

import statistics

import pytest
import torch
from torch.utils.data import TensorDataset

from imbal.bench import cli as bench
from imbal.bench import loops as bench_loops
from imbal.bench import parts as bench_parts
from imbal.cli import main
from imbal.config import load_config
from imbal.data.sources import SOURCES, Dataset, Split
from imbal.remedies.samplers import ClassSampler, alias_table, class_probabilities

TINY = ["data.source=bench_synthetic", "data.subset.test_per_class=4", "train.device=cpu",
        "model.params={activation: relu}", "train.batch_size=32", "train.epochs=50",
        "logging.tensorboard=false"]


def _synthetic_source(root, download, image_size):
    gen = torch.Generator().manual_seed(0)

    def split(n):
        return Split(torch.randint(0, 256, (n, 1, 8, 8), generator=gen, dtype=torch.uint8),
                     torch.arange(n) % 10)

    return Dataset("synthetic", split(200), split(50), [str(c) for c in range(10)])


@pytest.fixture
def synthetic_source(monkeypatch):
    """A registered source of random 8x8 images for this test only (the registry has no
    unregister; monkeypatch restores its table)."""
    monkeypatch.setitem(SOURCES._items, "bench_synthetic", _synthetic_source)


def synthetic_dataset_a(n, mean, std, gen):
    """What (a) would be for a torchvision Dataset: normalised float images, one per item."""
    x = torch.randint(0, 256, (n, 1, 8, 8), generator=gen, dtype=torch.uint8).float() / 255
    y = torch.randint(0, 10, (n,), generator=gen)
    return TensorDataset((x - mean[0]) / std[0], y)


def test_throughput_loops_and_ratios(tmp_path, synthetic_source):
    w = bench_loops.build_workload("tiny", load_config(None, TINY), synthetic_dataset_a,
                                   workers=[0], device=torch.device("cpu"), tmp=tmp_path)
    assert [loop.name for loop in w.loops] == ["a_w0", "a_tensor", "b", "c"]
    res = bench_loops.measure(w, repeats=2, say=lambda msg: None)
    per, med = res["images_per_s"], res["median_images_per_s"]
    assert set(per) == {"a_w0", "a_tensor", "b", "c", "c_fit"} and res["a_best"] == "a_w0"
    assert all(len(v) == 2 and min(v) > 0 for v in per.values())
    assert med == {k: statistics.median(v) for k, v in per.items()}
    assert res["ratios"]["c_over_b"] == med["c"] / med["b"]
    assert res["ratios"]["c_over_a"] == med["c"] / med["a_w0"]
    assert res["ratios"]["c_fit_over_b"] == med["c_fit"] / med["b"]
    assert res["images_per_epoch"] == w.images and "lenet on synthetic" in res["describe"]
    # imbal's loop went through fit's epoch: rows and checkpoints in its run directory
    assert (tmp_path / "tiny" / "metrics.jsonl").read_text().count("\n") == 2
    assert (tmp_path / "tiny" / "checkpoints" / "last.pt").is_file()


def test_summarize_takes_the_faster_dataloader_and_medians():
    per = {"a_w0": [10.0, 30.0, 20.0], "a_w2": [40.0, 5.0, 50.0], "b": [100.0, 90.0, 80.0],
           "c": [99.0, 95.0, 70.0], "c_fit": [60.0, 50.0, 55.0]}
    res = bench_loops.summarize("x", 123, per)
    assert res["a_best"] == "a_w2"  # median 40 beats 20
    assert res["ratios"] == {"c_over_b": 95.0 / 90.0, "c_fit_over_b": 55.0 / 90.0,
                             "c_over_a": 95.0 / 40.0, "b_over_a": 90.0 / 40.0,
                             "paired_c_over_b": 99.0 / 100.0}  # of 0.99, 1.06, 0.875


def test_sampler_bench_structure_and_speedups():
    res = bench_parts.bench_samplers([1000, 3000], repeats=3, over_limit=2000, say=lambda m: None)
    assert [r["n"] for r in res["rows"]] == [1000, 3000]
    for r in res["rows"]:
        assert all(len(v) == 3 for v in r["seconds"].values())
        med = {k: statistics.median(v) for k, v in r["seconds"].items()}
        assert r["median_s"] == med
        assert r["speedup_vs_wrs"] == med["wrs"] / med["imbal"]
        assert r["speedup_vs_multinomial"] == med["multinomial"] / med["imbal"]
    over = res["over_limit"]  # below 2^24 WeightedRandomSampler still works
    assert over["n"] == 2000 and not over["above_2_24"] and over["wrs"] == "worked"


def test_longtail_targets_exact_counts():
    t = bench_parts.longtail_targets(1000, 3, 100.0, torch.Generator().manual_seed(0))
    assert torch.bincount(t).tolist() == [901, 90, 9]  # 1000 * (1, .1, .01) / 1.11, floored; +1 to 0


def test_alias_table_implies_the_class_probabilities():
    gen = torch.Generator().manual_seed(0)
    for _ in range(50):
        p = torch.rand(7, generator=gen, dtype=torch.float64) ** 3
        p[torch.rand(7, generator=gen) < 0.3] = 0.0
        p[0] += 0.01
        p /= p.sum()
        keep, alias = alias_table(p)
        implied = (keep / 7).index_add(0, alias, (1 - keep) / 7)
        assert torch.allclose(implied, p, atol=1e-12, rtol=0)
        assert torch.all(implied[p == 0] == 0)
    # chunked draws: every image reachable, an empty class never drawn
    t = torch.tensor([0] * 5 + [2] * 3)
    s = ClassSampler(t, class_probabilities(torch.bincount(t, minlength=3), "balanced"), 70_000)
    idx = s.epoch_indices(0, gen)
    assert idx.numel() == 70_000 and set(idx.tolist()) == set(range(8))


def test_startup_phases_from_marks():
    marks = [["python", 10.1, 0.02], ["import torch", 11.0, 0.9], ["data", 11.5, 1.3]]
    res = bench_parts.phases(10.0, marks)
    assert res["total_s"] == pytest.approx(1.5)
    assert res["phases_s"] == pytest.approx({"python": 0.1, "import torch": 0.9, "data": 0.5})
    assert res["phases_cpu_s"] == pytest.approx({"python": 0.02, "import torch": 0.88,
                                                 "data": 0.4})


def test_targets_and_table():
    w = {"describe": "d", "images_per_epoch": 5, "a_best": "a_w0",
         "median_images_per_s": {"a_w0": 1.0, "b": 3.0, "c": 2.9, "c_fit": 2.0},
         "ratios": {"c_over_b": 2.9 / 3.0, "c_fit_over_b": 2 / 3, "c_over_a": 2.9}}
    res = {"machine": {"date": "now", "cpu": "cpu", "cores": 2, "torch": "t", "torch_threads": 2,
                       "device": "cpu", "gpu": None},
           "settings": {"repeats": 3, "quick": False}, "throughput": {"mnist_lenet": w},
           "sampler": {"num_classes": 10, "ratio": 100.0, "rows": [
               {"n": 10, "median_s": {"imbal": 1.0, "wrs": 8.0, "multinomial": 2.0},
                "speedup_vs_wrs": 8.0, "speedup_vs_multinomial": 2.0}]},
           "startup": {"median_total_s": 2.5, "median_cpu_s": 2.0, "command": "imbal train",
                       "median_phases_s": {"python": 2.5}, "median_phases_cpu_s": {"python": 2},
                       "floor": {"median_total_s": 2.0, "median_phases_s": {"python": 2.0}}}}
    res["targets"] = bench.targets_met(res)
    assert [(t["value"], t["met"]) for t in res["targets"]] == [
        (2.9 / 3.0, True), (2.9, True), (8.0, True), (2.5, False)]
    table = bench.format_table(res)
    assert "[met] mnist_lenet: imbal / bare loop: 0.97" in table
    assert "[MISSED] fixed cost of an MNIST run (s): 2.50" in table


def test_bad_arguments_are_one_line_errors(capsys):
    assert main(["bench", "--only", "mnist,nope"]) == 2
    assert "unknown part(s) ['nope']" in capsys.readouterr().err
    assert main(["bench", "--workers", "a"]) == 2
    assert "--workers" in capsys.readouterr().err
