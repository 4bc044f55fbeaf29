"""Parts of `imbal bench` outside the training loops: sampler cost and the fixed cost of a run.

Sampler: imbal's ClassSampler (two vectorised draws) against torch's WeightedRandomSampler with
the same class-balanced per-sample weights, as a DataLoader consumes it (`list(sampler)`:
torch.multinomial, then one Python int per index), and the bare torch.multinomial inside it.

Fixed cost: `imbal train CONFIG` in a fresh Python process, timed by the parent from just
before the process is created to the moment the first training step has ended (a first step
pays for lazy imports and first-call allocations, so it belongs to the fixed cost). The child wraps a
few of imbal's functions to stamp the wall clock when each phase ends, so the report says where
the time goes (interpreter, import torch, the rest of the imports, config, data, ...).
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time

import torch

from imbal.errors import UserError

WRS_LIMIT = 2**24  # torch.multinomial refuses more categories than this


def longtail_targets(n: int, num_classes: int, ratio: float, gen: torch.Generator) -> torch.Tensor:
    """n labels, class i holding a share proportional to ratio^(-i/(C-1)), in random order."""
    share = ratio ** (-torch.arange(num_classes, dtype=torch.float64) / max(num_classes - 1, 1))
    counts = (share / share.sum() * n).floor().long()
    counts[0] += n - int(counts.sum())
    targets = torch.repeat_interleave(torch.arange(num_classes), counts)
    return targets[torch.randperm(n, generator=gen)]


def _time(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def bench_samplers(sizes: list[int], repeats: int, over_limit: int | None,
                   say=print, num_classes: int = 10, ratio: float = 100.0) -> dict:
    """Median seconds to draw one epoch of n indices, imbal vs WeightedRandomSampler."""
    from torch.utils.data import WeightedRandomSampler

    from imbal.remedies.samplers import ClassSampler, class_probabilities

    gen = torch.Generator().manual_seed(0)
    rows = []
    for n in sizes:
        targets = longtail_targets(n, num_classes, ratio, gen)
        counts = torch.bincount(targets, minlength=num_classes)
        sampler = ClassSampler(targets, class_probabilities(counts, "balanced"), n)
        weights = (1.0 / counts.double())[targets]
        wrs = WeightedRandomSampler(weights, n, replacement=True, generator=gen)
        draws = {"imbal": lambda s=sampler: s.epoch_indices(0, gen),
                 "wrs": lambda w=wrs: list(w),  # as a DataLoader consumes it: Python ints
                 "multinomial": lambda w=weights, n=n: torch.multinomial(w, n, True, generator=gen)}
        times: dict[str, list[float]] = {k: [] for k in draws}
        for draw in draws.values():  # untimed: first-call allocations and thread set-up
            draw()
        for _ in range(repeats):  # interleaved
            for k, draw in draws.items():
                times[k].append(_time(draw))
        med = {k: float(statistics.median(v)) for k, v in times.items()}
        rows.append({"n": n, "seconds": times, "median_s": med,
                     "speedup_vs_wrs": med["wrs"] / med["imbal"],
                     "speedup_vs_multinomial": med["multinomial"] / med["imbal"]})
        say(f"  sampler n={n:>10,}: imbal {med['imbal']:.4f}s  WRS {med['wrs']:.4f}s  "
            f"multinomial {med['multinomial']:.4f}s")
        del draws, sampler, wrs, weights, targets
    result = {"num_classes": num_classes, "ratio": ratio, "rows": rows}
    if over_limit is not None:
        result["over_limit"] = _over_limit(over_limit, num_classes, ratio, gen)
        say(f"  sampler n={over_limit:>10,}: {result['over_limit']}")
    return result


def _over_limit(n: int, num_classes: int, ratio: float, gen: torch.Generator) -> dict:
    """imbal at n > 2^24 draws normally; WeightedRandomSampler is refused by multinomial."""
    from torch.utils.data import WeightedRandomSampler

    from imbal.remedies.samplers import ClassSampler, class_probabilities

    targets = longtail_targets(n, num_classes, ratio, gen)
    counts = torch.bincount(targets, minlength=num_classes)
    sampler = ClassSampler(targets, class_probabilities(counts, "balanced"), n)
    t0 = time.perf_counter()
    idx = sampler.epoch_indices(0, gen)
    imbal_s = time.perf_counter() - t0
    drawn = torch.bincount(targets[idx], minlength=num_classes).double() / n
    out = {"n": n, "above_2_24": n > WRS_LIMIT, "imbal_s": imbal_s,
           "imbal_max_class_share_error": float((drawn - 1.0 / num_classes).abs().max())}
    weights = (1.0 / counts.double())[targets]
    try:
        next(iter(WeightedRandomSampler(weights, n, replacement=True, generator=gen)))
        out["wrs"] = "worked"
    except RuntimeError as err:
        out["wrs"] = "refused: " + str(err).strip().splitlines()[0]
    return out


# ---------------------------------------------------------------------- fixed cost of a run

CHILD = r"""
import json, os, sys, time
MARKS = [("python", time.time(), time.process_time())]
def mark(label):
    MARKS.append((label, time.time(), time.process_time()))
import torch
mark("import torch")
import imbal.cli, imbal.config, imbal.training.trainer, imbal.training.setup, imbal.training.run, imbal.training.runs
mark("import imbal")
def after(mod, name, label):
    fn = getattr(mod, name)
    def wrapped(*a, **k):
        out = fn(*a, **k)
        mark(label)
        return out
    setattr(mod, name, wrapped)
after(imbal.config, "load_config", "config")
after(imbal.training.run, "check_names", "checks")
after(imbal.training.setup, "prepare_data", "data")
after(imbal.training.setup, "build_plan", "plan")
after(imbal.training.setup, "build_model", "model")
after(imbal.training.run, "build_setup", "trainer")
after(imbal.training.run, "provenance", "provenance")
after(imbal.training.runs.EpochLog, "__init__", "epoch log")
step = imbal.training.trainer.Trainer._step
def first_step(self, idx, i):
    mark("to the first step")
    step(self, idx, i)
    mark("first step")
    sys.stdout.write(json.dumps(MARKS) + "\n")
    sys.stdout.flush()
    os._exit(0)
imbal.training.trainer.Trainer._step = first_step
sys.exit(imbal.cli.main(sys.argv[1:]))
"""


# A bare PyTorch script to the same point: import torch, a model, torch.optim.SGD, one step
# on a batch of random MNIST-sized images. ("import torch" alone is the floor under any script.)
FLOOR = r"""
import json, time
MARKS = [("python", time.time(), time.process_time())]
import torch
MARKS.append(("import torch", time.time(), time.process_time()))
model = torch.nn.Sequential(torch.nn.Conv2d(1, 6, 5), torch.nn.Flatten(), torch.nn.Linear(3456, 10))
opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
MARKS.append(("model + optimizer", time.time(), time.process_time()))
x, y = torch.randn(100, 1, 28, 28), torch.randint(0, 10, (100,))
torch.nn.functional.cross_entropy(model(x), y).backward()
opt.step()
MARKS.append(("first step", time.time(), time.process_time()))
print(json.dumps(MARKS), flush=True)
"""


def run_to_first_step(argv: list[str], env: dict | None = None, script: str = CHILD) -> dict:
    """Launch `python -c CHILD train ...`; seconds from launch to each phase's end."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-c", script, *argv], capture_output=True, text=True,
                          env=env, timeout=300)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("[[")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise UserError(f"bench: the start-up run failed (exit {proc.returncode}): {tail}")
    marks = json.loads(lines[-1])
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {**phases(t0, marks), "cpu_s": cpu}


def phases(t0: float, marks: list[list]) -> dict:
    """Marks (label, wall time and process CPU time at the end of that phase) -> wall and CPU
    seconds per phase and in total. The first phase, "python", is interpreter start-up up to
    the first line of the script (its CPU time is what the child had used by then)."""
    wall, cpu, prev, prev_cpu = {}, {}, t0, 0.0
    for label, t, c in marks:
        wall[label] = wall.get(label, 0.0) + (t - prev)
        cpu[label] = cpu.get(label, 0.0) + (c - prev_cpu)
        prev, prev_cpu = t, c
    return {"total_s": prev - t0, "phases_s": wall, "phases_cpu_s": cpu}


def bench_startup(config: str, overrides: list[str], repeats: int, out_dir: str,
                  say=print) -> dict:
    argv = ["train", config, "--out", out_dir, "--overwrite"]
    for o in overrides:
        argv += ["--set", o]
    env = dict(os.environ)
    run_to_first_step(argv, env)  # untimed: page cache, like any run after the first
    runs, floor = [], []
    for r in range(repeats):  # interleaved with the floor: a bare torch script's start-up
        runs.append(run_to_first_step(argv, env))
        floor.append(run_to_first_step([], env, FLOOR))
        say(f"  startup repeat {r + 1}/{repeats}: {runs[-1]['total_s']:.2f}s through the first step "
            f"(bare torch script {floor[-1]['total_s']:.2f}s)")
    labels = list(runs[0]["phases_s"])

    def med(key: str) -> dict:
        return {k: float(statistics.median(r[key].get(k, 0.0) for r in runs)) for k in labels}

    return {"command": "imbal " + " ".join(argv), "runs": runs,
            "median_total_s": float(statistics.median(r["total_s"] for r in runs)),
            "median_cpu_s": float(statistics.median(r["cpu_s"] for r in runs)),
            "median_phases_s": med("phases_s"), "median_phases_cpu_s": med("phases_cpu_s"),
            "floor": {"what": "python -c: import torch, a small nn.Sequential, torch.optim.SGD, "
                              "one step",
                      "runs": floor,
                      "median_total_s": float(statistics.median(f["total_s"] for f in floor)),
                      "median_phases_s": {k: float(statistics.median(f["phases_s"][k]
                                                                     for f in floor))
                                          for k in floor[0]["phases_s"]}}}
