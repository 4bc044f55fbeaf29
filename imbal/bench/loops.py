"""Training-throughput loops of `imbal bench` (issue 6).

One process, loops interleaved (a0 a2 a' b c, a0 a2 a' b c, ...), whole
epochs, medians over repeats; every loop trains the same model, batch size and optimizer:
  (a)  DataLoader over the torchvision Dataset with per-sample ToTensor + Normalize (MNIST) or
       ImageFolder with a PIL decode per sample (CIFAR-10 JPEG); num_workers 0 and 2, the
       faster one is "(a)";
  (a') DataLoader over a TensorDataset of the decoded uint8 tensors, normalised per batch;
  (b)  a bare loop over the uint8 tensor in memory: index, uint8 -> float normalise, forward,
       backward, step: the model's own limit on this machine;
Every loop's optimizer is the torch.optim one (c) trains with, built from the same config
section by imbal.training.optim.build_optimizer (foreach on the CPU, fused on CUDA), so the
loops differ in what feeds the step, never in the update.
  (c)  imbal as a user runs it: build_setup + the fit loop's epoch. "c" is Trainer.train_epoch
       (progress bar, metrics); "c fit" is the whole fit epoch (also evaluates val, and test
       only with eval.test_every, writes metrics.jsonl, TensorBoard and the checkpoint).
"""

from __future__ import annotations

import contextlib
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@dataclass
class Loop:
    """One way to train one epoch: `epoch()` returns (images trained, {label: seconds})."""

    name: str
    epoch: Callable[[], tuple[int, dict[str, float]]]


@dataclass
class Workload:
    key: str
    describe: str
    images: int
    loops: list[Loop] = field(default_factory=list)
    close: Callable[[], None] = lambda: None


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(device: torch.device, fn: Callable[[], int], label: str) -> tuple[int, dict[str, float]]:
    _sync(device)
    t0 = time.perf_counter()
    n = fn()
    _sync(device)
    return n, {label: time.perf_counter() - t0}


def _sgd_step(model, opt, x: torch.Tensor, y: torch.Tensor) -> None:
    loss = F.cross_entropy(model(x), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def bare_loop(model, opt, images, targets, mean, std, batch_size, device, gen) -> Loop:
    """(b): the uint8 tensor on the device; per batch: gather, normalise, step."""
    images, targets = images.to(device), targets.to(device)
    mean = mean.to(device).view(1, -1, 1, 1) * 255.0
    inv_std = 1.0 / (std.to(device).view(1, -1, 1, 1) * 255.0)
    n = targets.numel()
    stop = n - 1 if n % batch_size == 1 else n  # as imbal: no trailing batch of one (BatchNorm)

    def run() -> int:
        model.train()
        order = torch.randperm(n, generator=gen).to(device)[:stop]
        for idx in order.split(batch_size):
            _sgd_step(model, opt, (images[idx].float() - mean) * inv_std, targets[idx])
        return stop

    return Loop("b", lambda: _timed(device, run, "b"))


def loader_loop(name, model, opt, loader, device, mean=None, std=None) -> Loop:
    """(a)/(a'): whatever the DataLoader yields, to the device, (normalised if uint8), step."""
    if mean is not None:
        mean = mean.to(device).view(1, -1, 1, 1) * 255.0
        inv_std = 1.0 / (std.to(device).view(1, -1, 1, 1) * 255.0)

    def run() -> int:
        model.train()
        n = 0
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if mean is not None:
                x = (x.float() - mean) * inv_std
            _sgd_step(model, opt, x, y)
            n += y.numel()
        return n

    return Loop(name, lambda: _timed(device, run, name))


class ImbalLoop:
    """(c): build_setup as `imbal train` does, then fit's own epoch function per call."""

    def __init__(self, cfg: dict, run_dir: Path, label: str = "c"):
        from imbal.training import loop as fit
        from imbal.training.runs import EpochLog
        from imbal.training.setup import build_setup
        from imbal.training.stage_kinds import enter_stage

        self.fit, self.label = fit, label
        self.before = torch.are_deterministic_algorithms_enabled()  # for the other loops
        self.setup = build_setup(cfg, quiet=False)
        enter_stage(self.setup, 0, fresh=True)  # a one-stage config: its only stage
        self.deterministic = torch.are_deterministic_algorithms_enabled()
        torch.use_deterministic_algorithms(self.before)  # process-wide: set around our epochs
        self.run_dir = run_dir
        self.log = EpochLog(run_dir, cfg["logging"]["tensorboard"])
        tr = self.setup.trainer
        inner, self.train_s = tr.train_epoch, 0.0

        def timed_train_epoch(*a, **k):
            _sync(tr.device)
            t0 = time.perf_counter()
            out = inner(*a, **k)
            _sync(tr.device)
            self.train_s = time.perf_counter() - t0
            return out

        tr.train_epoch = timed_train_epoch  # fit._epoch calls it as the user's run would

    def epoch(self) -> tuple[int, dict[str, float]]:
        tr = self.setup.trainer
        torch.use_deterministic_algorithms(self.deterministic, warn_only=True)
        t0 = time.perf_counter()
        # The progress bar and the epoch line are drawn as for a user, into /dev/null.
        with open(os.devnull, "w") as null, contextlib.redirect_stderr(null):
            row = self.fit._epoch(self.setup, tr.cursor.epoch, self.run_dir / "checkpoints",
                                  self.log, quiet=False)
        total = time.perf_counter() - t0
        torch.use_deterministic_algorithms(self.before)
        n = round(row["train"]["images_per_s"] * row["train"]["seconds"])
        if self.label != "c":  # a variant (e.g. channels_last): its train_epoch only
            return n, {self.label: self.train_s}
        return n, {"c": self.train_s, "c_fit": total}


def _same_model(setup, device: torch.device):
    """A fresh model and the run's own torch.optim optimizer for it (like-for-like with c)."""
    from imbal.models import build_model
    from imbal.training.optim import build_optimizer

    cfg, data = setup.cfg, setup.data
    model = build_model(cfg["model"]["backbone"], in_channels=data.channels,
                        num_classes=data.num_classes, image_size=data.image_size,
                        **cfg["model"]["params"]).to(device)
    return model, build_optimizer(model.parameters(), cfg["train"]["optimizer"])


def build_workload(key: str, cfg: dict, dataset_a: Callable | None, *, workers: list[int],
                   device: torch.device, tmp: Path, variants: dict | None = None) -> Workload:
    """The loops of one workload. `dataset_a(n, mean, std, gen)` is the torchvision Dataset a
    user would write for (a), cut to the n images imbal trains on (None: no (a) loops)."""
    from torch.utils.data import DataLoader, TensorDataset

    imbal = ImbalLoop(cfg, tmp / key)
    setup = imbal.setup
    images, targets = setup.data.train.images, setup.data.train.targets
    stats = setup.trainer.normalizer.state()  # the same constants in every loop
    mean, std = torch.tensor(stats["mean"]), torch.tensor(stats["std"])
    bs, n = cfg["train"]["batch_size"], targets.numel()
    gen = torch.Generator().manual_seed(0)
    loops = []
    if dataset_a is not None:
        ds = dataset_a(n, mean.tolist(), std.tolist(), gen)
        for w in workers:
            m, o = _same_model(setup, device)
            dl = DataLoader(ds, batch_size=bs, shuffle=True, num_workers=w, generator=gen,
                            pin_memory=device.type == "cuda")
            loops.append(loader_loop(f"a_w{w}", m, o, dl, device))
    m, o = _same_model(setup, device)
    dl = DataLoader(TensorDataset(images, targets), batch_size=bs, shuffle=True, generator=gen,
                    pin_memory=device.type == "cuda")
    loops.append(loader_loop("a_tensor", m, o, dl, device, mean, std))
    m, o = _same_model(setup, device)
    bare = bare_loop(m, o, images, targets, mean, std, bs, device, gen)
    loops += [bare, Loop("c", imbal.epoch)]
    closers = [imbal.log.close]
    for label, vcfg in (variants or {}).items():  # imbal with speed options a user can set
        v = ImbalLoop(vcfg, tmp / f"{key}-{label}", label)
        loops.append(Loop(label, v.epoch))
        closers.append(v.log.close)
    _warm_up(m, o, images, targets, mean, std, bs, device)
    opt = cfg["train"]["optimizer"]
    text = (f"{cfg['model']['backbone']} on {setup.data.name} ({n} train images, batch {bs}, "
            f"{opt['name']} lr {opt['lr']})")
    return Workload(key, text, n, loops, lambda: [close() for close in closers])


def _warm_up(model, opt, images, targets, mean, std, bs, device) -> None:
    """A few steps so one-time kernel setup is not charged to the first loop measured."""
    x = images[: 3 * bs].to(device)
    y = targets[: 3 * bs].to(device)
    m, s = mean.to(device).view(1, -1, 1, 1) * 255, std.to(device).view(1, -1, 1, 1) * 255
    for part in range(3):
        sl = slice(part * bs, (part + 1) * bs)
        _sgd_step(model, opt, (x[sl].float() - m) / s, y[sl])


def median(xs: list[float]) -> float:
    return float(statistics.median(xs))


def measure(workload: Workload, repeats: int, say: Callable[[str], None] = print) -> dict:
    """Run the loops interleaved `repeats` times; images/s per repeat, medians, ratios."""
    per: dict[str, list[float]] = {}
    for r in range(repeats):
        # ABBA order (a b c, c b a, ...): a slow drift in the machine's load hits every loop
        # alike instead of always the one measured last.
        for loop in workload.loops if r % 2 == 0 else workload.loops[::-1]:
            n, seconds = loop.epoch()
            for label, s in seconds.items():
                per.setdefault(label, []).append(n / s)
                say(f"  {workload.key} repeat {r + 1}/{repeats} {label:>8}: {n / s:9.0f} img/s")
    workload.close()
    return summarize(workload.describe, workload.images, per)


def summarize(describe: str, images: int, per: dict[str, list[float]]) -> dict:
    med = {k: median(v) for k, v in per.items()}
    a_keys = [k for k in med if k.startswith("a_w")]
    a_best = max(a_keys, key=med.get) if a_keys else None
    ratios = {"c_over_b": med["c"] / med["b"], "c_fit_over_b": med["c_fit"] / med["b"]}
    ratios.update({f"{k}_over_b": med[k] / med["b"] for k in med if k.startswith("c_cl")})
    if a_best:
        ratios.update({f"{k}_over_a": med[k] / med[a_best] for k in med if k.startswith("c_cl")})
    # A check on the ratio of medians: the median of each repeat's own c/b (same minute).
    ratios["paired_c_over_b"] = median([c / b for c, b in zip(per["c"], per["b"], strict=True)])
    if a_best:
        ratios["c_over_a"] = med["c"] / med[a_best]
        ratios["b_over_a"] = med["b"] / med[a_best]
    return {"describe": describe, "images_per_epoch": images, "a_best": a_best,
            "images_per_s": per, "median_images_per_s": med, "ratios": ratios}


# ---------------------------------------------------------------------- the two real workloads


# (c) itself runs in the bare loop's memory format, so that c/b compares like with like; its
# variants are imbal with options that pay on a CPU: channels_last (the CPU default since it
# was measured here), then also bfloat16 autocast (opt-in: it changes the numbers).
LIKE_B = ["train.channels_last=false"]
VARIANTS = {"c_cl": ["train.channels_last=true"],
            "c_cl_bf16": ["train.channels_last=true", "train.amp=bfloat16"]}
QUICK = ["data.subset.test_per_class=50"]  # --quick: a fit epoch's evaluation stays small


def _random_subset(ds, n: int, gen: torch.Generator):
    from torch.utils.data import Subset

    return Subset(ds, torch.randperm(len(ds), generator=gen)[:n].tolist())


def mnist_workload(root: str, quick: bool, **kw) -> Workload:
    from torchvision import datasets, transforms

    from imbal.config import load_config

    over = [f"data.root={root}", *LIKE_B] + (QUICK + ["data.subset.total=4000"] if quick else [])
    cfg = load_config(CONFIGS / "mnist_lenet_step.yaml", over)
    kw["variants"] = {k: load_config(CONFIGS / "mnist_lenet_step.yaml", over + v)
                      for k, v in VARIANTS.items() if k in ("c_cl",)}

    def dataset_a(n, mean, std, gen):
        tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize(mean, std)])
        return _random_subset(datasets.MNIST(root, train=True, transform=tf), n, gen)

    return build_workload("mnist_lenet", cfg, dataset_a, **kw)


def cifar_workload(root: str, quick: bool, **kw) -> Workload:
    from torchvision import datasets, transforms

    from imbal.config import load_config

    folder = os.path.join(root, "cifar10-jpeg")
    over = [f"data.root={folder}", *LIKE_B] + (QUICK + ["data.subset.total=2000"] if quick else [])
    cfg = load_config(CONFIGS / "cifar_small_cnn_step.yaml", over)
    kw["variants"] = {k: load_config(CONFIGS / "cifar_small_cnn_step.yaml", over + v)
                      for k, v in VARIANTS.items()}

    def dataset_a(n, mean, std, gen):
        tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize(mean, std)])
        return _random_subset(datasets.ImageFolder(os.path.join(folder, "train"), transform=tf),
                              n, gen)

    return build_workload("cifar_small_cnn", cfg, dataset_a, **kw)
