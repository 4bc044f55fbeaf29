"""Executing a sweep's runs: local worker processes, or Slurm jobs through submitit.

A job is a plain dict {name, cfg (resolved config), out_dir, overwrite, train_fn ("module:attr"),
imports (the plugins to import first: absolute .py paths or module names)} and `execute_job` is
the one function that runs it, in a child process or on a cluster node, so a worker needs nothing
but the job to know every component a run names. It
never raises for a failing run: the traceback goes to RUN_DIR/error.txt and the outcome says
"failed", so one bad run never stops a sweep.
"""

from __future__ import annotations

import importlib
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from imbal import plugins
from imbal.errors import SweepStopped, UserError
from imbal.study.placement import Slot, take_slot

if TYPE_CHECKING:
    from imbal.study.sweep import Sweep

DEFAULT_TRAIN_FN = "imbal.training.run:train"


def is_complete(run_dir: str | Path) -> bool:
    try:
        return json.loads((Path(run_dir) / "results.json").read_text()).get("complete") is True
    except (OSError, ValueError, AttributeError):
        return False


def _import_fn(spec: str) -> Callable[..., Any]:
    module, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module), attr)


def first_line(err: BaseException) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0][:300]}" if text else type(err).__name__


def execute_job(job: dict[str, Any]) -> dict[str, Any]:
    """Train one run; return {name, status: done|failed, wall_s, error?}. Module-level: picklable."""
    out = Path(job["out_dir"])
    t0 = time.time()
    try:
        (out / "error.txt").unlink(missing_ok=True)
        plugins.load(job.get("imports") or [])
        train = _import_fn(job.get("train_fn") or DEFAULT_TRAIN_FN)
        # not quiet: the run's lines (one per epoch off a terminal) go to the sweep's log for it
        train(job["cfg"], out_dir=str(out), overwrite=job["overwrite"], quiet=False)
        if not is_complete(out):
            raise RuntimeError("training returned but results.json is missing or not complete")
        return {"name": job["name"], "status": "done", "wall_s": round(time.time() - t0, 2)}
    except Exception as err:  # any failure of one run is recorded, never fatal to the sweep
        if getattr(err, "signum", None) is not None:  # trainer.Interrupted: stopped cleanly
            return {"name": job["name"], "status": "stopped", "wall_s": round(time.time() - t0, 2),
                    "error": f"stopped by {err}; checkpoint saved"}
        out.mkdir(parents=True, exist_ok=True)
        (out / "error.txt").write_text(traceback.format_exc())
        return {"name": job["name"], "status": "failed", "wall_s": round(time.time() - t0, 2),
                "error": first_line(err)}


def failed(job: dict[str, Any], message: str, detail: str = "") -> dict[str, Any]:
    """Record a failure that happened outside execute_job (a killed worker, a lost Slurm job)."""
    out = Path(job["out_dir"])
    out.mkdir(parents=True, exist_ok=True)
    (out / "error.txt").write_text(message + "\n" + detail)
    return {"name": job["name"], "status": "failed", "wall_s": None, "error": message}


# ---------------------------------------------------------------- jobs

def _load_config(path: str, overrides: list[str]) -> dict[str, Any]:
    from imbal import config  # lazy: keeps `imbal sweep --help` light

    return config.load_config(path, overrides)


def _check_config(cfg: dict[str, Any]) -> None:
    """Unknown component names (remedy, backbone, ...) refused before any run starts."""
    from imbal.training import setup as runner  # lazy: imports torch

    runner.check_names(cfg)


def _dig(cfg: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(cfg, dict) or part not in cfg:
            return None
        cfg = cfg[part]
    return cfg


def _stale_key(run_dir: Path, cfg: dict[str, Any], keys: list[str]) -> str | None:
    """The first swept key whose value differs from the finished run's, if any."""
    try:
        old = json.loads((run_dir / "results.json").read_text()).get("config") or {}
    except (OSError, ValueError):
        return None
    for key in keys:
        if _dig(old, key) != _dig(cfg, key):
            return f"{key}: {_dig(old, key)!r} there, {_dig(cfg, key)!r} now"
    return None


def prepare_jobs(sweep: Sweep, *, threads: int | None, overwrite: bool,
                 train_fn: str = DEFAULT_TRAIN_FN) -> tuple[list[dict[str, Any]], list[str]]:
    """Resolve every run's config up front (a bad override stops the sweep before it starts).

    Returns (jobs to run, names skipped because complete). Jobs come seed-major, so a sweep
    cut short has the first seed of every configuration rather than all seeds of a few.
    """
    order = sorted(range(len(sweep.runs)), key=lambda i: (
        sweep.runs[i].seeds["train"], sweep.runs[i].seeds["data"], i))
    jobs, skipped = [], []
    for i in order:
        run = sweep.runs[i]
        overrides = run.override_list(sweep.common)
        if threads is not None and "train.threads" not in {**sweep.common, **run.overrides}:
            overrides.append(f"train.threads={threads}")
        try:
            cfg = _load_config(str(sweep.base), overrides)
            if sweep.imports:  # the sweep's plugins travel inside each run's config
                cfg["imports"] = plugins.merge(cfg.get("imports"), sweep.imports)
            _check_config(cfg)
        except UserError as err:
            raise UserError(f"sweep run {run.name}: {err}") from None
        out_dir = sweep.out / run.name
        if is_complete(out_dir) and not overwrite:
            keys = [*sweep.common, *run.overrides, "seeds.data", "seeds.train"]
            stale = _stale_key(out_dir, cfg, keys)
            if stale:
                raise UserError(f"{out_dir} holds a finished run from a different config "
                                f"({stale}); use --overwrite or another --out")
            skipped.append(run.name)
            continue
        jobs.append({"name": run.name, "cfg": cfg, "out_dir": str(out_dir),
                     "overwrite": overwrite or out_dir.exists(), "train_fn": train_fn,
                     "imports": list(cfg.get("imports") or []),
                     "threads_set": "train.threads" in {**sweep.common, **run.overrides}})
    return jobs, skipped


# ---------------------------------------------------------------- local worker processes

def _child_env(slot: Slot) -> dict[str, str]:
    """The parent's import path (so the child imports the same imbal), the slot's thread budget
    and, on a GPU, the one GPU the worker may see."""
    env = dict(os.environ)
    prefixes = (sys.prefix, sys.base_prefix)
    extra = [p or os.getcwd() for p in sys.path if not (p and p.startswith(prefixes))]
    old = env.get("PYTHONPATH")
    env["PYTHONPATH"] = os.pathsep.join(extra + ([old] if old else []))
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(slot.threads)
    if slot.visible is not None:
        env["CUDA_VISIBLE_DEVICES"] = slot.visible
    return env


def placed(job: dict[str, Any], slot: Slot) -> dict[str, Any]:
    """The job as its slot runs it: the slot's threads (unless the sweep sets train.threads) and,
    on a GPU, train.device=cuda (the worker sees only its GPU) unless the run is set to the CPU."""
    train = dict(job["cfg"].get("train") or {})
    if not job.get("threads_set"):
        train["threads"] = slot.threads
    if slot.gpu is not None and str(train.get("device", "auto")) != "cpu":
        train["device"] = "cuda"
    return {**job, "cfg": {**job["cfg"], "train": train}, "slot": slot.label}


class Children:
    """The sweep's live worker processes. SIGTERM to the sweep (kill, a scheduler) is passed on
    to each of them (a run stops after its step, with a checkpoint) and no further run starts;
    the sweep then waits for them and exits."""

    def __init__(self):
        self.procs: set[subprocess.Popen] = set()
        self.lock = threading.Lock()
        self.signum: int | None = None

    def start(self, argv: list[str], **kw: Any) -> subprocess.Popen | None:
        with self.lock:
            if self.signum is not None:
                return None
            proc = subprocess.Popen(argv, **kw)
            self.procs.add(proc)
            return proc

    def ended(self, proc: subprocess.Popen) -> None:
        with self.lock:
            self.procs.discard(proc)

    def forward(self, signum: int, frame: Any = None) -> None:
        self.signum = signum
        for proc in list(self.procs):
            try:
                proc.send_signal(signum)
            except ProcessLookupError:
                pass


def _run_child(job: dict[str, Any], work: Path, env: dict[str, str], children: Children,
               say: Callable[[str], None] | None = None) -> dict[str, Any]:
    """One run in a fresh `python -m imbal.study.executors JOB` process; its output goes to a
    log, as it comes. Job files are named per sweep process."""
    job_file = work / f"{job['name']}.{os.getpid()}.pkl"
    out_file = job_file.with_suffix(".out.json")
    log = work.parent / "logs" / f"{job['name']}.log"
    job_file.write_bytes(pickle.dumps(job))
    out_file.unlink(missing_ok=True)
    with open(log, "w") as fh:
        proc = children.start([sys.executable, "-m", "imbal.study.executors", str(job_file)],
                              stdout=fh, stderr=subprocess.STDOUT, env=env)
        if proc is None:
            job_file.unlink(missing_ok=True)
            return {"name": job["name"], "status": "stopped", "wall_s": None,
                    "error": "not started: the sweep was stopped"}
        if say is not None:
            say(f"started {job['name']}  (log: {log})")
        rc = proc.wait()
        children.ended(proc)
    if out_file.is_file():
        outcome = json.loads(out_file.read_text())
        job_file.unlink(missing_ok=True)
        out_file.unlink(missing_ok=True)
        return outcome
    tail = log.read_text()[-4000:] if log.is_file() else ""
    return failed(job, f"worker process exited with status {rc} before recording a result "
                       f"(log: {log})", tail)


def run_local(jobs: list[dict[str, Any]], *, sweep_dir: Path, slots: list[Slot],
              say: Callable[[str], None] | None = None) -> Iterator[dict[str, Any]]:
    """One worker process at a time per slot, a run taking the lowest free slot (see
    imbal.study.placement); yield each outcome, with its slot, as it finishes. SIGTERM is
    forwarded to the workers; once they have stopped, SweepStopped is raised."""
    work = sweep_dir / ".jobs"
    work.mkdir(parents=True, exist_ok=True)
    (sweep_dir / "logs").mkdir(exist_ok=True)
    envs = [{**_child_env(s), "PYTHONUNBUFFERED": "1"} for s in slots]
    children = Children()
    try:
        old = signal.signal(signal.SIGTERM, children.forward)
    except ValueError:  # not the main thread: leave signals alone
        old = None
    queue, free = list(jobs), [s.number for s in slots]
    running: dict[Future, Slot] = {}
    pool = ThreadPoolExecutor(max_workers=len(slots))
    try:
        while queue or running:
            while queue and free:
                slot = slots[take_slot(free)]
                running[pool.submit(_run_child, placed(queue.pop(0), slot), work,
                                    envs[slot.number], children, say)] = slot
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in sorted(done, key=lambda f: running[f].number):
                slot = running.pop(fut)
                free.append(slot.number)
                yield {**fut.result(), "slot": slot.label}
    finally:
        # On Ctrl-C the children got SIGINT from the terminal too; nothing new is started.
        pool.shutdown(wait=True, cancel_futures=True)
        if old is not None:
            signal.signal(signal.SIGTERM, old)
    if children.signum is not None:
        raise SweepStopped(children.signum)


# ---------------------------------------------------------------- Slurm through submitit

def _submitit() -> Any:
    try:
        import submitit
    except ImportError:
        raise UserError("--executor slurm needs submitit: pip install 'imbal[slurm]'") from None
    return submitit


class SlurmSpec(BaseModel):
    """A sweep file's `slurm:` section (every key optional); the command line's flags override
    it key by key, and --slurm-opt adds to or overrides `options`."""

    model_config = ConfigDict(extra="forbid")
    partition: str | None = None  # sbatch --partition (default: the cluster's default)
    time: int = Field(240, ge=1)  # minutes per run: --time
    gpus: int = Field(1, ge=0)  # GPUs per job: --gpus-per-node
    cpus_per_task: int = Field(8, ge=1)  # also each run's train.threads
    mem_gb: float | None = Field(None, gt=0)  # --mem
    array_parallelism: int = Field(16, ge=1)  # at most this many runs at once: --array=0-N%K
    options: dict[str, str] = Field(default_factory=dict)  # any other sbatch option: account, qos


def slurm_options(section: dict[str, Any], cli: dict[str, Any]) -> dict[str, Any]:
    """The sweep file's section with the command line's non-None values over it, validated."""
    merged = {**section, **{k: v for k, v in cli.items() if v is not None and k != "options"}}
    merged["options"] = {**section.get("options", {}), **(cli.get("options") or {})}
    try:
        return SlurmSpec.model_validate(merged).model_dump()
    except ValidationError as err:  # the file's values were checked when it was read
        e = err.errors()[0]
        flag = "--" + str(e["loc"][0]).replace("_", "-")
        raise UserError(f"{flag}: {e['msg'].lower()} (got {e.get('input')!r})") from None


def slurm_parameters(opts: dict[str, Any]) -> dict[str, Any]:
    """AutoExecutor parameters from the Slurm options (slurm_* ones are ignored off Slurm)."""
    params: dict[str, Any] = {
        "timeout_min": int(opts["time"]),
        "gpus_per_node": int(opts["gpus"]),
        "cpus_per_task": int(opts["cpus_per_task"]),
        "slurm_array_parallelism": int(opts["array_parallelism"]),
        "name": opts.get("job_name") or "imbal",
    }
    if opts.get("partition"):
        params["slurm_partition"] = opts["partition"]
    if opts.get("mem_gb"):
        params["mem_gb"] = opts["mem_gb"]
    if opts.get("options"):
        params["slurm_additional_parameters"] = dict(opts["options"])
    return params


def check_slurm(cluster: str) -> Any:
    """submitit importable and, for a real cluster, sbatch on the PATH; returns submitit."""
    submitit = _submitit()
    if cluster == "slurm" and shutil.which("sbatch") is None:
        raise UserError("sbatch not found: --executor slurm must run where Slurm is installed")
    return submitit


def submit_line(folder: Path, array_id: str) -> str:
    """The sbatch options submitit wrote for the array (its #SBATCH lines), as one command line."""
    script = folder / array_id / f"{array_id}_submission.sh"  # submitit's folder/%j layout
    try:
        lines = script.read_text().splitlines()
    except OSError:
        return f"sbatch (submission script not found: {script})"
    opts = [ln.split(None, 1)[1] for ln in lines if ln.startswith("#SBATCH ")]
    keep = [o for o in opts if not o.startswith(("--output=", "--error=", "--open-mode="))]
    return "sbatch " + " ".join(keep) + f" {script}"


# Slurm job states (sacct) in which a job ended without finishing its work.
KILLED = frozenset({"FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL",
                    "DEADLINE"})


def _tail(path: Path, n: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def _lost(sj: Any, job: dict[str, Any], what: str) -> dict[str, Any]:
    """A Slurm job that ended without a result (killed, out of memory, time limit, node lost)."""
    try:
        state = sj.state
    except Exception:  # sacct failing here must not hide the job's own failure
        state = "UNKNOWN"
    stderr, stdout = Path(sj.paths.stderr), Path(sj.paths.stdout)
    return failed(job, f"Slurm job {sj.job_id} {what} (state {state}; log: {stderr})",
                  f"stdout: {stdout}\nstderr: {stderr}\n"
                  f"---- last lines of {stderr.name}\n{_tail(stderr)}\n")


def _sacct_works(job_id: str) -> bool:
    try:
        return subprocess.run(["sacct", "-n", "-X", "-j", job_id], capture_output=True,
                              timeout=30, check=False).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def run_slurm(jobs: list[dict[str, Any]], *, folder: Path, opts: dict[str, Any], wait: bool,
              cluster: str = "slurm", log: Callable[[str], None] = print,
              ) -> Iterator[dict[str, Any]]:
    """Submit one job array; when waiting, yield outcomes as jobs finish (submitit's order)."""
    submitit = check_slurm(cluster)
    executor = submitit.AutoExecutor(folder=str(folder / "%j"), cluster=cluster)
    try:
        executor.update_parameters(**slurm_parameters(opts))
    except (NameError, AssertionError, ValueError) as err:
        raise UserError(f"bad Slurm option: {str(err).splitlines()[0]}") from None
    submitted = executor.map_array(execute_job, jobs)
    ids = {sj.job_id: job["name"] for sj, job in zip(submitted, jobs, strict=True)}
    (folder / "jobs.json").write_text(json.dumps(ids, indent=2) + "\n")
    log(f"submitted {len(submitted)} jobs ({cluster}); ids in {folder / 'jobs.json'}")
    array_id = str(submitted[0].job_id).split("_")[0]
    if cluster == "slurm":
        log(submit_line(folder, array_id))
        log(f"logs: {folder / (array_id + '_*')}/")
        if wait and not _sacct_works(array_id):
            log("warning: sacct fails here (no Slurm accounting), so a job killed before it "
                "writes its result (out of memory, time limit) cannot be seen and would be "
                "waited for forever; watch squeue, or use --no-wait")
    if not wait:
        return
    by_id = {sj.job_id: job for sj, job in zip(submitted, jobs, strict=True)}
    # Polling reads result files; submitit itself spaces its sacct calls out (2 s, 4 s, 8 s, ...).
    for sj in submitit.helpers.as_completed(submitted, poll_frequency=1 if cluster == "local" else 2):
        job = by_id[sj.job_id]
        if cluster == "slurm" and sj.state in KILLED and not sj.paths.result_pickle.exists():
            # sj.result() would wait 15 s more for a result file that a killed job never writes
            yield _lost(sj, job, "ended without a result")
            continue
        try:
            yield sj.result()
        except Exception as err:  # the job itself died: killed, timeout, out of memory, node failure
            lost = type(err).__name__ == "UncompletedJobError"  # submitit: no result file
            yield _lost(sj, job, "ended without a result" if lost
                        else f"failed outside the run ({first_line(err)})")


def _main(job_file: str) -> int:
    """Child-process entry point of the local executor."""
    job = pickle.loads(Path(job_file).read_bytes())
    outcome = execute_job(job)
    out = Path(job_file).with_suffix(".out.json")
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(outcome))
    tmp.replace(out)
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1]))
