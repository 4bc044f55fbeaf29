"""`scripts/gpu_check.sh` (python -m imbal.bench.gpu_check): imbal's CUDA path on one GPU.

Writes a JSON summary (default gpu-check-<date>.json) with, through imbal's own build_setup and
Trainer step on the long-tail table's config (ResNet-32, batch 128, crop+flip, SGD, random
CIFAR-shaped images with CIFAR-10-LT-100's class counts):
- amp: float16 and bfloat16 autocast, two epochs each with finite losses;
- layout_compile: channels_last and train.compile on and off, images/s;
- no_sync: every training step under torch.cuda.set_sync_debug_mode("error"), per autocast;
- deterministic: two identical runs with train.deterministic on, and off: equal weights?
- resume: `imbal train` stopped mid-epoch and resumed equals the uninterrupted run;
- sampler: the class-balanced sampler drawing on the device;
- flops_resnet18 / flops_resnet32: FLOPs of a step (FlopCounterMode) x images/s against the
  GPU's peak (imbal.bench.gpu_checks.PEAKS; null for a GPU not in the table), with the
  memory high-water mark.
Meant to finish in well under 8 minutes on one data-centre GPU; checks past --budget-s are
skipped and say so. Without CUDA it refuses in one line (exit 2). `--device cpu --tiny` (hidden)
runs every check's logic on a few images on the CPU for the tests; its figures claim nothing.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REFUSAL = "gpu_check: CUDA is not available here ({why}); run it on a machine with an NVIDIA GPU"


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="scripts/gpu_check.sh", description=__doc__.splitlines()[0])
    p.add_argument("--out", help="JSON summary (default gpu-check-<date>.json)")
    p.add_argument("--budget-s", type=float, default=420.0,
                   help="skip the checks not started within this many seconds (default 420)")
    p.add_argument("--only", help="comma-separated checks to run (default: all)")
    p.add_argument("--device", default="cuda", help=argparse.SUPPRESS)
    p.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def machine(cuda: bool) -> dict[str, Any]:
    import torch

    out = {"torch": torch.__version__, "cuda_runtime": torch.version.cuda,
           "python": platform.python_version(), "host": platform.node(),
           "date": time.strftime("%Y-%m-%d %H:%M")}
    if cuda:
        free, total = torch.cuda.mem_get_info()
        props = torch.cuda.get_device_properties(0)
        out.update(gpu=torch.cuda.get_device_name(0), gpu_memory_gib=round(total / 2**30, 1),
                   gpu_free_gib_at_start=round(free / 2**30, 1),
                   capability=f"{props.major}.{props.minor}", sms=props.multi_processor_count)
    return out


def checks(opts, gpu: str | None) -> dict[str, Callable[[], dict]]:
    from imbal.bench import gpu_checks as c

    small, big = ("lenet", "lenet") if opts is not None and opts.tiny else ("resnet32", "resnet18")
    return {
        "amp_float16": lambda: c.check_amp(opts, "float16"),
        "amp_bfloat16": lambda: c.check_amp(opts, "bfloat16"),
        "layout_compile": lambda: c.check_layout_compile(opts),
        "no_sync": lambda: c.check_no_sync(opts),
        "deterministic": lambda: c.check_deterministic(opts),
        "resume": lambda: c.check_resume(opts),
        "sampler": lambda: c.check_sampler(opts),
        "flops_resnet32": lambda: c.check_flops(opts, small, gpu),  # --tiny: LeNet
        "flops_resnet18": lambda: c.check_flops(opts, big, gpu),  # --tiny: LeNet
    }


def run_checks(opts, gpu: str | None, only: list[str] | None, budget_s: float,
               say: Callable[[str], None], save: Callable[[dict], None]) -> dict[str, dict]:
    """Each check in turn, the summary saved after each (a killed check leaves the others)."""
    from imbal.bench.gpu_checks import guarded, registered_source

    table = checks(opts, gpu)
    t0, out = time.perf_counter(), {}
    with registered_source():
        for name, fn in table.items():
            if only and name not in only:
                continue
            if time.perf_counter() - t0 > budget_s:
                out[name] = {"ok": None, "skipped": f"past the {budget_s:.0f} s budget"}
            else:
                out[name] = guarded(fn)
            say(f"{name}: {json.dumps(out[name])}")
            save(out)
    return out


def summary(result: dict[str, dict]) -> dict[str, Any]:
    failed = [k for k, v in result.items() if v.get("ok") is False]
    memory = result.get("flops_resnet32", {})
    return {"passed": not failed, "failed": failed,
            "skipped": [k for k, v in result.items() if v.get("ok") is None],
            "memory_high_water_gib": memory.get("max_memory_allocated_gib")}


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    import torch

    cuda = args.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        why = (f"torch {torch.__version__} is a CPU-only build" if torch.version.cuda is None
               else f"torch {torch.__version__} built for CUDA {torch.version.cuda} finds no GPU")
        print(REFUSAL.format(why=why), file=sys.stderr)
        return 2
    from imbal.bench.gpu_checks import Options
    from imbal.training.runs import atomic_write_json

    names = list(checks(None, None))
    only = [x.strip() for x in args.only.split(",")] if args.only else None
    bad = [x for x in only or [] if x not in names]
    if bad:
        print(f"gpu_check: unknown check(s) {', '.join(bad)}; choose from {', '.join(names)}",
              file=sys.stderr)
        return 2
    out = Path(args.out or f"gpu-check-{time.strftime('%Y%m%d-%H%M%S')}.json")
    info = machine(cuda)
    say = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    say(f"gpu_check on {info.get('gpu', 'the CPU (self-test; no GPU figures)')}")
    t0 = time.perf_counter()
    doc: dict[str, Any] = {}

    def save(result: dict[str, dict]) -> None:
        doc.update(machine=info, settings={"device": args.device, "tiny": args.tiny,
                                           "budget_s": args.budget_s},
                   wall_s=round(time.perf_counter() - t0, 1), summary=summary(result),
                   checks=result)
        json.dumps(doc, allow_nan=False)  # no NaN/Infinity in the file
        atomic_write_json(out, doc)

    with tempfile.TemporaryDirectory(prefix="imbal-gpu-check-") as tmp:
        opts = Options(device=args.device, tiny=args.tiny, tmp=Path(tmp))
        save(run_checks(opts, info.get("gpu"), only, args.budget_s, say, save))
    print(f"{'passed' if doc['summary']['passed'] else 'FAILED: ' + ', '.join(doc['summary']['failed'])}"
          f" in {doc['wall_s']} s; wrote {out}")
    return 0 if doc["summary"]["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
