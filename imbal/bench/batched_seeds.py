"""Batched seeds (issue 18, part 1): K seeds of one small run trained as ONE vmapped model
(torch.func.stack_module_state + functional_call + vmap, the optimizer torch.optim's over the
stacked parameters: SGD and Adam act element by element, so each seed's slice gets its own
update) against the K models stepped one after another, in the same process.

    python -m imbal.bench.batched_seeds [--backbone lenet] [--seeds 3] [--batch 64]
        [--steps 20] [--rounds 5] [--threads 2] [--optimizer sgd|adam] [--device cpu|cuda]

Every seed has its own initial weights (torch.manual_seed(seed) before building) and its own
batches (drawn from its own generator), as separate runs would. Prints, per way, the median over
interleaved rounds of training images/s (K x batch x steps / seconds), the ratio batched /
separate, and the largest difference between a seed's parameters after the batched steps and
after its own separate steps (the batched way must give each seed what its own run gives).
BatchNorm's running statistics are stacked buffers updated inside vmap.

Measured on this project's 2-core CPU the batched way is slower (README, "Performance"), so
`imbal sweep` does not batch seeds; this benchmark is kept so that a GPU, where one large
kernel can beat K small ones, can be measured with --device cuda.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import time

import torch
import torch.nn.functional as F
from torch.func import functional_call, stack_module_state, vmap

from imbal.models import build_model

SHAPES = {"lenet": (1, 28), "small_cnn": (3, 32), "resnet32": (3, 32)}


def make_models(backbone: str, seeds: int, device: torch.device) -> list[torch.nn.Module]:
    channels, size = SHAPES.get(backbone, (3, 32))
    models = []
    for s in range(seeds):
        torch.manual_seed(s)
        models.append(build_model(backbone, in_channels=channels, num_classes=10,
                                  image_size=size).to(device).train())
    return models


def batches(seeds: int, steps: int, batch: int, backbone: str,
            device: torch.device) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per step: X (K×B×C×H×W) and Y (K×B), each seed's from its own generator."""
    channels, size = SHAPES.get(backbone, (3, 32))
    gens = [torch.Generator().manual_seed(100 + s) for s in range(seeds)]
    out = []
    for _ in range(steps):
        xs = [torch.randn(batch, channels, size, size, generator=g) for g in gens]
        ys = [torch.randint(0, 10, (batch,), generator=g) for g in gens]
        out.append((torch.stack(xs).to(device), torch.stack(ys).to(device)))
    return out


def make_optimizer(params, name: str) -> torch.optim.Optimizer:
    if name == "adam":
        return torch.optim.Adam(params, lr=1e-3, foreach=True)
    return torch.optim.SGD(params, lr=0.05, momentum=0.9, weight_decay=5e-4, foreach=True)


class Separate:
    def __init__(self, models, optimizer: str):
        self.models = models
        self.opts = [make_optimizer(m.parameters(), optimizer) for m in models]

    def step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        for k, (m, opt) in enumerate(zip(self.models, self.opts, strict=True)):
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(m(x[k]), y[k]).backward()
            opt.step()

    def params(self, k: int) -> dict[str, torch.Tensor]:
        return dict(self.models[k].named_parameters())


class Batched:
    def __init__(self, models, optimizer: str):
        params, self.buffers = stack_module_state(models)  # copies: new leaves, grads enabled
        self.stacked = params
        self.base = copy.deepcopy(models[0]).to("meta")

        def loss(p, b, x, y):
            return F.cross_entropy(functional_call(self.base, (p, b), (x,)), y)

        self.losses = vmap(loss)
        self.opt = make_optimizer(list(params.values()), optimizer)

    def step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.opt.zero_grad(set_to_none=True)
        # The seeds' losses are independent: the gradient of their sum is each seed's own.
        self.losses(self.stacked, self.buffers, x, y).sum().backward()
        self.opt.step()

    def params(self, k: int) -> dict[str, torch.Tensor]:
        return {n: p[k] for n, p in self.stacked.items()}


def max_difference(a: Separate, b: Batched, seeds: int) -> float:
    worst = 0.0
    for k in range(seeds):
        pa, pb = a.params(k), b.params(k)
        worst = max(worst, *((pa[n] - pb[n]).abs().max().item() for n in pa))
    return worst


def timed(way, data, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for x, y in data:
        way.step(x, y)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backbone", default="lenet")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=20, help="at least 2 (the first is warm-up)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--optimizer", choices=["sgd", "adam"], default="sgd")
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    if args.steps < 2 or args.seeds < 1 or args.rounds < 1:
        p.error("--steps must be at least 2, --seeds and --rounds at least 1")
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    data = batches(args.seeds, args.steps, args.batch, args.backbone, device)

    # Same initial weights, same batches: each seed's parameters after the steps must agree.
    sep, bat = (cls(make_models(args.backbone, args.seeds, device), args.optimizer)
                for cls in (Separate, Batched))
    for x, y in data:
        sep.step(x, y)
        bat.step(x, y)
    diff = max_difference(sep, bat, args.seeds)

    times: dict[str, list[float]] = {"separate": [], "batched": []}
    for _ in range(args.rounds):  # interleaved: a machine's load hits both alike
        for name, cls in (("separate", Separate), ("batched", Batched)):
            way = cls(make_models(args.backbone, args.seeds, device), args.optimizer)
            way.step(*data[0])  # warm-up (allocator, first-use paths)
            times[name].append(timed(way, data[1:], device))
    images = args.seeds * args.batch * (args.steps - 1)
    rate = {n: images / statistics.median(t) for n, t in times.items()}
    print(f"{args.backbone}, {args.seeds} seeds x batch {args.batch}, {args.steps - 1} timed "
          f"steps, {args.optimizer}, {args.device}, {args.threads} threads, median of "
          f"{args.rounds} rounds (load average {os.getloadavg()[0]:.2f})")
    for n in ("separate", "batched"):
        print(f"  {n:<9} {rate[n]:>10.0f} img/s")
    print(f"  ratio batched/separate {rate['batched'] / rate['separate']:.2f}")
    print(f"  largest per-seed parameter difference after {args.steps} steps: {diff:.2e}")


if __name__ == "__main__":
    main()
