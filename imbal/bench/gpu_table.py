"""`imbal bench --gpu-table`: a shortened CIFAR-10-LT-100 table on the GPUs, extrapolated.

The published table (scripts/study_lt.sh) is 6 methods x 3 seeds of ResNet-32, 200 epochs each,
on CIFAR-10 with a long tail of ratio 100 (12,406 images; 11,165 train after imbal's 10%
validation split). This runs the same 18 runs (configs/lt_cifar_resnet32.yaml, the same remedies)
for --gpu-table-epochs epochs (default 3: 264 steps a run) as one `imbal sweep`, packed K per GPU
(imbal.study.placement: --devices, --per-device), on random images with CIFAR-10's shape and the
long tail's class counts (no data needed). Per run: training images/s (median over the epochs
after the first), the steady time of an epoch (training + validation + test + checkpoint: the
gaps between epoch ends), and the fixed rest (start-up, first-epoch warm-up, final evaluation).
The full table's wall time is extrapolated as the makespan of 18 runs of
fixed + 200 x epoch seconds each on the sweep's worker slots (placement.schedule), against the
10-minute goal. Epoch times are measured with the slots as busy as in the full table's first
wave, so contention is included.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from imbal.errors import UserError

METHODS: list[tuple[str, list[Any]]] = [
    ("ce", []), ("focal", [{"name": "focal", "gamma": 1.0}]),
    ("cb", [{"name": "class_weights", "beta": 0.9999}]),
    ("ldam-drw", [{"name": "ldam", "drw_epoch": 0.8}]),
    ("balanced_softmax", [{"name": "balanced_softmax"}]),
    ("logit_adjust", [{"name": "logit_adjust", "tau": 1.0}]),
]
FULL_EPOCHS, FULL_SEEDS, GOAL_S = 200, 3, 600.0
TINY_METHODS = ("ce", "ldam-drw")  # the CPU self-test: 2 runs, 1 seed
TIMES = "bench_epochs.json"


def process_start() -> float | None:
    """When this process started (Linux /proc; to about a second), so a run's fixed cost
    includes the interpreter and its imports; None elsewhere."""
    import os

    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        boot = next(int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime "))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def train_random(cfg: dict, *, out_dir: str, overwrite: bool = False, quiet: bool = True) -> dict:
    """The sweep worker's train_fn: `imbal train` with the random sources registered and the
    wall clock stamped at the end of every epoch (bench_epochs.json in the run directory)."""
    from imbal.bench.gpu_checks import register_sources
    from imbal.training import loop
    from imbal.training.run import train
    from imbal.training.runs import atomic_write_json

    register_sources()
    ends: list[float] = []
    inner = loop._epoch

    def timed(*a, **k):
        row = inner(*a, **k)
        ends.append(time.time())
        return row

    loop._epoch = timed  # this worker process trains this one run, then exits
    t0 = min(time.time(), process_start() or time.time())
    res = train(cfg, out_dir=out_dir, overwrite=overwrite, quiet=quiet)
    atomic_write_json(Path(out_dir) / TIMES, {"start": t0, "epoch_ends": ends, "end": time.time()})
    return res


def sweep_file(folder: Path, *, epochs: int, tiny: bool) -> Path:
    from imbal.bench.gpu_checks import CONFIG, source_name

    common: dict[str, Any] = {"data.source": source_name(tiny), "data.root": ".",
                              "train.epochs": epochs, "logging.tensorboard": False,
                              "logging.progress": False}
    if tiny:  # the CPU self-test: LeNet on 16x16 images, batches of 16
        common.update({"model.backbone": "lenet", "train.batch_size": 16,
                       "data.imbalance": {"kind": "longtail", "ratio": 5}, "data.val_per_class": 5,
                       "train.device": "cpu"})
    drw = 0.8 if epochs >= 5 else 0.5  # DRW must start within the short run
    methods = [(n, [{**x, "drw_epoch": drw} if x.get("name") == "ldam" else x for x in r])
               for n, r in METHODS if not tiny or n in TINY_METHODS]
    spec = {"name": "gpu_table", "base": str(CONFIG), "set": common,
            "runs": [{"name": n, "set": {"remedy": r}} for n, r in methods],
            "seeds": {"train": list(range(1 if tiny else FULL_SEEDS))}, "out": str(folder / "runs")}
    path = folder / "gpu_table.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def per_run(run_dir: Path, full_epochs: int) -> dict[str, Any]:
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x]
    t = json.loads((run_dir / TIMES).read_text())
    ends, n = t["epoch_ends"], len(t["epoch_ends"])
    gaps = [b - a for a, b in zip(ends, ends[1:], strict=False)]
    epoch_s = statistics.median(gaps) if gaps else ends[0] - t["start"]
    fixed = (t["end"] - t["start"]) - n * epoch_s
    steady = rows[1:] or rows
    return {"images_per_s": round(statistics.median(r["train"]["images_per_s"] for r in steady), 1),
            "train_images": sum(r["train"]["images"] for r in rows), "epochs": n,
            "epoch_s": round(epoch_s, 3), "fixed_s": round(fixed, 2),
            "wall_s": round(t["end"] - t["start"], 2),
            "full_run_s": round(fixed + full_epochs * epoch_s, 1)}


def extrapolate(runs: dict[str, dict], workers: int, seeds: int) -> dict[str, Any]:
    """The full table's makespan on `workers` slots: every run repeated up to FULL_SEEDS seeds."""
    from imbal.study.placement import Slot, schedule

    durations = [r["full_run_s"] for r in runs.values()] * (FULL_SEEDS // seeds)
    durations *= len(METHODS) * FULL_SEEDS // len(durations)  # the --tiny self-test: 2 of 18
    ends = schedule(durations, [Slot(i, None, 1) for i in range(workers)])
    wall = max(end for _, _, end in ends)
    return {"runs": len(durations), "workers": workers, "wall_s": round(wall, 1),
            "goal_s": GOAL_S, "met": wall <= GOAL_S}


def run(args: Any, say=print) -> int:
    from imbal.bench.gpu_checks import registered_source
    from imbal.study.devices import cuda_available
    from imbal.study.sweep import run_sweep
    from imbal.training.runs import atomic_write_json

    if not args.tiny and not cuda_available():
        raise UserError("--gpu-table needs CUDA, and no GPU is visible here")
    if args.gpu_table_epochs < 2:
        raise UserError("--gpu-table-epochs must be at least 2 (the first epoch is warm-up)")
    out = Path(args.out or f"bench-gpu-table-{time.strftime('%Y%m%d-%H%M%S')}.json")
    with tempfile.TemporaryDirectory(prefix="imbal-gpu-table-") as tmp, registered_source():
        path = sweep_file(Path(tmp), epochs=args.gpu_table_epochs, tiny=args.tiny)
        t0 = time.time()
        code = run_sweep(path, devices=args.devices, per_device=args.per_device,
                         workers=2 if args.tiny else None,
                         train_fn="imbal.bench.gpu_table:train_random", say=say)
        wall = time.time() - t0
        if code != 0:
            raise UserError("the shortened table had failed runs (listed above)")
        folder = Path(tmp) / "runs"
        summary = json.loads((folder / "summary.json").read_text())
        order = [r["name"] for r in json.loads((folder / "sweep.json").read_text())["runs"]]
        runs = {n: {**per_run(folder / n, FULL_EPOCHS), "slot": summary["slots"].get(n)}
                for n in order if n in summary["done"]}  # the table's order, not the finishing one
    seeds = 1 if args.tiny else FULL_SEEDS
    images = sum(r["train_images"] for r in runs.values())
    doc = {"settings": {"epochs": args.gpu_table_epochs, "tiny": args.tiny,
                        "devices": args.devices, "per_device": args.per_device},
           "sweep": {"how": summary["how"], "wall_s": round(wall, 1), "train_images": images,
                     "aggregate_images_per_s": round(images / wall, 1)},
           "runs": runs, "full_table": extrapolate(runs, summary["workers"], seeds)}
    json.dumps(doc, allow_nan=False)
    atomic_write_json(out, doc)
    print(format_table(doc))
    print(f"\nwrote {out}")
    return 0


def format_table(doc: dict) -> str:
    s, f = doc["sweep"], doc["full_table"]
    lines = [f"shortened CIFAR-10-LT-100 table: {len(doc['runs'])} runs x "
             f"{doc['settings']['epochs']} epochs ({s['how']})",
             f"{'run':<26}{'slot':>8}{'img/s':>10}{'epoch s':>9}{'fixed s':>9}{'200-ep. s':>11}"]
    for name, r in doc["runs"].items():
        lines.append(f"{name:<26}{r['slot'] or '-':>8}{r['images_per_s']:>10.0f}"
                     f"{r['epoch_s']:>9.2f}{r['fixed_s']:>9.1f}{r['full_run_s']:>11.0f}")
    lines += [f"aggregate: {s['aggregate_images_per_s']:.0f} training images/s over the sweep's "
              f"{s['wall_s']:.0f} s",
              f"full table ({f['runs']} runs x {FULL_EPOCHS} epochs on {f['workers']} workers), "
              f"extrapolated: {f['wall_s'] / 60:.1f} min; goal {f['goal_s'] / 60:.0f} min: "
              f"{'met' if f['met'] else 'MISSED'}"]
    return "\n".join(lines)
