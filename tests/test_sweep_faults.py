"""Issue 17, sweeps: a locked sweep folder, per-process job files, SIGTERM passed on to the
workers, start lines and an ETA, live per-run logs. The trainer is a fake (see test_sweep)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_sweep import FAKE, _fake_loader, calls, cli, write_sweep  # noqa: F401  (fixture)

from imbal.errors import UserError
from imbal.locks import FolderLock
from imbal.study import sweep_output

SLOW = "test_sweep_faults:slow_train"


def slow_train(cfg: dict, *, out_dir: str, overwrite: bool = False, quiet: bool = True) -> dict:
    """Says it started (in the log, at once), then waits for SIGTERM as a run's step loop does:
    stops cleanly (records it) and raises the trainer's Interrupted. Gives up after 60 s."""
    from imbal.training.trainer import Interrupted, StopFlag

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    print(f"started {cfg['name']} quiet={quiet} job={sys.argv[-1]}", file=sys.stderr, flush=True)
    (out / "pid").write_text(str(os.getpid()))
    with StopFlag() as stop:
        end = time.time() + 60
        while stop.signum is None and time.time() < end:
            time.sleep(0.05)
    (out / "stopped").write_text(str(stop.signum))
    raise Interrupted(stop.signum or signal.SIGTERM)


def test_a_sweep_folder_in_use_refuses_a_second_sweep(tmp_path):
    path = write_sweep(tmp_path, {"runs": [{"name": "a"}]})
    (tmp_path / "out").mkdir()
    with FolderLock(tmp_path / "out", "sweep folder"), pytest.raises(
            UserError, match=f"^sweep folder {tmp_path / 'out'} is in use by another imbal "
                             f"process \\(pid {os.getpid()}\\); wait for it to end or stop it first$"):
        cli([str(path), "--train-fn", FAKE])
    assert calls(tmp_path) == [] and not (tmp_path / "out" / "sweep.json").exists()
    assert cli([str(path), "--train-fn", FAKE]) == 0  # free again


def test_start_lines_eta_job_files_and_logs(tmp_path, capsys):
    path = write_sweep(tmp_path, {"runs": [{"name": "a"}, {"name": "b"}], "seeds": {"train": [0, 1]}})
    assert cli([str(path), "--train-fn", FAKE]) == 0
    out = capsys.readouterr().out.splitlines()
    log = tmp_path / "out" / "logs" / "a__d0_s0.log"
    assert f"started a__d0_s0  (log: {log})" in out
    done = [line for line in out if line.startswith("[")]
    assert [line.split("  ETA ")[0].split(" (")[0] for line in done] == [
        "[1/4] done   a__d0_s0", "[2/4] done   b__d0_s0", "[3/4] done   a__d0_s1", "[4/4] done   b__d0_s1"]
    assert all("  ETA " in line for line in done[:3]) and "ETA" not in done[3]
    assert sweep_output.eta(30.0, 1, 4) == "  ETA 1m30s" and sweep_output.eta(4000.0, 1, 2) == "  ETA 1h06m"


def _driver(tmp_path: Path, path: Path) -> subprocess.Popen:
    """`imbal sweep` in its own process, with the fake loader of test_sweep."""
    here = Path(__file__).parent
    code = (f"import sys; sys.path.insert(0, {str(here)!r}); import test_sweep; "
            "from imbal.study import executors as e; e._load_config = test_sweep.fake_load_config; "
            "e._check_config = lambda cfg: None; from imbal.cli import main; "
            f"sys.exit(main(['sweep', {str(path)!r}, '--train-fn', {SLOW!r}, '--workers', '2']))")
    return subprocess.Popen([sys.executable, "-c", code], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_sigterm_is_forwarded_to_the_workers_which_stop_cleanly(tmp_path):
    path = write_sweep(tmp_path, {"runs": [{"name": "a"}, {"name": "b"}, {"name": "c"}]})
    proc = _driver(tmp_path, path)
    out = tmp_path / "out"
    logs = [out / "logs" / f"{n}__d0_s0.log" for n in ("a", "b")]
    end = time.time() + 120
    while not all(p.is_file() and "started" in p.read_text() for p in logs):
        assert time.time() < end and proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    # live logs: the workers' lines are there while they run; job files carry the sweep's pid
    assert f"job={out / '.jobs' / f'a__d0_s0.{proc.pid}.pkl'}" in logs[0].read_text()
    assert "quiet=False" in logs[0].read_text()
    pids = [int((out / f"{n}__d0_s0" / "pid").read_text()) for n in ("a", "b")]
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, stderr
    assert stderr.splitlines()[-1] == (
        "imbal: sweep stopped by SIGTERM; its running runs stopped after their step, with a "
        "checkpoint. Run the sweep again to finish the rest")
    for n in ("a", "b"):
        assert (out / f"{n}__d0_s0" / "stopped").read_text() == str(int(signal.SIGTERM))
    assert not (out / "c__d0_s0").exists()  # never started
    for pid in pids:  # no orphan left behind
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert "stopped a__d0_s0" in stdout or "stopped b__d0_s0" in stdout


def test_interrupted_outcome_is_recorded_as_stopped(tmp_path):
    from imbal.study.executors import execute_job
    from imbal.training.trainer import Interrupted

    def stopped(cfg, **kw):
        raise Interrupted(signal.SIGTERM)

    sys.modules[__name__].stopped_train = stopped
    job = {"name": "x", "cfg": {}, "out_dir": str(tmp_path / "x"), "overwrite": False,
           "train_fn": f"{__name__}:stopped_train"}
    assert execute_job(job) == {"name": "x", "status": "stopped", "wall_s": pytest.approx(0, abs=5),
                                "error": "stopped by SIGTERM; checkpoint saved"}
    assert json.dumps(job)  # a job stays plain data
