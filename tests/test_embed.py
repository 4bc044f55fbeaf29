"""`imbal embed RUN_DIR` and eval.embed: t-SNE of a run's test features."""

from __future__ import annotations

import csv
import json

import pytest
import yaml

from imbal.cli import main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A one-epoch LeNet run on digits with classes 0-4 cut to 10% (minority), eval.embed on."""
    root = tmp_path_factory.mktemp("embed")
    cfg = root / "c.yaml"
    cfg.write_text(yaml.safe_dump({
        "data": {"source": "digits", "imbalance": {"kind": "step"}},
        "train": {"epochs": 1, "device": "cpu", "threads": 1},
        "eval": {"embed": True}, "logging": {"tensorboard": False}}))
    out = root / "run"
    assert main(["train", str(cfg), "--out", str(out), "--quiet"]) == 0
    return out


def _rows(path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_run_end_embeds_the_test_set(run_dir):
    results = json.loads((run_dir / "results.json").read_text())
    n_test = sum(results["counts"]["test"])
    rows = _rows(run_dir / "embed" / "tsne.csv")
    assert len(rows) == min(2000, n_test)
    assert list(rows[0]) == ["index", "label", "class", "minority", "x", "y"]
    minority = set(results["minority_classes"])
    assert minority == {0, 1, 2, 3, 4}
    assert all(int(r["minority"]) == (int(r["label"]) in minority) for r in rows)
    assert (run_dir / "embed" / "tsne.png").read_bytes()[:8] == PNG_MAGIC


def test_subsample_size_and_seed(run_dir, tmp_path, capsys):
    def embed(out, seed):
        assert main(["embed", str(run_dir), "--max-points", "60", "--seed", str(seed),
                     "--out", str(out)]) == 0
        return _rows(out / "tsne.csv")

    a, b, c = embed(tmp_path / "a", 1), embed(tmp_path / "b", 1), embed(tmp_path / "c", 2)
    assert len(a) == 60 and a == b
    idx = [int(r["index"]) for r in a]
    assert idx == sorted(set(idx))
    assert idx != [int(r["index"]) for r in c]
    assert (tmp_path / "a" / "tsne.png").read_bytes()[:8] == PNG_MAGIC
    assert capsys.readouterr().out.splitlines()[-1] == (
        f"wrote {tmp_path / 'c' / 'tsne.csv'} and {tmp_path / 'c' / 'tsne.png'}")


def test_not_a_run_directory(tmp_path, capsys):
    assert main(["embed", str(tmp_path)]) == 2
    assert capsys.readouterr().err == f"imbal: error: {tmp_path} is not a run directory: no config.yaml\n"
    assert not (tmp_path / "embed").exists()


def test_too_few_points_refused(run_dir, tmp_path, capsys):
    assert main(["embed", str(run_dir), "--max-points", "3", "--out", str(tmp_path / "e")]) == 2
    assert capsys.readouterr().err == "imbal: error: --max-points must be at least 4, got 3\n"
    assert not (tmp_path / "e").exists()


def test_embed_leaves_the_process_settings_as_they_were(run_dir, tmp_path):
    """The run sets train.threads 1; `imbal embed` in this process must not keep it (it once
    did, and later in-process runs summed in another order)."""
    import torch

    from imbal.training.settings import snapshot

    before, threads = snapshot(), torch.get_num_threads()
    torch.set_num_threads(2 if threads == 1 else threads)
    try:
        expected = torch.get_num_threads()
        assert main(["embed", str(run_dir), "--out", str(tmp_path / "e"), "--max-points", "40"]) == 0
        assert torch.get_num_threads() == expected
        after = snapshot()
        assert after["deterministic_algorithms"] == before["deterministic_algorithms"]
        assert torch.equal(after["rng.torch"], before["rng.torch"])
    finally:
        torch.set_num_threads(threads)
