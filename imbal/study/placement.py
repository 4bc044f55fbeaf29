"""Where a local sweep's runs go: worker slots on GPUs (K per GPU) or on the CPU's cores.

Pure functions only (no torch, no CUDA): they take the visible GPUs as plain data, so the tests
drive them with a fake device list. imbal.study.devices probes the real GPUs and estimates a
run's memory; imbal.study.executors runs one worker thread per slot.

- On GPUs: `--devices 0,1 --per-device K` (or `devices:` / `per_device:` in the sweep file)
  gives K slots per listed GPU. A slot's worker process sees only its GPU
  (CUDA_VISIBLE_DEVICES), the run's `train.device` becomes `cuda`, and the run records the GPU
  in meta.json (`cuda_visible_devices`). Slots are numbered GPU-interleaved (GPU 0 slot 0,
  GPU 1 slot 0, GPU 0 slot 1, ...) and a run takes the lowest free slot, so a sweep with fewer
  runs than slots spreads over the GPUs first. The CPU's cores are split between all slots.
- Without --devices, every visible GPU is used and K is `auto_per_device`'s choice.
  `--workers N` on GPUs (instead of --per-device) means N slots dealt over the GPUs in turn.
- On the CPU (no GPU visible, `--devices cpu`, or runs that set train.device=cpu): `--workers N`
  slots, each with cores/N threads, as before.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from imbal.errors import UserError

GiB = 1024**3
# What one worker process costs on a GPU besides its model: the CUDA context with torch's
# kernels loaded (~0.5 GiB on recent GPUs), cuDNN/cuBLAS workspaces, the run's splits kept on
# the device (CIFAR-size data: ~0.2 GiB) and the caching allocator's slack.
PROCESS_OVERHEAD = int(1.5 * GiB)
BYTES_PER_PARAM = 16  # float32 weights + gradients + two optimizer states (Adam; SGD needs fewer)
MEMORY_SHARE = 0.9  # of the smallest free memory among the chosen GPUs
MAX_PER_DEVICE = 8  # more concurrent processes per GPU only time-slice it further


@dataclass(frozen=True)
class GPU:
    """One visible GPU as the sweep's process numbers it (torch's index)."""

    index: int
    name: str
    free_bytes: int
    total_bytes: int


@dataclass(frozen=True)
class Slot:
    """One worker: the GPU it is pinned to (None: the CPU) and its CPU threads."""

    number: int
    gpu: int | None
    threads: int
    visible: str | None = None  # CUDA_VISIBLE_DEVICES for the worker process

    @property
    def label(self) -> str:
        return "cpu" if self.gpu is None else f"gpu {self.gpu}"


@dataclass(frozen=True)
class Footprint:
    """The estimate of one run's GPU memory: model parameters and activations of one batch."""

    backbone: str
    params: int
    activation_bytes: int  # one training batch

    def run_bytes(self) -> int:
        return PROCESS_OVERHEAD + BYTES_PER_PARAM * self.params + self.activation_bytes


def parse_devices(value: Any, where: str = "--devices") -> list[int] | str | None:
    """`0,1` / [0, 1] / 1 -> [0, 1]; `cpu` -> "cpu"; None/"" -> None (the default)."""
    if value is None or value == "":
        return None
    if isinstance(value, str) and value.strip().lower() == "cpu":
        return "cpu"
    items = value if isinstance(value, list) else str(value).split(",")
    out: list[int] = []
    for item in items:
        text = str(item).strip()
        if isinstance(item, bool) or not text.isdigit():
            raise UserError(f"{where}: '{text}' is not a GPU number; give e.g. 0,1 (or cpu)")
        if int(text) in out:
            raise UserError(f"{where}: GPU {int(text)} is listed twice")
        out.append(int(text))
    if not out:
        raise UserError(f"{where}: no GPU listed; give e.g. 0,1 (or cpu)")
    return out


def check_devices(requested: list[int], gpus: list[GPU], where: str = "--devices") -> list[GPU]:
    """The GPUs asked for, in the order asked; an id not visible here is refused in one line."""
    by_index = {g.index: g for g in gpus}
    if not gpus:
        raise UserError(f"{where} {','.join(map(str, requested))}: no GPU is visible here "
                        "(CUDA not available); leave it out to run on the CPU")
    for i in requested:
        if i not in by_index:
            raise UserError(f"{where}: there is no GPU {i} here (visible: "
                            f"{', '.join(str(g.index) for g in gpus)})")
    return [by_index[i] for i in requested]


def child_visible(parent_visible: str | None, index: int) -> str:
    """CUDA_VISIBLE_DEVICES for a worker on torch's GPU `index`: if the sweep itself runs under
    CUDA_VISIBLE_DEVICES=2,3, torch's GPU 1 is the entry `3`."""
    if parent_visible is None or not parent_visible.strip():
        return str(index)
    entries = [e.strip() for e in parent_visible.split(",") if e.strip()]
    return entries[index] if index < len(entries) else str(index)


def auto_per_device(footprints: list[Footprint], gpus: list[GPU], cores: int,
                    ) -> tuple[int, str]:
    """K from the largest run's estimate and the smallest free memory, capped by the cores
    (each worker's Python loop needs a core to keep its GPU busy) and by MAX_PER_DEVICE.
    Returns (K, a one-line reason)."""
    biggest = max(footprints, key=lambda f: f.run_bytes())
    need = biggest.run_bytes()
    free = min(g.free_bytes for g in gpus)
    by_memory = int(MEMORY_SHARE * free // need)
    by_cores = max(1, cores // len(gpus))
    k = max(1, min(by_memory, by_cores, MAX_PER_DEVICE))
    limit = ("memory" if k == by_memory else "CPU cores" if k == by_cores
             else f"the cap of {MAX_PER_DEVICE}" if k == MAX_PER_DEVICE else "at least one")
    reason = (f"estimate {need / GiB:.1f} GiB per run ({biggest.backbone}: "
              f"{biggest.params / 1e6:.2f}M params, {biggest.activation_bytes / GiB:.2f} GiB "
              f"activations a batch, {PROCESS_OVERHEAD / GiB:.1f} GiB per process), "
              f"{free / GiB:.1f} GiB free -> {by_memory} by memory, {by_cores} by {cores} cores; "
              f"limited by {limit}")
    return k, reason


def gpu_slots(gpus: list[GPU], per_device: int, cores: int,
              parent_visible: str | None = None, total: int | None = None) -> list[Slot]:
    """per_device slots on each GPU, GPU-interleaved (only the first `total` of them if given:
    `--workers N` on GPUs); the cores split between all slots."""
    if per_device < 1:
        raise UserError(f"--per-device must be at least 1 (got {per_device})")
    order = [g for _ in range(per_device) for g in gpus][:total]
    threads = max(1, cores // len(order))
    return [Slot(i, g.index, threads, child_visible(parent_visible, g.index))
            for i, g in enumerate(order)]


def cpu_slots(workers: int, cores: int) -> list[Slot]:
    if workers < 1:
        raise UserError(f"--workers must be at least 1 (got {workers})")
    return [Slot(i, None, max(1, cores // workers)) for i in range(workers)]


def describe(slots: list[Slot], gpus: list[GPU], reason: str | None) -> str:
    """The line printed at the start of a sweep."""
    n, threads = len(slots), slots[0].threads
    if slots[0].gpu is None:
        return (f"placement: CPU, {n} worker{'s' if n > 1 else ''} x {threads} "
                f"thread{'s' if threads > 1 else ''}")
    per = max(sum(1 for s in slots if s.gpu == g.index) for g in gpus)
    names = ", ".join(f"{g.index} ({g.name}, {g.free_bytes / GiB:.1f} of "
                      f"{g.total_bytes / GiB:.1f} GiB free)" for g in gpus)
    text = (f"placement: {len(gpus)} GPU{'s' if len(gpus) > 1 else ''} [{names}], "
            f"{per} run{'s' if per > 1 else ''} per GPU, {n} workers x {threads} "
            f"thread{'s' if threads > 1 else ''}")
    return text + (f" ({reason})" if reason else "")


def take_slot(free: list[int]) -> int:
    """The lowest free slot number (removed from `free`)."""
    free.sort()
    return free.pop(0)


def schedule(durations: list[float], slots: list[Slot]) -> list[tuple[int, float, float]]:
    """What the local executor does, on paper: run i starts on the lowest free slot as soon as
    one is free; returns (slot number, start, end) per run. Used by the tests and dry runs."""
    free, busy_until = [s.number for s in slots], {}
    clock, out = 0.0, []
    for d in durations:
        if not free:
            clock = min(busy_until.values())
            free = [k for k, t in busy_until.items() if t <= clock]
            for k in free:
                del busy_until[k]
        k = take_slot(free)
        busy_until[k] = clock + d
        out.append((k, clock, clock + d))
    return out
