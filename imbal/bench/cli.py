"""`imbal bench`: what imbal's runner costs beyond the model's own arithmetic (issue 6).

Prints a table and writes JSON (default ./bench-<date>.json) with
- training images/s, medians over interleaved repeats of whole epochs, for LeNet on MNIST and
  the small CNN on the CIFAR-10 JPEG folder: (a) a DataLoader over the torchvision Dataset with
  per-sample transforms (num_workers 0 and 2), (a') a DataLoader over in-memory tensors, (b) a
  bare loop over the uint8 tensor, (c) imbal's trainer through the fit loop (imbal/bench_loops.py);
- the class-balanced sampler against WeightedRandomSampler at 60k, 1M, 10M and > 2^24 draws;
- the fixed cost of `imbal train` through its first step, in fresh processes (imbal/bench_parts.py);
- the issue's targets, met or missed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

# No torch import at module level: `imbal` builds every subcommand's parser at start-up.
TARGETS = {"c_over_b": 0.95, "c_over_a_mnist": 2.0, "sampler_speedup": 7.0, "startup_s": 2.0}

def machine(device) -> dict:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
            else os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "device": str(device), "gpu": torch.cuda.get_device_name(device)
            if device.type == "cuda" else None, "torch": torch.__version__,
            "python": platform.python_version(), "platform": platform.platform(),
            "load_average_at_start": list(os.getloadavg()), "date": time.strftime("%Y-%m-%d %H:%M")}


def targets_met(result: dict) -> list[dict]:
    rows = []
    for key, w in result.get("throughput", {}).items():
        rows.append((f"{key}: imbal / bare loop", w["ratios"]["c_over_b"], TARGETS["c_over_b"]))
        if key == "mnist_lenet" and "c_over_a" in w["ratios"]:
            rows.append((f"{key}: imbal / DataLoader ({w['a_best']})", w["ratios"]["c_over_a"],
                         TARGETS["c_over_a_mnist"]))
    s = result.get("sampler")
    if s:
        worst = min(r["speedup_vs_wrs"] for r in s["rows"])
        rows.append(("sampler: slowest speed-up vs WeightedRandomSampler", worst,
                     TARGETS["sampler_speedup"]))
    out = [{"target": name, "value": v, "need": f">= {t}", "met": v >= t} for name, v, t in rows]
    if s and "over_limit" in s:
        ok = "refused" in s["over_limit"]["wrs"] and s["over_limit"]["above_2_24"]
        out.append({"target": "sampler: imbal draws above 2^24 where WeightedRandomSampler cannot",
                    "value": s["over_limit"]["n"], "need": f"> {2**24}", "met": ok})
    st = result.get("startup")
    if st:
        out.append({"target": "fixed cost of an MNIST run (s)", "value": st["median_total_s"],
                    "need": f"< {TARGETS['startup_s']}",
                    "met": st["median_total_s"] < TARGETS["startup_s"]})
    return out


def format_table(result: dict) -> str:
    m = result["machine"]
    lines = [f"imbal bench {m['date']}: {m['cpu']}, {m['cores']} cores, torch {m['torch']} "
             f"({m['torch_threads']} threads), device {m['device']}"
             + (f" ({m['gpu']})" if m["gpu"] else "")
             + f", repeats {result['settings']['repeats']}"
             + (" [quick]" if result["settings"]["quick"] else "")]
    tp = result.get("throughput", {})
    if tp:
        cols = ["a_w0", "a_w2", "a_tensor", "b", "c", "c_fit", "c_cl", "c_cl_bf16"]
        lines += ["", "training images/s (median; whole epochs; a=DataLoader per-sample, w=workers,"
                  " a_tensor=DataLoader over tensors, b=bare loop, c=imbal train_epoch in b's"
                  " memory format, c_fit=imbal whole fit epoch incl. eval; c_cl=imbal train_epoch"
                  " with channels_last, its CPU default; c_cl_bf16=also train.amp=bfloat16)",
                  f"{'workload':<18}" + "".join(f"{c:>10}" for c in cols)
                  + "".join(f"{r:>7}" for r in ("c/b", "c/a", "cl/b", "cl/a"))]
        for key, w in tp.items():
            med, ratios = w["median_images_per_s"], w["ratios"]
            cells = "".join(f"{med[c]:>10.0f}" if c in med else f"{'-':>10}" for c in cols)
            cells += "".join(f"{ratios[r]:>7.2f}" if r in ratios else f"{'-':>7}"
                             for r in ("c_over_b", "c_over_a", "c_cl_over_b", "c_cl_over_a"))
            lines.append(f"{key:<18}{cells}")
        lines += [f"  {key}: {w['describe']}" for key, w in tp.items()]
    s = result.get("sampler")
    if s:
        lines += ["", f"sampler: seconds to draw one epoch of class-balanced indices (median; "
                  f"{s['num_classes']} classes, long tail {s['ratio']:g}:1)",
                  f"{'n':>12}{'imbal':>10}{'WRS':>10}{'multinom.':>10}{'vs WRS':>9}{'vs mult.':>9}"]
        for r in s["rows"]:
            md = r["median_s"]
            lines.append(f"{r['n']:>12,}{md['imbal']:>10.4f}{md['wrs']:>10.4f}"
                         f"{md['multinomial']:>10.4f}{r['speedup_vs_wrs']:>8.1f}x"
                         f"{r['speedup_vs_multinomial']:>8.1f}x")
        if "over_limit" in s:
            o = s["over_limit"]
            lines.append(f"{o['n']:>12,}{o['imbal_s']:>10.4f}  WRS {o['wrs']}")
    st = result.get("startup")
    if st:
        cpu = st["median_phases_cpu_s"]
        parts = ", ".join(f"{k} {v:.2f}/{cpu[k]:.2f}" for k, v in st["median_phases_s"].items())
        lines += ["", f"fixed cost through the first training step: {st['median_total_s']:.2f}s wall "
                  f"(median; the child's CPU time to exit {st['median_cpu_s']:.2f}s)",
                  f"  {st['command']}", f"  phases, wall/CPU s: {parts}"]
        fl = st["floor"]
        lines.append(f"  floor, a bare torch script to the same point: {fl['median_total_s']:.2f}s ("
                     + ", ".join(f"{k} {v:.2f}" for k, v in fl["median_phases_s"].items()) + ")")
    quick = " (--quick: tiny epochs, 1 repeat; indicative only)" if result["settings"]["quick"] else ""
    lines += ["", f"targets{quick}:"] + [
        f"  [{'met' if t['met'] else 'MISSED'}] {t['target']}: "
        + (f"{t['value']:.2f}" if isinstance(t["value"], float) else f"{t['value']:,}")
        + f" (need {t['need']})" for t in result["targets"]]
    return "\n".join(lines)


# ---------------------------------------------------------------------- command line

PARTS = ("mnist", "cifar", "sampler", "startup")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true",
                   help="small subsets, 1 repeat, smaller samplers: a check in well under a minute")
    p.add_argument("--repeats", type=int, default=None, help="repeats (default 3; 1 with --quick)")
    p.add_argument("--only", default=",".join(PARTS),
                   help=f"comma-separated parts to run, from {','.join(PARTS)}")
    p.add_argument("--data", default=None, help="data root (default $IMBAL_DATA, else ./data)")
    p.add_argument("--workers", default="0,2", help="DataLoader num_workers to try for (a)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads for every loop (default: torch's choice)")
    p.add_argument("--out", default=None, help="JSON file (default ./bench-<date>.json)")
    g = p.add_argument_group("the long-tail table on GPUs (imbal/bench/gpu_table.py)")
    g.add_argument("--gpu-table", action="store_true",
                   help="the 18-run CIFAR-10-LT-100 table shortened to a few epochs a run, packed "
                        "onto the GPUs; prints images/s and the full table's extrapolated time")
    g.add_argument("--gpu-table-epochs", type=int, default=3,
                   help="epochs a run (default 3: 264 steps of ResNet-32 at batch 128)")
    g.add_argument("--devices", help="GPUs to use, e.g. 0,1 (default: every visible GPU)")
    g.add_argument("--per-device", type=int, help="runs at a time per GPU (default: estimated)")
    g.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    from imbal.data.sources import resolve_root
    from imbal.errors import UserError
    from imbal.training.setup import resolve_device

    if args.gpu_table:
        from imbal.bench import gpu_table

        return gpu_table.run(args)
    parts = [x.strip() for x in args.only.split(",") if x.strip()]
    bad = [x for x in parts if x not in PARTS]
    if bad:
        raise UserError(f"--only: unknown part(s) {bad}; choose from {', '.join(PARTS)}")
    try:
        workers = [int(w) for w in args.workers.split(",") if w.strip()]
    except ValueError:
        raise UserError(f"--workers must be integers like 0,2 (got {args.workers!r})") from None
    repeats = args.repeats or (1 if args.quick else 3)
    if repeats < 1:
        raise UserError("--repeats must be at least 1")
    root, device = resolve_root(args.data), resolve_device(args.device)
    if args.threads is not None:
        if args.threads < 1:
            raise UserError("--threads must be at least 1")
        import torch

        torch.set_num_threads(args.threads)
    out = Path(args.out or f"bench-{time.strftime('%Y%m%d-%H%M%S')}.json")
    result = {"machine": machine(device), "settings": {"quick": args.quick, "repeats": repeats,
                                                        "workers": workers, "data": root}}
    say = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    with tempfile.TemporaryDirectory(prefix="imbal-bench-") as tmp:
        result.update(_run_parts(parts, root, device, workers, repeats, args.quick, Path(tmp), say))
    result["targets"] = targets_met(result)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(format_table(result))
    print(f"\nwrote {out}")
    return 0


def _run_parts(parts, root, device, workers, repeats, quick, tmp: Path, say) -> dict:
    from imbal.bench import loops as bench_loops
    from imbal.bench import parts as bench_parts

    res: dict = {}
    if "startup" in parts:
        say("fixed cost of a run (fresh processes) ...")
        res["startup"] = bench_parts.bench_startup(
            str(bench_loops.CONFIGS / "mnist_lenet_step.yaml"), [f"data.root={root}", "train.device=cpu"],
            repeats if not quick else 1, str(tmp / "startup"), say)
    if "sampler" in parts:
        say("samplers ...")
        sizes = [60_000, 1_000_000] if quick else [60_000, 1_000_000, 10_000_000]
        res["sampler"] = bench_parts.bench_samplers(sizes, repeats, 2**24 + 2**20, say)
    makers = {"mnist": bench_loops.mnist_workload, "cifar": bench_loops.cifar_workload}
    for key in [p for p in parts if p in makers]:
        say(f"{key}: building the loops ...")
        w = makers[key](root, quick, workers=workers, device=device, tmp=tmp)
        say(f"{key}: {w.describe}")
        res.setdefault("throughput", {})[w.key] = bench_loops.measure(w, repeats, say)
    return res
