"""`imbal report`: runs that differ only in seeds grouped into one row, mean ± sample std.

Inputs are run directories or sweep directories (or directories holding either, one level
down). A sweep's sweep.json gives each run its configuration label; loose runs are grouped by
their config with name and seeds removed. Runs that are not complete are listed under the
table, never dropped silently.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imbal.errors import UserError
from imbal.study.labels import differing_settings
from imbal.study.stats import ci95, paired_t

METRICS = ("top1", "balanced_acc", "minority_acc", "majority_acc", "macro_f1")
TITLES = {"top1": "top-1", "balanced_acc": "balanced acc", "minority_acc": "minority acc",
          "majority_acc": "majority acc", "macro_f1": "macro-F1"}
RUN_MARKERS = ("results.json", "error.txt", "config.yaml")
# Config keys that do not make a different configuration (for grouping loose runs).
NOT_CONFIG = ("name", "seeds", "logging")
DASH = "—"


@dataclass
class RunInfo:
    name: str
    dir: Path
    label: str | None  # from sweep.json; None for loose runs
    source: str  # sweep name, "" for loose runs
    results: dict[str, Any] | None = None
    status: str = "complete"  # complete | failed | incomplete | not started
    error: str | None = None


@dataclass
class Group:
    key: tuple[str, str]
    label: str
    runs: list[RunInfo] = field(default_factory=list)
    stats: dict[str, dict[str, Any]] = field(default_factory=dict)
    baseline: bool = False


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _error_line(path: Path) -> str | None:
    try:
        lines = [x.strip() for x in path.read_text().splitlines() if x.strip()]
    except OSError:
        return None
    if not lines:
        return "failed (empty error.txt)"
    # A traceback ends with the exception; a message written by the sweep starts with it.
    return lines[-1] if lines[0].startswith("Traceback") else lines[0]


def load_run(run_dir: Path, *, label: str | None, source: str, metric_set: str) -> RunInfo:
    info = RunInfo(run_dir.name, run_dir, label, source)
    res = _read_json(run_dir / "results.json")
    if isinstance(res, dict) and res.get("complete") is True:
        if isinstance(res.get(metric_set), dict):
            info.results = res
            return info
        info.status, info.error = "incomplete", f"results.json has no '{metric_set}' metrics"
    elif (run_dir / "error.txt").is_file():
        info.status, info.error = "failed", _error_line(run_dir / "error.txt")
    elif run_dir.is_dir():
        info.status = "incomplete"
        info.error = ("results.json not complete" if res else
                      "results.json is corrupt (not JSON)" if (run_dir / "results.json").is_file()
                      else "no results.json (running or killed?)")
    else:
        info.status, info.error = "not started", None
    return info


def _is_run_dir(d: Path) -> bool:
    return any((d / m).is_file() for m in RUN_MARKERS)


def _from_sweep(sweep_dir: Path, metric_set: str) -> list[RunInfo]:
    record = _read_json(sweep_dir / "sweep.json")
    if not isinstance(record, dict) or not isinstance(record.get("runs"), list):
        raise UserError(f"{sweep_dir / 'sweep.json'} is not a sweep record")
    source = str(record.get("name") or sweep_dir.name)
    runs = [load_run(sweep_dir / r["name"], label=r["label"], source=source,
                     metric_set=metric_set) for r in record["runs"]]
    listed = {r["name"] for r in record["runs"]}
    # Run dirs left from an earlier version of the sweep file still get reported, as loose runs.
    for d in sorted(p for p in sweep_dir.iterdir() if p.is_dir() and p.name not in listed):
        if _is_run_dir(d):
            runs.append(load_run(d, label=None, source="", metric_set=metric_set))
    return runs


def discover(paths: list[str | Path], metric_set: str = "test") -> list[RunInfo]:
    """Run dirs and sweep dirs from the arguments, looking one level down."""
    found: list[RunInfo] = []
    for raw in paths:
        p = Path(raw)
        if not p.is_dir():
            raise UserError(f"not a directory: {p}")
        candidates = [p] if (p / "sweep.json").is_file() or _is_run_dir(p) else sorted(
            c for c in p.iterdir() if c.is_dir())
        hits = 0
        for d in candidates:
            if (d / "sweep.json").is_file():
                found += _from_sweep(d, metric_set)
            elif _is_run_dir(d):
                found.append(load_run(d, label=None, source="", metric_set=metric_set))
            else:
                continue
            hits += 1
        if not hits:
            raise UserError(f"{p}: no run (results.json) or sweep (sweep.json) in it "
                            "or one level below")
    seen, unique = set(), []
    for r in found:
        key = r.dir.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(r)
    return unique


def _config_hash(cfg: dict[str, Any]) -> str:
    cfg = {k: v for k, v in cfg.items() if k not in NOT_CONFIG}
    cfg["train"] = {k: v for k, v in (cfg.get("train") or {}).items() if k != "threads"}
    return hashlib.sha1(json.dumps(cfg, sort_keys=True, default=str).encode()).hexdigest()[:10]


def _strip_seeds(name: str) -> str:
    from imbal.study.sweep import strip_seed_suffix

    return strip_seed_suffix(name)


def group_runs(runs: list[RunInfo]) -> tuple[list[Group], list[RunInfo]]:
    """Complete runs grouped by configuration (first-seen order); the rest returned apart."""
    groups: dict[tuple[str, str], Group] = {}
    rest = []
    for r in runs:
        if r.results is None:
            rest.append(r)
            continue
        if r.label is not None:
            key = (r.source, r.label)
            label = r.label
        else:
            key = ("", _config_hash(r.results.get("config") or {}))
            label = _strip_seeds(str(r.results.get("name") or r.name))
        group = groups.setdefault(key, Group(key, label))
        twin = next((o for o in group.runs if _same_replicate(o, r)), None)
        if twin is not None:  # the same config and seeds in another folder: one replicate
            r.status, r.error = "duplicate", f"same config and seeds as {twin.dir}"
            rest.append(r)
            continue
        group.runs.append(r)
    out = list(groups.values())
    counts: dict[str, int] = {}
    for g in out:
        counts[g.label] = counts.get(g.label, 0) + 1
    for label in [k for k, n in counts.items() if n > 1]:  # say which is which
        same = [g for g in out if g.label == label]
        diff = differing_settings([g.runs[0].results.get("config") or {} for g in same])
        for g, settings in zip(same, diff, strict=True):
            if g.key[0]:
                g.label = f"{g.key[0]}/{label}"
            else:
                g.label = f"{label} ({settings})" if settings else f"{label}#{g.key[1][:6]}"
    return out, rest


def _same_replicate(a: RunInfo, b: RunInfo) -> bool:
    """Runs that differ only by name or output folder (same config, same seeds)."""
    ca, cb = a.results.get("config") or {}, b.results.get("config") or {}
    return _seeds(a) == _seeds(b) and _config_hash(ca) == _config_hash(cb)


def _metric(run: RunInfo, metric_set: str, metric: str) -> float | None:
    value = run.results[metric_set].get(metric)
    return None if value is None else float(value)


def compute_stats(groups: list[Group], metric_set: str) -> None:
    for g in groups:
        for m in METRICS:
            values = [v for v in (_metric(r, metric_set, m) for r in g.runs) if v is not None]
            g.stats[m] = {"mean": statistics.fmean(values) if values else None,
                          "std": statistics.stdev(values) if len(values) > 1 else None,
                          "ci95": ci95(values), "values": values, "delta": None, "paired": None}


def _plain(group: Group) -> bool:
    cfgs = [r.results.get("config") or {} for r in group.runs]
    return all(c.get("remedy") == [] and not c.get("pretrain") and not c.get("stages") for c in cfgs)


def choose_baseline(groups: list[Group], wanted: str | None) -> Group | None:
    """--baseline LABEL, else the one group with no remedy (no pretraining, no stages), if unique."""
    if wanted is not None:
        for g in groups:
            if wanted in (g.label, g.key[1]):
                return g
        raise UserError(f"--baseline '{wanted}' is not a configuration here; labels: "
                        + ", ".join(g.label for g in groups))
    plain = [g for g in groups if _plain(g)]
    return plain[0] if len(plain) == 1 else None


def apply_baseline(groups: list[Group], base: Group | None, metric_set: str = "test") -> None:
    if base is None:
        return
    base.baseline = True
    for g in groups:
        for m in METRICS:
            a, b = g.stats[m]["mean"], base.stats[m]["mean"]
            g.stats[m]["delta"] = None if a is None or b is None else a - b
            if g is not base:
                g.stats[m]["paired"] = paired_t(_pairs(g, base, m, metric_set))


def _seeds(run: RunInfo) -> tuple:
    seeds = run.results.get("seeds") or {}
    return (seeds.get("data"), seeds.get("train"))


def _pairs(g: Group, base: Group, m: str, metric_set: str) -> list[tuple[float, float]]:
    """(value, baseline value) of the runs with the same seeds in both groups."""
    ref = {_seeds(r): _metric(r, metric_set, m) for r in base.runs}
    out = []
    for r in g.runs:
        a, b = _metric(r, metric_set, m), ref.get(_seeds(r))
        if a is not None and b is not None:
            out.append((a, b))
    return out


def build_report(paths: list[str | Path], *, metric_set: str = "test",
                 baseline: str | None = None) -> dict[str, Any]:
    """Everything a report shows, as plain data (the JSON format is exactly this)."""
    runs = discover(paths, metric_set)
    groups, rest = group_runs(runs)
    compute_stats(groups, metric_set)
    base = choose_baseline(groups, baseline) if groups else None
    apply_baseline(groups, base, metric_set)
    return {
        "metric_set": metric_set,
        "baseline": base.label if base else None,
        "metrics": list(METRICS),
        "groups": [{"label": g.label, "n": len(g.runs), "baseline": g.baseline,
                    "runs": [r.name for r in g.runs], "metrics": g.stats,
                    "classes": g.runs[0].results.get("classes") or [],
                    "per_class": _per_class(g, metric_set)} for g in groups],
        "not_in_table": [{"name": r.name, "dir": str(r.dir), "label": r.label,
                          "status": r.status, "error": r.error} for r in rest],
    }


def _per_class(g: Group, metric_set: str) -> dict[str, list[float | None]]:
    rows = [r.results[metric_set].get("per_class_acc") or [] for r in g.runs]
    width = min((len(x) for x in rows), default=0)
    cols = [[float(x[i]) for x in rows if x[i] is not None] for i in range(width)]
    return {"mean": [statistics.fmean(c) if c else None for c in cols],
            "std": [statistics.stdev(c) if len(c) > 1 else None for c in cols]}


# ---------------------------------------------------------------- formats

def _num(x: float | None) -> str:
    return DASH if x is None else f"{x:.2f}"


def _cell(s: dict[str, Any], has_base: bool) -> str:
    if s["mean"] is None:
        return DASH
    text = f"{s['mean']:.2f} ± {_num(s['std'])}"
    if s.get("ci95") is not None:
        text += f" [{s['mean'] - s['ci95']:.2f}, {s['mean'] + s['ci95']:.2f}]"
    if has_base and s["delta"] is not None:
        p = (s.get("paired") or {}).get("p")
        text += f" ({s['delta']:+.2f}" + (f", p={p:.2g})" if p is not None else ")")
    return text


def to_markdown(rep: dict[str, Any]) -> str:
    base = rep["baseline"]
    what = ("test metrics of the checkpoint chosen on validation" if rep["metric_set"] == "test"
            else f"'{rep['metric_set']}' metrics")
    note = f"Δ in brackets: difference of means vs baseline '{base}'" if base else \
        "no baseline (use --baseline LABEL for differences)"
    lines = [f"{what.capitalize()}, %: mean ± sample std over seeds (n runs) [95% confidence "
             f"interval of the mean]; {note}; p: paired t-test over the seeds both share.", ""]
    lines.append("| configuration | n | " + " | ".join(TITLES[m] for m in rep["metrics"]) + " |")
    lines.append("|---|---:|" + "---:|" * len(rep["metrics"]))
    for g in rep["groups"]:
        label = f"{g['label']} (baseline)" if g["baseline"] else g["label"]
        # The baseline's own differences are all zero: leave them out.
        cells = [_cell(g["metrics"][m], base is not None and not g["baseline"])
                 for m in rep["metrics"]]
        lines.append(f"| {label} | {g['n']} | " + " | ".join(cells) + " |")
    if rep["not_in_table"]:
        lines += ["", f"Not in the table ({len(rep['not_in_table'])} runs):"]
        for r in rep["not_in_table"]:
            why = f" — {r['error']}" if r["error"] else ""
            lines.append(f"- {r['name']} ({r['dir']}): {r['status']}{why}")
    return "\n".join(lines) + "\n"


def to_csv(rep: dict[str, Any]) -> str:
    cols = ["label", "n", "status", "runs", "error"]
    cols += [f"{m}_{k}" for m in rep["metrics"] for k in ("mean", "std", "delta")]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    for g in rep["groups"]:
        row: dict[str, Any] = {"label": g["label"], "n": g["n"],
                               "status": "baseline" if g["baseline"] else "ok",
                               "runs": " ".join(g["runs"]), "error": ""}
        for m in rep["metrics"]:
            for k in ("mean", "std", "delta"):
                v = g["metrics"][m][k]
                row[f"{m}_{k}"] = "" if v is None else repr(v)
        w.writerow(row)
    for r in rep["not_in_table"]:  # same columns, empty metrics: a CSV reader sees them too
        w.writerow({"label": r["label"] or "", "n": 0, "status": r["status"], "runs": r["name"],
                    "error": r["error"] or ""})
    return buf.getvalue()


def to_json(rep: dict[str, Any]) -> str:
    return json.dumps(rep, indent=2) + "\n"


FORMATS = {"md": to_markdown, "csv": to_csv, "json": to_json}


# ---------------------------------------------------------------- command line

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="+", metavar="RUN_OR_SWEEP_DIR",
                        help="run directories, sweep directories, or directories holding them")
    parser.add_argument("--baseline", metavar="LABEL",
                        help="row the differences are taken against (default: the one "
                             "configuration with no remedy, if there is exactly one)")
    parser.add_argument("--format", choices=sorted(FORMATS), default="md")
    parser.add_argument("--out", metavar="FILE", help="write the report here (default: stdout)")
    parser.add_argument("--plots", metavar="DIR", help="write PNG plots to this directory")
    parser.add_argument("--metric-set", choices=["test", "test_last"], default="test",
                        help="test: checkpoint chosen on validation (default); "
                             "test_last: last epoch")


def run(args: argparse.Namespace) -> int:
    rep = build_report(args.runs, metric_set=args.metric_set, baseline=args.baseline)
    text = FORMATS[args.format](rep)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        print(f"wrote {out}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    if args.plots:
        from imbal.study.plots import write_plots

        for path in write_plots(rep, Path(args.plots)):
            print(f"wrote {path}", file=sys.stderr)
    return 0
