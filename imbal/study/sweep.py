"""Sweeps: one sweep file -> many runs (a grid or an explicit list, times seeds), each a run dir.

A sweep file (YAML):
    name: s1                     # sweep name; runs go to runs/<name>/ unless `out:` says otherwise
    base: ../configs/x.yaml      # base config, relative to the sweep file
    set: {train.epochs: 40}      # overrides common to every run (dotted keys)
    grid: {train.optimizer.lr: [0.01, 0.1]}         # cartesian product ...
    runs: [{name: focal, set: {remedy: [{name: focal, gamma: 2}]}}]   # ... and/or a list
    seeds: {train: [0, 1, 2], data: [0]}           # both vary; cartesian
    out: runs/s1                 # relative to the working directory
    imports: [my_loss.py]        # plugins for every run, relative to the sweep file (optional)
    slurm: {partition: gpu, time: 120, gpus: 1}   # --executor slurm defaults (optional)
    devices: [0, 1]              # local executor: GPUs to pack runs onto, or cpu (optional)
    per_device: 4                # runs at a time per GPU (optional; default: estimated)

Run names are `<label>__d<data seed>_s<train seed>`; the label is the explicit run name and/or
the grid values. This module turns the file into runs and jobs and drives them; the executors
(local worker processes, Slurm through submitit) live in imbal.study.executors.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from imbal import plugins
from imbal.errors import UserError
from imbal.locks import FolderLock
from imbal.study import devices as sweep_devices
from imbal.study import executors as sweep_exec
from imbal.study import placement, sweep_output
from imbal.study.executors import DEFAULT_TRAIN_FN, SlurmSpec, prepare_jobs
from imbal.study.sweep_output import format_override

SEED_SUFFIX = re.compile(r"__d-?\d+_s-?\d+$")
_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_NAME = re.compile(r"^[A-Za-z0-9_.+-]+$")
_UNSAFE = re.compile(r"[^A-Za-z0-9_.+-]+")
MAX_LABEL = 64
# Keys the sweep sets itself for every run; a sweep file may not set them.
RESERVED_KEYS = ("name", "seeds")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RunEntry(_Strict):
    name: str = Field(min_length=1)
    set: dict[str, Any] = Field(default_factory=dict)


class SeedSpec(_Strict):
    train: list[int] = Field(default_factory=lambda: [0], min_length=1)
    data: list[int] = Field(default_factory=lambda: [0], min_length=1)

    @field_validator("train", "data", mode="before")
    @classmethod
    def _listify(cls, v: Any) -> Any:
        return [v] if isinstance(v, int) else v


class SweepSpec(_Strict):
    name: str = Field(min_length=1)
    base: str
    set: dict[str, Any] = Field(default_factory=dict)
    grid: dict[str, list[Any]] = Field(default_factory=dict)
    runs: list[RunEntry] = Field(default_factory=list)
    seeds: SeedSpec = Field(default_factory=SeedSpec)
    out: str | None = None
    imports: list[str] = Field(default_factory=list)
    slurm: SlurmSpec = Field(default_factory=SlurmSpec)
    devices: list[int] | int | str | None = None
    per_device: int | None = Field(None, ge=1)


@dataclass
class Run:
    """One run of a sweep: its name, its configuration label and what it changes."""

    name: str
    label: str
    overrides: dict[str, Any]  # the label-defining overrides (grid values, explicit run's set)
    seeds: dict[str, int]  # {"data": d, "train": t}

    def override_list(self, common: dict[str, Any]) -> list[str]:
        """`key=value` strings for load_config: common, then this run's, then seeds and name."""
        items = {**common, **self.overrides}
        out = [format_override(k, v) for k, v in items.items()]
        out += [f"seeds.data={self.seeds['data']}", f"seeds.train={self.seeds['train']}"]
        return out + [f"name={self.name}"]


@dataclass
class Sweep:
    name: str
    base: Path
    common: dict[str, Any]
    runs: list[Run]
    out: Path
    source: Path
    imports: list[str] = field(default_factory=list)  # absolute paths / module names
    slurm: dict[str, Any] = field(default_factory=dict)  # the file's `slurm:` keys as written
    devices: list[int] | str | None = None  # the file's `devices:` (parsed), None: default
    per_device: int | None = None


def _one_line_error(err: ValidationError, path: Path) -> str:
    e = err.errors()[0]
    loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
    if e["type"] == "extra_forbidden":
        valid = SweepSpec.model_fields if len(e["loc"]) == 1 else (
            SlurmSpec.model_fields if e["loc"][0] == "slurm" else None)
        return (f"sweep file {path}: unknown key '{loc}'"
                + (f" (valid: {', '.join(valid)})" if valid else ""))
    if e["type"] == "missing":
        return f"sweep file {path}: missing key '{loc}'"
    got = e.get("input")
    got_s = "" if isinstance(got, dict | list) else f" (got {got!r})"
    return f"sweep file {path}: bad value for '{loc}': {e['msg'].lower()}{got_s}"


def read_spec(path: str | Path) -> SweepSpec:
    p = Path(path)
    if not p.is_file():
        raise UserError(f"sweep file not found: {p}")
    try:
        raw = yaml.safe_load(p.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise UserError(f"YAML syntax error in sweep file {p}{where}") from None
    if not isinstance(raw, dict):
        raise UserError(f"sweep file {p} must be a YAML mapping (name, base, grid/runs, seeds)")
    try:
        return SweepSpec.model_validate(raw)
    except ValidationError as err:
        raise UserError(_one_line_error(err, p)) from None


def _check_keys(where: str, keys: Any) -> None:
    for key in keys:
        if not isinstance(key, str) or not _KEY.match(key):
            raise UserError(f"sweep {where}: '{key}' is not a dotted config key like train.epochs")
        if key.split(".")[0] in RESERVED_KEYS:
            raise UserError(f"sweep {where}: '{key}' is set by the sweep itself "
                            "(use the `seeds:` section; run names come from labels)")


def render_value(v: Any) -> str:
    """A short text for a label: remedy lists become their names joined by '+'."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, list):
        return "+".join(render_value(x) for x in v) if v else "none"
    if isinstance(v, dict):
        if "name" in v:
            return str(v["name"])
        return "+".join(f"{k}{render_value(x)}" for k, x in v.items())
    return str(v)


def shorten(label: str) -> str:
    """Sanitise to [A-Za-z0-9_.+-] and cap the length, keeping it deterministic and distinct."""
    clean = _UNSAFE.sub("-", label).strip("-") or "x"
    if len(clean) <= MAX_LABEL:
        return clean
    digest = hashlib.sha1(clean.encode()).hexdigest()[:8]
    return f"{clean[: MAX_LABEL - 9]}-{digest}"


def _short_keys(keys: list[str]) -> dict[str, str]:
    """Last dotted component, unless two grid keys share it (then the whole key)."""
    leaves = [k.split(".")[-1] for k in keys]
    return {k: (leaf if leaves.count(leaf) == 1 else k) for k, leaf in zip(keys, leaves, strict=True)}


def _grid_part(key: str, short: str, value: Any) -> str:
    # A remedy list reads best as its names alone: "focal+oversample", "none".
    named = isinstance(value, list) and all(isinstance(x, dict) and "name" in x for x in value)
    if key.split(".")[-1] == "remedy" or (named and value):
        return render_value(value)
    return f"{short}-{render_value(value)}"


def configurations(spec: SweepSpec) -> list[tuple[str, dict[str, Any]]]:
    """(label, overrides) per configuration: explicit runs x grid product, collisions refused."""
    _check_keys("set", spec.set)
    _check_keys("grid", spec.grid)
    for key, values in spec.grid.items():
        if not values:
            raise UserError(f"sweep grid: '{key}' has an empty list of values")
    entries: list[tuple[str | None, dict[str, Any]]] = [(None, {})]
    if spec.runs:
        entries = []
        for r in spec.runs:
            if not _NAME.match(r.name):
                raise UserError(f"sweep run name '{r.name}' may only use letters, digits and _ . + -")
            _check_keys(f"run '{r.name}'", r.set)
            entries.append((r.name, dict(r.set)))
    keys = list(spec.grid)
    short = _short_keys(keys)
    seen: dict[str, dict[str, Any]] = {}
    out = []
    for (rname, rset), combo in itertools.product(entries, itertools.product(*spec.grid.values())):
        clash = sorted(set(rset) & set(keys))
        if clash:
            raise UserError(f"sweep run '{rname}' sets '{clash[0]}', which the grid also varies")
        parts = [rname] if rname else []
        parts += [_grid_part(k, short[k], v) for k, v in zip(keys, combo, strict=True)]
        label = shorten("_".join(parts)) if parts else shorten(spec.name)
        overrides = {**rset, **dict(zip(keys, combo, strict=True))}
        if label in seen:
            raise UserError(f"two configurations get the label '{label}' ({seen[label]} and "
                            f"{overrides}); give them distinct names in an explicit `runs:` list")
        seen[label] = overrides
        out.append((label, overrides))
    return out


def expand(spec: SweepSpec) -> list[Run]:
    """Every run: configurations x data seeds x train seeds, in that (listing) order."""
    for kind in ("data", "train"):
        values = getattr(spec.seeds, kind)
        if len(set(values)) != len(values):
            raise UserError(f"sweep seeds.{kind} lists a seed twice: {values}")
    runs = []
    for label, overrides in configurations(spec):
        for d, t in itertools.product(spec.seeds.data, spec.seeds.train):
            runs.append(Run(f"{label}__d{d}_s{t}", label, overrides, {"data": d, "train": t}))
    return runs


def load_sweep(path: str | Path, *, out: str | None = None,
               extra: dict[str, Any] | None = None, imports: list[str] | None = None) -> Sweep:
    """Read, validate and expand a sweep file. `extra` = command-line overrides for every run,
    `imports` = command-line plugins for every run (relative to the working directory)."""
    p = Path(path)
    spec = read_spec(p)
    base = (p.parent / spec.base).resolve()
    if not base.is_file():
        raise UserError(f"sweep {p}: base config not found: {base}")
    extra = extra or {}
    _check_keys("--set", extra)
    runs = expand(spec)
    varied = {k for r in runs for k in r.overrides}
    clash = sorted(varied & set(extra))
    if clash:
        raise UserError(f"--set {clash[0]}: the sweep varies this key; edit the sweep file instead")
    dest = Path(out or spec.out or Path("runs") / shorten(spec.name))
    every = plugins.merge(plugins.absolute(spec.imports, p.resolve().parent),
                          plugins.absolute(plugins.check_specs(imports or [], "--import")))
    devices = placement.parse_devices(spec.devices, f"sweep file {p}: devices")
    return Sweep(spec.name, base, {**spec.set, **extra}, runs, dest, p.resolve(), every,
                 slurm=spec.slurm.model_dump(exclude_unset=True), devices=devices,
                 per_device=spec.per_device)


def sweep_record(sweep: Sweep) -> dict[str, Any]:
    """What sweep.json holds: enough for `imbal report` to group runs by label."""
    return {
        "name": sweep.name,
        "sweep_file": str(sweep.source),
        "base": str(sweep.base),
        "set": sweep.common,
        "imports": sweep.imports,
        "runs": [asdict(r) for r in sweep.runs],
    }


def write_sweep_json(sweep: Sweep) -> Path:
    sweep.out.mkdir(parents=True, exist_ok=True)
    path = sweep.out / "sweep.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(sweep_record(sweep), indent=2, default=str) + "\n")
    tmp.replace(path)
    return path


def strip_seed_suffix(name: str) -> str:
    return SEED_SUFFIX.sub("", name)


# ---------------------------------------------------------------- jobs and the sweep driver

def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def run_sweep(path: str | Path, *, workers: int | None = None, executor: str = "local",
              dry_run: bool = False, out: str | None = None, extra: dict[str, Any] | None = None,
              overwrite: bool = False, train_fn: str = DEFAULT_TRAIN_FN,
              slurm: dict[str, Any] | None = None, wait: bool = True, cluster: str = "slurm",
              imports: list[str] | None = None, devices: str | None = None,
              per_device: int | None = None, say=print) -> int:
    """Expand, skip what is complete, run the rest; exit status 1 if any run failed.

    `slurm`: the command line's Slurm options (None = not given), laid over the sweep file's
    `slurm:` section (executors.slurm_options). `devices` ("0,1" | "cpu") and `per_device`
    override the sweep file's (imbal.study.placement); they place local runs only.
    """
    if workers is not None and workers < 1:
        raise UserError(f"--workers must be at least 1 (got {workers})")
    if per_device is not None and per_device < 1:
        raise UserError(f"--per-device must be at least 1 (got {per_device})")
    if executor != "local" and (devices is not None or per_device is not None):
        raise UserError("--devices/--per-device place runs of the local executor; "
                        "on Slurm give --gpus per job")
    sweep = load_sweep(path, out=out, extra=extra, imports=imports)
    # The file's devices:/per_device: apply to the local executor only.
    devices_ = placement.parse_devices(devices) if devices is not None else sweep.devices
    per_device = per_device if per_device is not None else sweep.per_device
    plugins.load(sweep.imports)  # before any run's config is checked; each job carries them
    if executor == "slurm" and not dry_run:
        sweep_exec.check_slurm(cluster)  # before anything is written
    threads = None
    if executor == "slurm":  # the sweep file's `slurm:` section, the command line over it
        slurm = sweep_exec.slurm_options(sweep.slurm, slurm or {})
        threads = slurm["cpus_per_task"]
    jobs, skipped = prepare_jobs(sweep, threads=threads, overwrite=overwrite, train_fn=train_fn)
    slots, where = [], ""
    if executor == "local" and jobs:  # refusals (unknown GPU, ...) before anything is written
        slots, where = sweep_devices.choose_slots(
            [j["cfg"] for j in jobs], devices=devices_, per_device=per_device, workers=workers,
            cores=_cores())
        say(where)
    if dry_run:
        sweep_output.list_runs(sweep, jobs, skipped, say)
        return 0
    sweep.out.mkdir(parents=True, exist_ok=True)
    lock = FolderLock(sweep.out, "sweep folder").acquire()  # one sweep at a time in a folder
    try:
        return _drive(sweep, jobs, skipped, executor=executor, slots=slots, where=where,
                      slurm=slurm, wait=wait, cluster=cluster, say=say)
    finally:
        lock.release()


def _drive(sweep: Sweep, jobs: list[dict[str, Any]], skipped: list[str], *, executor: str,
           slots: list, where: str, slurm: dict[str, Any], wait: bool, cluster: str,
           say) -> int:
    write_sweep_json(sweep)
    t0, outcomes = time.time(), []
    if not jobs:
        how, stream = "nothing to run", iter(())
    elif executor == "local":
        how = "local, " + where.removeprefix("placement: ").split(" (auto")[0]
        stream = sweep_exec.run_local(jobs, sweep_dir=sweep.out, slots=slots, say=say)
    else:
        how = f"submitit ({cluster})"
        stream = sweep_exec.run_slurm(jobs, folder=sweep.out / "submitit", opts=slurm, wait=wait,
                                      cluster=cluster, log=say)
    for i, o in enumerate(stream, 1):
        outcomes.append(o)
        tail = f"  {o.get('error')}" if o["status"] != "done" else ""
        on = f", {o['slot']}" if o.get("slot") else ""
        say(f"[{i}/{len(jobs)}] {o['status']:<6} {o['name']} ({o.get('wall_s') or 0:.1f} s{on})"
            f"{tail}{sweep_output.eta(time.time() - t0, i, len(jobs))}")
    if executor != "local" and not wait:
        say(f"not waiting; when the jobs finish: imbal report {sweep.out}")
        return 0
    summary = sweep_output.summarise(sweep, outcomes, skipped, time.time() - t0, how, say,
                                     workers=len(slots) or None)
    return 1 if summary["failed"] else 0


# ---------------------------------------------------------------- command line

def _pairs(items: list[str] | None, flag: str, parse: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items or []:
        key, eq, text = item.partition("=")
        if not eq or not key.strip():
            raise UserError(f"{flag} '{item}' must look like key=value")
        try:
            out[key.strip()] = yaml.safe_load(text) if parse else text
        except yaml.YAMLError:
            raise UserError(f"{flag} '{item}': value is not valid YAML") from None
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("sweep_file", help="sweep YAML (name, base, set, grid/runs, seeds, out)")
    parser.add_argument("--workers", type=int, default=None,
                        help="parallel runs on the CPU; each gets cores/N threads (default 1)")
    parser.add_argument("--devices", help="GPUs to pack runs onto, e.g. 0,1, or cpu "
                        "(default: the file's `devices`, else every visible GPU)")
    parser.add_argument("--per-device", type=int, help="runs at a time per GPU (default: the "
                        "file's `per_device`, else estimated from the model and free memory)")
    parser.add_argument("--executor", choices=["local", "slurm"], default="local")
    parser.add_argument("--dry-run", action="store_true", help="list the runs, run nothing")
    parser.add_argument("--out", help="sweep directory (default: the file's `out`, "
                                      "else runs/<sweep name>)")
    parser.add_argument("--set", dest="set_items", action="append", metavar="KEY=VALUE",
                        help="override for every run (value parsed as YAML); repeatable")
    parser.add_argument("--overwrite", action="store_true", help="re-run complete runs too")
    parser.add_argument("--import", dest="imports", action="append", default=[],
                        metavar="MODULE_OR_PATH", help="import a plugin (a module name or a .py "
                        "file) in the sweep and in every run; repeatable")
    parser.add_argument("--train-fn", default=DEFAULT_TRAIN_FN, help=argparse.SUPPRESS)
    g = parser.add_argument_group("slurm (--executor slurm; needs pip install 'imbal[slurm]')")
    g.add_argument("--partition", help="Slurm partition (these flags override the sweep "
                                       "file's `slurm:` section)")
    g.add_argument("--time", type=int, help="minutes per run (default 240)")
    g.add_argument("--gpus", type=int, help="GPUs per job (default 1)")
    g.add_argument("--cpus-per-task", type=int, help="CPUs per job (default 8)")
    g.add_argument("--mem-gb", type=float, help="memory per job in GB")
    g.add_argument("--array-parallelism", type=int,
                   help="at most this many jobs of the array at once (default 16)")
    g.add_argument("--slurm-opt", action="append", metavar="KEY=VALUE",
                   help="extra sbatch option, e.g. account=abc or qos=high; repeatable")
    g.add_argument("--no-wait", action="store_true", help="submit and return")
    g.add_argument("--submitit-cluster", default="slurm", help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    slurm = {"partition": args.partition, "time": args.time, "gpus": args.gpus,
             "cpus_per_task": args.cpus_per_task, "mem_gb": args.mem_gb,
             "array_parallelism": args.array_parallelism,
             "options": _pairs(args.slurm_opt, "--slurm-opt", parse=False)}
    return run_sweep(args.sweep_file, workers=args.workers, executor=args.executor,
                     dry_run=args.dry_run, out=args.out,
                     extra=_pairs(args.set_items, "--set", parse=True), overwrite=args.overwrite,
                     train_fn=args.train_fn, slurm=slurm, wait=not args.no_wait,
                     cluster=args.submitit_cluster, imports=args.imports,
                     devices=args.devices, per_device=args.per_device,
                     say=lambda s: print(s, flush=True))
