"""Class imbalance as pure functions: per-class target counts, then which images to keep.

``target_counts(kind, available, **params)`` turns the images each class has into the images
each class keeps, through the IMBALANCES registry (none, step, longtail, explicit, random).
``subsample``, ``stratified_split`` and ``subset_indices`` pick indices with an explicit
torch.Generator; the same seed picks the same images.

The contract for a plugin imbalance, ``@IMBALANCES.register("kind")``::

    fn(available: list[int], **params) -> list[int]     # per-class counts kept, each >= 1

``available`` is each class's training images after ``data.subset``; ``params`` are the keys
of ``data.imbalance`` other than ``kind`` and ``apply`` that are set (today's keys: classes,
keep, ratio, order, n_max, counts, low, high), matched to the function's keyword parameters (unknown or
missing ones are refused with the valid list). Which images are kept is drawn by imbal from the
data seed. A kind whose counts are themselves random (``random``) declares a keyword parameter
``generator``: it is handed the data seed's torch.Generator (never a config key), and must draw
from it alone.
"""

from __future__ import annotations

import inspect
import math
import statistics
from collections.abc import Sequence
from typing import Any

import torch

from imbal.errors import UserError
from imbal.registry import Registry

IMBALANCES = Registry("imbalance")
STEP_DEFAULT_CLASSES = (0, 1, 2, 3, 4)


def floor_count(x: float) -> int:
    """floor(x) that forgives float round-off just below an integer.

    0.29 * 100 evaluates to 28.999999999999996, and a plain floor would keep 28 images where
    the user asked for 29. Such round-off is a few ulps (~1e-16 relative); the 1e-12 relative
    nudge is far above it, yet moves any count below 1e6 by less than 1e-6, far less than a
    non-integer profile value can lie below the next integer for parameters a user writes.
    """
    return math.floor(x + abs(x) * 1e-12)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _class_ids(kind: str, what: str, ids: Any, num_classes: int) -> list[int]:
    if not isinstance(ids, (list, tuple)) or not all(_is_int(c) for c in ids):
        raise UserError(f"imbalance {kind}: {what} must be a list of class ids, got {ids!r}")
    for c in ids:
        if not 0 <= c < num_classes:
            raise UserError(
                f"imbalance {kind}: class id {c} in {what} is out of range; "
                f"valid ids are 0..{num_classes - 1} ({num_classes} classes)"
            )
    if len(set(ids)) != len(ids):
        raise UserError(f"imbalance {kind}: {what} lists a class twice: {list(ids)}")
    return list(ids)


@IMBALANCES.register("none")
def _none(available: list[int]) -> list[int]:
    """Every class keeps all its images."""
    return list(available)


def step_classes(num_classes: int, params: dict) -> list[int]:
    """The classes a step imbalance reduces: its `classes`; with `ratio`, the last half
    (num_classes // 2 of them, as the published step-imbalanced CIFAR); else 0-4."""
    if params.get("ratio") is not None:
        return list(range(num_classes - num_classes // 2, num_classes))
    return list(params.get("classes") or STEP_DEFAULT_CLASSES)


@IMBALANCES.register("step")
def _step(
    available: list[int],
    classes: Sequence[int] | None = None,
    keep: float | None = None,
    ratio: float | None = None,
) -> list[int]:
    """Listed classes keep floor(keep * available_c) images; the others keep all. keep in (0, 1]
    (default 0.1), classes default 0-4. Or the published form: ratio = n_max / n_min >= 1, the
    last half of the classes (C // 2 of them) keep floor(available_c / ratio)."""
    if ratio is not None:
        if classes is not None or keep is not None:
            raise UserError("imbalance step: give ratio (the last half of the classes keep "
                            "1/ratio) or classes and keep, not both")
        if not _is_num(ratio) or ratio < 1:
            raise UserError(f"imbalance step: ratio must be a number >= 1, got {ratio!r}")
        ids = step_classes(len(available), {"ratio": ratio})
        return [floor_count(n / ratio) if c in ids else n for c, n in enumerate(available)]
    ids = _class_ids("step", "classes", STEP_DEFAULT_CLASSES if classes is None else classes,
                     len(available))
    keep = 0.1 if keep is None else keep
    if not _is_num(keep) or not 0 < keep <= 1:
        raise UserError(f"imbalance step: keep must be a number in (0, 1], got {keep!r}")
    return [floor_count(keep * n) if c in ids else n for c, n in enumerate(available)]


@IMBALANCES.register("longtail")
def _longtail(
    available: list[int],
    ratio: float,
    order: Sequence[int] | None = None,
    n_max: int | None = None,
) -> list[int]:
    """Exponential profile n_i = floor(n_max * ratio^(-i/(C-1))), i = position in ``order``.

    ``order`` lists the class ids from the head (n_max images) to the tail (n_max/ratio);
    default 0..C-1. ``n_max`` defaults to the smallest class size, so every class can supply
    its exact profile value; a larger explicit n_max is clipped to what each class has.
    CIFAR-10 (5,000 per class), ratio 100: 5000 2997 1796 1077 645 387 232 139 83 50.
    """
    num = len(available)
    if not _is_num(ratio) or ratio < 1:
        raise UserError(f"imbalance longtail: ratio must be a number >= 1, got {ratio!r}")
    if order is None:
        order = list(range(num))
    if (
        not isinstance(order, (list, tuple))
        or not all(_is_int(c) for c in order)
        or sorted(order) != list(range(num))
    ):
        raise UserError(
            f"imbalance longtail: order must be a permutation of the class ids 0..{num - 1} "
            f"(each exactly once), got {order!r}"
        )
    if n_max is None:
        n_max = min(available)
    elif not _is_int(n_max) or n_max <= 0:
        raise UserError(f"imbalance longtail: n_max must be a positive integer, got {n_max!r}")
    counts = [0] * num
    for i, c in enumerate(order):
        value = n_max * ratio ** (-i / (num - 1)) if num > 1 else n_max
        counts[c] = min(floor_count(value), available[c])
    return counts


@IMBALANCES.register("explicit")
def _explicit(available: list[int], counts: Sequence[int]) -> list[int]:
    """Exactly ``counts[c]`` images of class c; 0 < counts[c] <= available[c]."""
    if not isinstance(counts, (list, tuple)) or not all(_is_int(n) for n in counts):
        raise UserError(f"imbalance explicit: counts must be a list of integers, got {counts!r}")
    if len(counts) != len(available):
        raise UserError(
            f"imbalance explicit: counts has {len(counts)} entries but the data set has "
            f"{len(available)} classes"
        )
    for c, (want, have) in enumerate(zip(counts, available, strict=True)):
        if not 0 < want <= have:
            raise UserError(
                f"imbalance explicit: class {c} asks for {want} images but must get between 1 "
                f"and the {have} it has"
            )
    return list(counts)


@IMBALANCES.register("random")
def _random(available: list[int], low: int, high: int, *, generator: torch.Generator) -> list[int]:
    """Class c keeps n_c images, n_c uniform on the integers low..high (both included), drawn
    for all classes at once from the data seed: ``torch.randint(low, high + 1, (C,),
    generator=generator)`` on the CPU. 1 <= low <= high <= every class's available images."""
    for key, v in (("low", low), ("high", high)):
        if not _is_int(v) or v < 1:
            raise UserError(f"imbalance random: {key} must be a positive integer, got {v!r}")
    if low > high:
        raise UserError(f"imbalance random: low ({low}) must not exceed high ({high})")
    short = [c for c, n in enumerate(available) if n < high]
    if short:
        c = short[0]
        raise UserError(
            f"imbalance random: high ({high}) exceeds the {available[c]} images class {c} has; "
            f"high must be at most {min(available)} (the smallest class)"
        )
    return torch.randint(low, high + 1, (len(available),), generator=generator).tolist()


def imbalance_params(section: dict) -> dict[str, Any]:
    """The kind's parameters of a data.imbalance section: the keys set, less kind and apply."""
    return {k: v for k, v in section.items() if k not in ("kind", "apply") and v is not None}


def _class_label(c: int, class_names: Sequence[str] | None) -> str:
    return f"class {c} ('{class_names[c]}')" if class_names else f"class {c}"


def target_counts(
    kind: str,
    available: Sequence[int],
    *,
    class_names: Sequence[str] | None = None,
    generator: torch.Generator | None = None,
    **params: Any,
) -> list[int]:
    """Per-class image counts that imbalance ``kind`` keeps out of ``available``.

    ``generator`` (the data seed's) is passed on to a kind that declares it (``random``).
    """
    builder = IMBALANCES.get(kind)
    signature = inspect.signature(builder).parameters
    accepted = [p for p in signature if p not in ("available", "generator")]
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise UserError(
            f"imbalance {kind}: unknown parameter(s) {', '.join(unknown)}; "
            f"valid: {', '.join(accepted) or 'none'}"
        )
    missing = [p for p in accepted if signature[p].default is inspect.Parameter.empty
               and p not in params]
    if missing:
        raise UserError(f"imbalance {kind}: missing required parameter(s) {', '.join(missing)}")
    if "generator" in signature:
        if generator is None:
            raise ValueError(f"imbalance {kind} draws its counts: pass the data seed's generator")
        params = {**params, "generator": generator}
    counts = builder(list(available), **params)
    for c, n in enumerate(counts):
        if n <= 0:
            raise UserError(
                f"imbalance leaves {_class_label(c, class_names)} with no training images"
            )
    return counts


def minority_classes(kind: str, params: dict, counts: Sequence[int]) -> list[int]:
    """none -> []; step -> its listed classes; otherwise classes strictly below the median."""
    if kind == "none":
        return []
    if kind == "step":
        return sorted(step_classes(len(counts), params))
    median = statistics.median(counts)
    return [c for c, n in enumerate(counts) if n < median]


# ---------------------------------------------------------------- index selection


def _class_indices(targets: torch.Tensor, num_classes: int) -> list[torch.Tensor]:
    return [(targets == c).nonzero().squeeze(1) for c in range(num_classes)]


def _perm(n: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    return torch.randperm(n, generator=generator, device=generator.device).to(device)


def _sorted_cat(parts: list[torch.Tensor], device: torch.device) -> torch.Tensor:
    if not parts:
        return torch.empty(0, dtype=torch.long, device=device)
    return torch.cat(parts).sort().values


def subsample(
    targets: torch.Tensor, counts: Sequence[int], generator: torch.Generator
) -> torch.Tensor:
    """Indices (ascending) of a random ``counts[c]`` images of every class c.

    Each class gets a full random permutation and keeps its first counts[c] entries, so the
    generator is consumed the same way whatever the counts: with one seed, a smaller count
    keeps a subset of what a larger count keeps.
    """
    per_class = _class_indices(targets, len(counts))
    if targets.numel() and int(targets.max()) >= len(counts):
        raise UserError(f"subsample: counts has {len(counts)} entries but labels reach "
                        f"{int(targets.max())}")
    kept = []
    for c, idx in enumerate(per_class):
        if not 0 <= counts[c] <= idx.numel():
            raise UserError(f"subsample: class {c} has {idx.numel()} images, asked for {counts[c]}")
        kept.append(idx[_perm(idx.numel(), generator, targets.device)[: counts[c]]])
    return _sorted_cat(kept, targets.device)


def stratified_split(
    targets: torch.Tensor,
    fraction: float,
    generator: torch.Generator,
    *,
    class_names: Sequence[str] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(train_idx, val_idx), both ascending: per class n_val = round(fraction * n_c), half up.

    fraction 0 gives an empty validation set. With fraction > 0 every class must end with at
    least one validation and one training image.
    """
    if not _is_num(fraction) or not 0 <= fraction < 1:
        raise UserError(f"validation fraction must be in [0, 1), got {fraction!r}")
    device = targets.device
    if fraction == 0:
        return torch.arange(targets.numel(), device=device), torch.empty(0, dtype=torch.long,
                                                                         device=device)
    num_classes = int(targets.max()) + 1 if targets.numel() else 0
    train, val = [], []
    for c, idx in enumerate(_class_indices(targets, num_classes)):
        n = idx.numel()
        n_val = floor_count(fraction * n + 0.5)
        if n_val == 0 or n_val >= n:
            part = "validation" if n_val == 0 else "training"
            raise UserError(
                f"validation fraction {fraction} leaves {_class_label(c, class_names)} "
                f"({n} training images) with no {part} images"
            )
        perm = idx[_perm(n, generator, device)]
        val.append(perm[:n_val])
        train.append(perm[n_val:])
    return _sorted_cat(train, device), _sorted_cat(val, device)


def split_from_removed(
    targets: torch.Tensor,
    kept: torch.Tensor,
    removed: torch.Tensor,
    per_class: int,
    generator: torch.Generator,
    *,
    class_names: Sequence[str] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """(train_idx, val_idx, from_kept): ``per_class`` validation images of each class drawn from
    the images the imbalance removed (indices into ``targets``); a class with fewer removed
    images takes the shortfall from its kept ones (``from_kept[c]`` of them), the rest of the
    kept images train. Every class must keep at least one training image."""
    device = targets.device
    num_classes = int(targets.max()) + 1 if targets.numel() else 0
    train, val, from_kept = [], [], []
    for c in range(num_classes):
        k_idx, r_idx = kept[targets[kept] == c], removed[targets[removed] == c]
        take = min(per_class, r_idx.numel())
        short = per_class - take
        if short >= k_idx.numel():
            raise UserError(
                f"data.val_per_class {per_class}: {_class_label(c, class_names)} has "
                f"{r_idx.numel()} removed and {k_idx.numel()} kept images, which leaves it no "
                f"training image")
        val.append(r_idx[_perm(r_idx.numel(), generator, device)[:take]])
        perm = k_idx[_perm(k_idx.numel(), generator, device)]
        val.append(perm[:short])
        train.append(perm[short:])
        from_kept.append(short)
    return _sorted_cat(train, device), _sorted_cat(val, device), from_kept


def _proportional_quota(sizes: list[int], total: int) -> list[int]:
    """Largest-remainder apportionment of ``total`` (<= sum(sizes)) in proportion to ``sizes``.

    Ties in the remainder go to the lower class id. Afterwards, when total allows, a class
    left with none takes one image from the class with the largest quota, so a small smoke
    subset still holds every class.
    """
    whole = sum(sizes)
    exact = [total * n / whole for n in sizes]
    quota = [min(floor_count(x), n) for x, n in zip(exact, sizes, strict=True)]
    by_remainder = sorted(range(len(sizes)), key=lambda c: (quota[c] - exact[c], c))
    for c in by_remainder:
        if sum(quota) == total:
            break
        if quota[c] < sizes[c]:
            quota[c] += 1
    present = [c for c, n in enumerate(sizes) if n > 0]
    if total >= len(present):
        for c in present:
            if quota[c] == 0:
                quota[max(range(len(sizes)), key=lambda k: quota[k])] -= 1
                quota[c] = 1
    return quota


def subset_indices(
    targets: torch.Tensor,
    *,
    per_class: int | None = None,
    total: int | None = None,
    generator: torch.Generator,
) -> torch.Tensor:
    """Indices (ascending) of a smaller sample for smoke runs.

    per_class: min(per_class, available) images of each class. total: a class-stratified sample
    of exactly min(total, N) images (largest-remainder proportional quotas, at least one per
    class when total >= number of classes). Neither: all indices.
    """
    if per_class is not None and total is not None:
        raise UserError("subset: give per_class or total, not both")
    for name, v in (("per_class", per_class), ("total", total)):
        if v is not None and (not _is_int(v) or v <= 0):
            raise UserError(f"subset: {name} must be a positive integer, got {v!r}")
    if per_class is None and total is None:
        return torch.arange(targets.numel(), device=targets.device)
    num_classes = int(targets.max()) + 1 if targets.numel() else 0
    sizes = torch.bincount(targets.cpu(), minlength=num_classes).tolist()
    if per_class is not None:
        counts = [min(per_class, n) for n in sizes]
    else:
        counts = _proportional_quota(sizes, min(total, sum(sizes)))
    return subsample(targets, counts, generator)
