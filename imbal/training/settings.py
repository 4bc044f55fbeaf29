"""Process-wide settings a run changes, and the context manager that gives them back.

A run sets torch's thread count (train.threads), deterministic algorithms and their NaN fill,
CUBLAS_WORKSPACE_CONFIG on CUDA, and seeds the global RNGs (dropout draws from them). Those are
process-wide: without `process_settings` a second run in the same Python process (a notebook, a
test, a sweep run in-process) would start from the first one's threads, determinism and RNG
state, and get other numbers than in a fresh process. `imbal train` and `imbal eval` run inside
it; every entry of SETTINGS is read on entry and written back on exit.
"""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

CUBLAS_ENV = "CUBLAS_WORKSPACE_CONFIG"


@dataclass(frozen=True)
class Setting:
    name: str
    get: Callable[[], Any]
    set: Callable[[Any], None]


def _set_deterministic(state: tuple[bool, bool]) -> None:
    torch.use_deterministic_algorithms(state[0], warn_only=state[1])


def _set_fill(value: bool) -> None:
    torch.utils.deterministic.fill_uninitialized_memory = value


def _set_cudnn(attr: str) -> Callable[[Any], None]:
    return lambda value: setattr(torch.backends.cudnn, attr, value)


def _set_env(value: str | None) -> None:
    if value is None:
        os.environ.pop(CUBLAS_ENV, None)
    else:
        os.environ[CUBLAS_ENV] = value


def _get_cuda_rng() -> list | None:
    # Only a CUDA context that already exists: reading the state must not create one. (A run
    # that was the first to use CUDA leaves that context, and its seeding of it, behind.)
    return torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None


def _set_cuda_rng(states: list | None) -> None:
    if states is not None:
        torch.cuda.set_rng_state_all(states)


def _set_numpy_rng(state: Any) -> None:
    np.random.set_state(state)


SETTINGS: tuple[Setting, ...] = (
    Setting("threads", torch.get_num_threads, torch.set_num_threads),
    Setting("deterministic_algorithms", lambda: (torch.are_deterministic_algorithms_enabled(),
                                                 torch.is_deterministic_algorithms_warn_only_enabled()),
            _set_deterministic),
    Setting("fill_uninitialized_memory",
            lambda: torch.utils.deterministic.fill_uninitialized_memory, _set_fill),
    Setting("cudnn.benchmark", lambda: torch.backends.cudnn.benchmark, _set_cudnn("benchmark")),
    Setting("cudnn.deterministic", lambda: torch.backends.cudnn.deterministic,
            _set_cudnn("deterministic")),
    Setting("float32_matmul_precision", torch.get_float32_matmul_precision,
            torch.set_float32_matmul_precision),
    Setting(CUBLAS_ENV, lambda: os.environ.get(CUBLAS_ENV), _set_env),
    Setting("rng.torch", torch.get_rng_state, torch.set_rng_state),
    Setting("rng.cuda", _get_cuda_rng, _set_cuda_rng),
    Setting("rng.numpy", np.random.get_state, _set_numpy_rng),
    Setting("rng.python", random.getstate, random.setstate),
)


def snapshot() -> dict[str, Any]:
    return {s.name: s.get() for s in SETTINGS}


@contextlib.contextmanager
def process_settings() -> Iterator[None]:
    """Run the body, then put every process-wide setting back as it was (also on an error or
    an interruption). Restored in reverse order: the RNGs last, after anything that might
    draw from them while being set."""
    saved = snapshot()
    try:
        yield
    finally:
        for s in reversed(SETTINGS):
            s.set(saved[s.name])


def deterministic_algorithms() -> None:
    """torch.use_deterministic_algorithms(True, warn_only=True), without the NaN fill of every
    torch.empty that deterministic mode adds by default: it guards programs that read memory
    they never wrote, which imbal does not (a test runs with the fill forced on and gets the
    same figures), and it cost 77 extra fills a step, ~3% of a small-CNN step and ~2% of a
    LeNet step on this CPU. torch's documentation: off is "still deterministic"."""
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.utils.deterministic.fill_uninitialized_memory = False


def apply_run_settings(*, threads: int | None, deterministic: bool, device: torch.device) -> None:
    """A run's own settings (train.threads, train.deterministic), whatever the process had."""
    if threads:
        torch.set_num_threads(threads)
    if deterministic:
        if device.type == "cuda":
            os.environ.setdefault(CUBLAS_ENV, ":4096:8")
        deterministic_algorithms()
    else:  # not inherited from an earlier run or the caller
        torch.use_deterministic_algorithms(False)


def seed_everything_local(seed: int) -> None:
    """Layers without a generator argument (dropout) draw from torch's global RNG: seed it once
    per run from the training seed so CPU runs repeat exactly. Data choices never use it.
    process_settings puts the caller's RNG states back when the run ends."""
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
