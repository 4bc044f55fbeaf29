"""Images/s of the batch augmentations on a CIFAR-10-sized batch, against the libraries' own.

    PYTHONPATH=. python scripts/bench_augment.py [--batch 128] [--rounds 5] [--threads 1]
                                                  [--device cpu] [--images DIR]

Float N×3×32×32 batch in [0, 1] (random pixels, or the first N JPEGs under --images, e.g.
$IMBAL_DATA/cifar10-jpeg/train). Per op, each way of computing it (rounds interleaved, so a
machine's load hits them alike; the median round is reported):
  imbal         the registered batch transform: a draw per image from an explicit generator,
                kornia's batched functions with a magnitude per image (pixel ops get their
                normalisation round trip, as in training)
  tv2/image     torchvision.transforms.v2 called once per image: a draw per image, global RNG
  tv2/batch     torchvision.transforms.v2 on the whole batch: ONE draw for all images
  kornia.aug    kornia.augmentation on the batch: per-image parameters for erasing and colour
                jitter; its AutoAugment/RandAugment pick one sub-policy/op list per batch
Prints a table (images/s) and the load average, which skews figures on a shared machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch


def load_batch(n: int, images: str | None, device: torch.device) -> torch.Tensor:
    if images is None:
        return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(0)).to(device)
    from torchvision.io import decode_image, read_file

    files = sorted(Path(images).rglob("*.jpg"))[:n]
    return torch.stack([decode_image(read_file(str(f))) for f in files]).float().div(255).to(device)


def candidates(x: torch.Tensor) -> dict[str, dict[str, Callable[[], object]]]:
    import kornia.augmentation as K
    from torchvision.transforms import v2

    from imbal.data.batches import Normalizer
    from imbal.remedies.batch import build_batch_transforms

    norm = Normalizer.fit((x * 255).round(), x.device)
    xn, y = norm.from_pixels(x), torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
    gen = torch.Generator(device=x.device).manual_seed(0)

    def ours(item: object) -> Callable[[], object]:
        t = build_batch_transforms([item], num_classes=10, class_counts=[1] * 10, normalizer=norm)
        return lambda: t(xn, y, gen)

    def per_image(t: Callable) -> Callable[[], object]:
        return lambda: torch.stack([t(img) for img in x])

    def batch(t: Callable) -> Callable[[], object]:
        return lambda: t(x)

    erase = dict(p=1.0, scale=(0.25, 0.25), ratio=(1.0, 1.0), value=0)
    jitter = dict(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1)
    aa = v2.AutoAugment(v2.AutoAugmentPolicy.CIFAR10)
    ra = v2.RandAugment(num_ops=2, magnitude=9)
    return {
        "cutout 16px": {"imbal": ours({"name": "cutout", "size": 16}),
                        "tv2/image": per_image(v2.RandomErasing(**erase)),
                        "tv2/batch": batch(v2.RandomErasing(**erase)),
                        "kornia.aug": batch(K.RandomErasing(p=1.0, scale=(0.25, 0.25),
                                                            ratio=(1.0, 1.0)))},
        "gridmask": {"imbal": ours("gridmask")},
        "autoaugment cifar10": {"imbal": ours("autoaugment"), "tv2/image": per_image(aa),
                                "tv2/batch": batch(aa),
                                "kornia.aug": batch(K.auto.AutoAugment("cifar10"))},
        "randaugment n=2 m=9": {"imbal": ours({"name": "randaugment", "n": 2, "m": 9}),
                                "tv2/image": per_image(ra), "tv2/batch": batch(ra),
                                "kornia.aug": batch(K.auto.RandAugment(n=2, m=9))},
        "colour_jitter .4/.4/.4/.1": {"imbal": ours("colour_jitter"),
                                      "tv2/image": per_image(v2.ColorJitter(**jitter)),
                                      "tv2/batch": batch(v2.ColorJitter(**jitter)),
                                      "kornia.aug": batch(K.ColorJitter(**jitter, p=1.0))},
    }


def measure(fns: dict[str, Callable[[], object]], n: int, rounds: int, sync) -> dict[str, float]:
    for fn in fns.values():  # warm-up (lazy imports, first-call costs)
        fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            times[k].append(time.perf_counter() - t0)
    return {k: n / statistics.median(v) for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--images", default=None, help="a folder of 32×32 JPEGs (first --batch)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    x = load_batch(args.batch, args.images, device)
    cols = ["imbal", "tv2/image", "tv2/batch", "kornia.aug"]
    print(f"batch {tuple(x.shape)} on {device}, {torch.get_num_threads()} threads, "
          f"load average {os.getloadavg()[0]:.1f}; images/s, median of {args.rounds} rounds")
    print(f"| op | {' | '.join(cols)} |\n|---|{'---:|' * len(cols)}")
    for op, fns in candidates(x).items():
        rate = measure(fns, x.shape[0], args.rounds, sync)
        cells = [f"{rate[c]:,.0f}" if c in rate else "–" for c in cols]
        print(f"| {op} | {' | '.join(cells)} |", flush=True)


if __name__ == "__main__":
    main()
