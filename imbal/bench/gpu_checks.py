"""The checks of `scripts/gpu_check.sh` (imbal.bench.gpu_check), each through imbal's own code
paths: build_setup, the stage's Trainer step (train_epoch), `imbal.training.run.train` for the
stop-and-resume check. Data: random CIFAR-shaped images with the long-tail table's class
counts, from a source registered only while the check runs (no files needed).

Each check returns a plain dict; `ok` says whether it passed. Figures that only mean something
on a GPU (sync guard, memory, fraction of peak) are reported as null on the CPU, where the
checks still run (the --tiny self-test) to exercise the same logic.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from imbal.errors import NonFiniteLoss

# Random CIFAR-shaped sources: name -> (train images a class, test images a class, size).
RANDOM_SOURCES = {"gpu_check_random": (5000, 1000, 32), "gpu_check_random_tiny": (30, 5, 16)}
CONFIG = Path(__file__).resolve().parents[2] / "configs" / "lt_cifar_resnet32.yaml"

# Dense (no sparsity) peak TFLOP/s of the tensor cores in float16/bfloat16, and float32 without
# tensor cores, from the vendors' data sheets (SXM parts unless named). First match wins.
PEAKS: list[tuple[str, float, float]] = [
    ("H200", 989.4, 66.9), ("H100 PCIe", 756.0, 51.2), ("H100 NVL", 835.0, 60.0),
    ("H100", 989.4, 66.9), ("GH200", 989.4, 66.9), ("A100", 312.0, 19.5), ("L40S", 362.1, 91.6),
    ("L40", 181.0, 90.5), ("L4", 121.0, 30.3), ("A10G", 70.0, 31.2), ("A10", 125.0, 31.2),
    ("V100", 125.0, 15.7), ("T4", 65.0, 8.1),
]


def peak_tflops(name: str | None, dtype: torch.dtype | None) -> float | None:
    """The table's peak for a GPU name and the step's autocast dtype; None: not in the table."""
    for key, half, single in PEAKS:
        if name and key.lower() in name.lower():
            return half if dtype in (torch.float16, torch.bfloat16) else single
    return None


@dataclass
class Options:
    device: str  # "cuda" or "cpu" (the --tiny self-test)
    tiny: bool
    tmp: Path

    @property
    def cuda(self) -> bool:
        return self.device.startswith("cuda")


def random_source(per_class: int, test_per_class: int, size: int) -> Callable[..., Any]:
    """A source builder of random uint8 3×size×size images, `per_class` of each of 10 classes;
    the long tail is cut by the config's imbalance, as for CIFAR-10. Built once per process."""
    from imbal.data.sources import Dataset, Split

    made: dict[str, Any] = {}

    def build(root: str, download: bool, image_size: int | None) -> Any:
        del root, download, image_size
        if not made:
            gen = torch.Generator().manual_seed(0)

            def split(n: int) -> Split:
                return Split(torch.randint(0, 256, (10 * n, 3, size, size), generator=gen,
                                           dtype=torch.uint8), torch.arange(10 * n) % 10)

            made["ds"] = Dataset("random-cifar-shaped", split(per_class), split(test_per_class),
                                 [f"c{i}" for i in range(10)])
        return made["ds"]

    return build


def source_name(tiny: bool) -> str:
    return "gpu_check_random_tiny" if tiny else "gpu_check_random"


def register_sources() -> None:
    """Register the random sources (a worker process of `imbal bench --gpu-table` does)."""
    from imbal.data.sources import SOURCES

    for name, (per_class, test, size) in RANDOM_SOURCES.items():
        if name not in SOURCES:
            SOURCES.register(name)(random_source(per_class, test, size))


@contextlib.contextmanager
def registered_source() -> Iterator[None]:
    """The random sources registered for the duration only (the registry is left as it was)."""
    from imbal import registry

    state = registry.snapshot()
    register_sources()
    try:
        yield
    finally:
        registry.restore(state)


def config(opts: Options, *sets: str) -> dict:
    """The long-tail table's config (ResNet-32, SGD, crop+flip, ratio 100) on the random source."""
    from imbal.config import load_config

    over = [f"data.source={source_name(opts.tiny)}", "data.root=.", f"train.device={opts.device}",
            "logging.progress=false", "logging.tensorboard=false", "eval.batch_size=1024"]
    if opts.tiny:  # 30 a class of 16x16, ratio 5: 30 ... 6, batches of 16, LeNet (a ResNet
        # takes ~0.1 s an image on a shared 2-core CPU)
        over += ["data.imbalance={kind: longtail, ratio: 5}", "train.batch_size=16",
                 "eval.batch_size=64", "model.backbone=lenet", "data.val_per_class=5"]
    return load_config(str(CONFIG), [*over, *sets])


def fresh_process_state() -> None:
    """Deterministic mode is process-wide and build_setup only ever turns it on."""
    torch.use_deterministic_algorithms(False)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def trainer_for(cfg: dict):
    from imbal.training.setup import build_setup
    from imbal.training.stage_kinds import enter_stage

    fresh_process_state()
    setup = build_setup(cfg, quiet=True)
    enter_stage(setup, 0, fresh=True)
    return setup


def epochs(cfg: dict, n: int, wrap: Callable | None = None) -> tuple[Any, list[dict]]:
    """n epochs of the real Trainer; `wrap(trainer)` may wrap its step first."""
    setup = trainer_for(cfg)
    if wrap is not None:
        wrap(setup.trainer)
    return setup, [setup.trainer.train_epoch(e) for e in range(n)]


def guarded(fn: Callable[[], Any]) -> dict:
    """Run a check; an exception becomes {ok: false, error: first line}."""
    t0 = time.perf_counter()
    try:
        out = fn()
    except Exception as err:  # a failing check is a finding, not a crash of the whole script
        text = str(err).strip().splitlines()
        out = {"ok": False, "error": f"{type(err).__name__}: {text[0][:300] if text else ''}"}
    out["seconds"] = round(time.perf_counter() - t0, 2)
    return out


def finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


# ---------------------------------------------------------------------- the checks

def check_amp(opts: Options, dtype: str) -> dict:
    if dtype == "float16" and not opts.cuda:
        return {"ok": None, "skipped": "float16 autocast needs CUDA"}
    try:
        _, stats = epochs(config(opts, f"train.amp={dtype}"), 2)
    except NonFiniteLoss as err:
        return {"ok": False, "error": str(err)}
    losses = [s["loss"] for s in stats]
    return {"ok": all(math.isfinite(v) for v in losses), "losses": [finite(v) for v in losses],
            "images_per_s": round(stats[-1]["images_per_s"], 1)}


def check_layout_compile(opts: Options) -> dict:
    """Images/s of the second epoch for channels_last and torch.compile on and off."""
    rows = {}
    for cl in (False, True):
        for comp in (False, True):
            key = f"channels_last={str(cl).lower()},compile={str(comp).lower()}"
            if comp and opts.tiny:
                rows[key] = {"skipped": "compiling takes minutes on a CPU (not in --tiny)"}
                continue
            _, stats = epochs(config(opts, f"train.channels_last={str(cl).lower()}",
                                     f"train.compile={str(comp).lower()}"), 2)
            rows[key] = {"images_per_s": round(stats[-1]["images_per_s"], 1),
                         "first_epoch_s": round(stats[0]["seconds"], 2)}
    return {"ok": True, "runs": rows}


def check_no_sync(opts: Options) -> dict:
    """Every training step under torch.cuda.set_sync_debug_mode("error"): a step that asks the
    host to wait for the GPU raises. Per autocast setting; the first offending call is kept."""
    out: dict[str, Any] = {}
    for amp in ("off", "bfloat16", "float16"):
        if amp == "float16" and not opts.cuda:
            out[amp] = {"skipped": "float16 autocast needs CUDA"}
            continue
        steps = {"n": 0}

        def wrap(tr, steps=steps) -> None:
            inner = tr._step

            def step(idx, s):
                if opts.cuda:
                    torch.cuda.set_sync_debug_mode("error")
                try:
                    inner(idx, s)
                finally:
                    if opts.cuda:
                        torch.cuda.set_sync_debug_mode("default")
                steps["n"] += 1

            tr._step = step

        try:
            epochs(config(opts, f'train.amp="{amp}"'), 1, wrap)
            out[amp] = {"steps_checked": steps["n"], "synchronising": False}
        except RuntimeError as err:
            out[amp] = {"steps_checked": steps["n"], "synchronising": True,
                        "error": str(err).strip().splitlines()[0][:300]}
    ran = [v for v in out.values() if "synchronising" in v]
    return {"ok": all(not v["synchronising"] for v in ran) if opts.cuda else None,
            "guard": "torch.cuda.set_sync_debug_mode('error')" if opts.cuda
            else "none on the CPU (the wrapper and step count are exercised only)", "amp": out}


def _weights(setup) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in setup.trainer.model.state_dict().items()}


def _max_diff(a: dict, b: dict) -> float:
    return max(((a[k].double() - b[k].double()).abs().max().item() if a[k].numel() else 0.0)
               for k in a)


def check_deterministic(opts: Options) -> dict:
    """Two identical runs of one epoch each, deterministic mode on and off: equal weights?"""
    out: dict[str, Any] = {}
    for det in (True, False):
        runs = [epochs(config(opts, f"train.deterministic={str(det).lower()}"), 1)
                for _ in range(2)]
        diff = _max_diff(_weights(runs[0][0]), _weights(runs[1][0]))
        out[f"deterministic={str(det).lower()}"] = {
            "identical": diff == 0.0, "max_abs_diff": diff,
            "images_per_s": round(runs[1][1][-1]["images_per_s"], 1)}
    fresh_process_state()
    return {"ok": out["deterministic=true"]["identical"], "runs": out}


@contextlib.contextmanager
def stop_after(global_step: int | None) -> Iterator[dict[str, int]]:
    """The Trainer sees SIGTERM after `global_step` steps, as if one had arrived (None: only
    count the steps). Yields the count."""
    import signal

    from imbal.training.trainer import Trainer

    real, count = Trainer._step, {"n": 0}

    def step(self, idx, s):
        real(self, idx, s)
        count["n"] += 1
        if count["n"] == global_step:
            self.stop.signum = signal.SIGTERM

    Trainer._step = step
    try:
        yield count
    finally:
        Trainer._step = real


def check_resume(opts: Options) -> dict:
    """`imbal train` for 2 epochs; again, stopped in the middle of epoch 2 and resumed: the
    same weights and the same results.json figures."""
    from imbal.config import load_config
    from imbal.training.run import train
    from imbal.training.runs import load_checkpoint
    from imbal.training.trainer import Interrupted

    sets = ["train.epochs=2", "train.schedule={name: cosine}"]
    fresh_process_state()
    with stop_after(None) as count:
        full = train(config(opts, *sets), out_dir=str(opts.tmp / "full"), quiet=True)
    per_epoch = count["n"] // 2
    fresh_process_state()
    with stop_after(per_epoch + per_epoch // 2), contextlib.suppress(Interrupted):
        train(config(opts, *sets), out_dir=str(opts.tmp / "cut"), quiet=True)
    cursor = load_checkpoint(opts.tmp / "cut" / "checkpoints" / "last.pt")["cursor"]
    fresh_process_state()
    resumed = train(load_config(str(opts.tmp / "cut" / "config.yaml")),
                    out_dir=str(opts.tmp / "cut"), quiet=True, resume=True)
    a = load_checkpoint(opts.tmp / "full" / "checkpoints" / "last.pt")["model"]
    b = load_checkpoint(opts.tmp / "cut" / "checkpoints" / "last.pt")["model"]
    diff = _max_diff(a, b)
    same = all(full[k] == resumed[k] for k in ("val", "test", "test_last", "best_epoch"))
    return {"ok": diff == 0.0 and same and cursor["step"] > 0,
            "stopped_at": {"epoch": int(cursor["epoch"]) + 1, "step": int(cursor["step"]),
                           "steps_per_epoch": per_epoch},
            "max_abs_weight_diff": diff, "same_results": same}


def check_sampler(opts: Options) -> dict:
    """The class-balanced sampler (remedy oversample) drawing on the training device: where its
    indices live, the class shares of one epoch's draw, the time per draw, an epoch trained."""
    setup, stats = epochs(config(opts, "remedy=[{name: oversample, mode: balanced}]"), 1)
    tr = setup.trainer
    sampler = tr.stage.sampler
    idx = sampler.epoch_indices(1, tr.step_generator)
    shares = torch.bincount(tr.targets[idx], minlength=10).double() / idx.numel()
    if opts.cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for e in range(5):
        sampler.epoch_indices(2 + e, tr.step_generator)
    if opts.cuda:
        torch.cuda.synchronize()
    worst = float((shares - 0.1).abs().max())
    on_device = idx.device.type == tr.device.type
    return {"ok": on_device and math.isfinite(stats[0]["loss"]) and worst < 0.05,
            "indices_on": str(idx.device), "draws": int(idx.numel()),
            "max_class_share_error": round(worst, 4),
            "draw_ms": round(1000 * (time.perf_counter() - t0) / 5, 3),
            "images_per_s": round(stats[0]["images_per_s"], 1)}


def check_flops(opts: Options, backbone: str, gpu_name: str | None) -> dict:
    """FLOPs of one training step counted by torch.utils.flop_counter.FlopCounterMode (forward
    and backward), images/s of the second epoch, and their product against the table's peak
    for the step's autocast dtype; the GPU's memory high-water mark of the run."""
    from torch.utils.flop_counter import FlopCounterMode

    counted: dict[str, float] = {}

    def wrap(tr) -> None:
        inner = tr._step

        def step(idx, s):
            if counted:
                return inner(idx, s)
            with FlopCounterMode(display=False) as fc:
                inner(idx, s)
            counted["per_image"] = fc.get_total_flops() / idx.numel()

        tr._step = step

    setup, stats = epochs(config(opts, f"model.backbone={backbone}"), 2, wrap)
    assert setup.cfg["model"]["backbone"] == backbone
    dtype = setup.trainer.amp_dtype
    ips = stats[-1]["images_per_s"]
    achieved = counted["per_image"] * ips
    peak = peak_tflops(gpu_name, dtype) if opts.cuda else None
    out = {"ok": True, "backbone": backbone, "autocast": str(dtype).replace("torch.", "") if dtype else "off",
           "gflop_per_image": round(counted["per_image"] / 1e9, 4),
           "images_per_s": round(ips, 1), "achieved_tflops": round(achieved / 1e12, 3),
           "peak_tflops": peak,
           "fraction_of_peak": round(achieved / (peak * 1e12), 4) if peak else None}
    if opts.cuda:
        out["max_memory_allocated_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
        out["max_memory_reserved_gib"] = round(torch.cuda.max_memory_reserved() / 2**30, 3)
    return out
