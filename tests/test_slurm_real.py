"""`imbal sweep --executor slurm` against a real Slurm cluster with accounting.

These tests need a running slurmctld, slurmd and slurmdbd (scripts/slurm_local.sh start) and
SLURM_CONF pointing at it. They are marked `slurm_real` and run only when IMBAL_SLURM=1;
otherwise tests/conftest.py deselects them (they are not collected as skipped). CI sets
IMBAL_SLURM=1 once the script has brought the cluster up.

The runs are real imbal training runs on a tiny synthetic MNIST in the real IDX format; each
Slurm job imports imbal from this checkout (PYTHONPATH travels with sbatch's environment).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from synth import write_mnist_idx

pytestmark = pytest.mark.slurm_real
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def partition() -> str:
    """The cluster's default partition; a failing sinfo fails the test (it never skips)."""
    out = subprocess.run(["sinfo", "-h", "-o", "%P %a"], capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 0, f"sinfo failed (is SLURM_CONF set?): {out.stderr}"
    default = [ln.split()[0] for ln in out.stdout.splitlines() if ln.split()[0].endswith("*")]
    assert default, f"no default partition in: {out.stdout}"
    return default[0].rstrip("*")


def _sweep_file(tmp_path: Path, runs: list[dict], train_seeds: list[int]) -> Path:
    write_mnist_idx(str(tmp_path / "data"), 30, 10)
    (tmp_path / "base.yaml").write_text("name: synth\n")
    spec = {
        "name": "slurm_real", "base": "base.yaml",
        "set": {"data.source": "mnist", "data.root": str(tmp_path / "data"),
                "model.params": {"activation": "relu"}, "train.batch_size": 32,
                "train.optimizer": {"name": "adam", "lr": 0.003},
                "logging.progress": False},
        "runs": runs, "seeds": {"train": train_seeds, "data": [0]}, "out": str(tmp_path / "out"),
    }
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def _env() -> dict[str, str]:
    old = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": os.pathsep.join([str(ROOT), *([old] if old else [])])}


def _sweep_args(path: Path, partition: str) -> list[str]:
    return [sys.executable, "-m", "imbal.cli", "sweep", str(path), "--executor", "slurm",
            "--partition", partition, "--gpus", "0", "--cpus-per-task", "1", "--time", "5",
            "--array-parallelism", "2"]


def _sacct_states(array_id: str) -> list[str]:
    out = subprocess.run(["sacct", "-n", "-X", "-P", "-j", array_id, "-o", "JobID,State"],
                         capture_output=True, text=True, timeout=30, check=True).stdout
    return sorted(ln for ln in out.splitlines() if ln.strip())


def test_a_four_run_sweep_runs_on_slurm_and_reports(tmp_path, partition):
    path = _sweep_file(tmp_path, [{"name": "ce", "set": {"remedy": [], "train.epochs": 2}},
                                  {"name": "cw", "set": {"remedy": ["class_weights"],
                                                         "train.epochs": 2}}], [0, 1])
    t0 = time.time()
    done = subprocess.run(_sweep_args(path, partition), cwd=tmp_path, env=_env(),
                          capture_output=True, text=True, timeout=300)
    wall = time.time() - t0
    assert done.returncode == 0, done.stdout + done.stderr
    out = tmp_path / "out"
    ids = json.loads((out / "submitit" / "jobs.json").read_text())
    names = ["ce__d0_s0", "ce__d0_s1", "cw__d0_s0", "cw__d0_s1"]
    assert sorted(ids.values()) == names
    array_id = next(iter(ids)).split("_")[0]
    line = next(ln for ln in done.stdout.splitlines() if ln.startswith("sbatch "))
    for opt in ("--array=0-3%2", "--cpus-per-task=1", "--gpus-per-node=0", "--job-name=imbal",
                f"--partition={partition}", "--time=5"):
        assert opt in line.split(), line
    assert line.endswith(f"{out / 'submitit' / array_id / (array_id + '_submission.sh')}")
    assert "4 done, 0 skipped (complete), 0 failed" in done.stdout
    for name in names:
        res = json.loads((out / name / "results.json").read_text())
        assert res["complete"] is True and res["test"]["n"] == 100
        assert res["config"]["train"]["threads"] == 1  # = --cpus-per-task
    # Slurm's own accounting saw four array tasks, all completed.
    assert _sacct_states(array_id) == [f"{array_id}_{i}|COMPLETED" for i in range(4)]
    rep = subprocess.run([sys.executable, "-m", "imbal.cli", "report", str(out), "--format",
                          "json"], cwd=tmp_path, env=_env(), capture_output=True, text=True,
                         timeout=120)
    assert rep.returncode == 0, rep.stderr
    groups = {g["label"]: g for g in json.loads(rep.stdout)["groups"]}
    assert sorted(groups) == ["ce", "cw"]
    assert {label: sorted(g["runs"]) for label, g in groups.items()} == {
        "ce": names[:2], "cw": names[2:]}
    print(f"4-run sweep through real Slurm: {wall:.1f} s\n{line}")


def _wait_until_training(run: Path, jobs: Path, proc: subprocess.Popen, timeout: float) -> None:
    end = time.time() + timeout
    while time.time() < end:
        metrics = run / "metrics.jsonl"
        if jobs.is_file() and metrics.is_file() and metrics.read_text().count("\n") >= 1:
            return
        if proc.poll() is not None:
            raise AssertionError("sweep ended early:\n" + proc.stdout.read())
        time.sleep(0.2)
    proc.kill()
    raise AssertionError("the long run did not start training:\n" + proc.stdout.read())


def test_a_job_killed_mid_run_is_reported_with_its_log(tmp_path, partition):
    path = _sweep_file(tmp_path, [{"name": "quick", "set": {"train.epochs": 1}},
                                  {"name": "victim", "set": {"train.epochs": 5000}}], [0])
    proc = subprocess.Popen(_sweep_args(path, partition), cwd=tmp_path, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = tmp_path / "out"
    jobs = out / "submitit" / "jobs.json"
    _wait_until_training(out / "victim__d0_s0", jobs, proc, timeout=120)
    job_id = {name: i for i, name in json.loads(jobs.read_text()).items()}["victim__d0_s0"]
    # SIGKILL to the run (step 0, the Python process), as the out-of-memory killer would: it
    # writes no result, and the job ends FAILED.
    subprocess.run(["scancel", "--signal=KILL", f"{job_id}.0"], check=True, timeout=30)
    t_kill = time.time()
    try:
        text, _ = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError("the sweep still waits for the killed job:\n" + proc.stdout.read()) from None
    reported = time.time() - t_kill
    assert proc.returncode == 1, text
    array_id = job_id.split("_")[0]
    log = out / "submitit" / job_id / f"{job_id}_0_log.err"
    assert log.is_file()
    message = f"Slurm job {job_id} ended without a result (state FAILED; log: {log})"
    assert f"FAILED victim__d0_s0: {message}" in text, text
    assert "1 done, 0 skipped (complete), 1 failed" in text
    error = (out / "victim__d0_s0" / "error.txt").read_text()
    assert error.startswith(message + "\n") and "task 0: Killed" in error  # srun's line, in the log tail
    summary = json.loads((out / "summary.json").read_text())
    assert summary["failed"] == [{"name": "victim__d0_s0", "error": message}]
    assert json.loads((out / "quick__d0_s0" / "results.json").read_text())["complete"] is True
    states = dict(s.split("|") for s in _sacct_states(array_id))
    assert states[job_id] == "FAILED" and list(states.values()).count("COMPLETED") == 1
    print(f"killed job reported {reported:.1f} s after the kill")
