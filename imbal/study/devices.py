"""The machine side of placement: the visible GPUs and an estimate of a run's GPU memory.

`probe_gpus` asks a short child process for torch.cuda.mem_get_info of every visible GPU, so the
sweep's own process never holds a CUDA context (~0.5 GiB on every GPU) while its workers train.
`footprint` builds a run's model on torch's meta device (no memory, no arithmetic) and counts
its parameters and the outputs of its layers for one batch: what autograd keeps for the
backward pass, roughly. Shapes are not known before the data is read, so the estimate takes
data.image_size (default 32) with 3 channels and 100 classes: an upper bound for MNIST- and
CIFAR-size data.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

from imbal.errors import UserError
from imbal.study.placement import (
    GPU,
    Footprint,
    Slot,
    auto_per_device,
    check_devices,
    cpu_slots,
    describe,
    gpu_slots,
)

_PROBE = (
    "import json, torch\n"
    "out = []\n"
    "for i in range(torch.cuda.device_count()):\n"
    "    free, total = torch.cuda.mem_get_info(i)\n"
    "    out.append([i, torch.cuda.get_device_name(i), free, total])\n"
    "print(json.dumps(out))\n"
)


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def probe_gpus() -> list[GPU]:
    """Every GPU torch sees here, with its free memory now; [] without CUDA."""
    if not cuda_available():
        return []
    try:
        done = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True,
                              env=dict(os.environ), check=False, timeout=120)
    except subprocess.TimeoutExpired:
        raise UserError("could not query the GPUs: no answer in 120 s") from None
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise UserError(f"could not query the GPUs: {tail}")
    return [GPU(int(i), str(name), int(free), int(total))
            for i, name, free, total in json.loads(done.stdout)]


def footprint(cfg: dict[str, Any], channels: int = 3, num_classes: int = 100) -> Footprint:
    """Parameters and one batch's layer outputs (float32 bytes) of the run's model, on meta."""
    import torch

    from imbal.models import build_model

    model_cfg, size = cfg["model"], cfg["data"].get("image_size") or 32
    batch = int(cfg["train"]["batch_size"])
    with torch.device("meta"):
        model = build_model(model_cfg["backbone"], in_channels=channels,
                            num_classes=num_classes, image_size=size,
                            **(model_cfg.get("params") or {}))
        total = [0]

        def keep(_module, _inputs, output) -> None:
            if isinstance(output, torch.Tensor):
                total[0] += output.numel() * 4

        leaves = [m for m in model.modules() if not list(m.children())]
        hooks = [m.register_forward_hook(keep) for m in leaves]
        model(torch.empty(batch, channels, size, size))
        for h in hooks:
            h.remove()
    params = sum(p.numel() for p in model.parameters())
    return Footprint(model_cfg["backbone"], params, total[0])


def footprints(cfgs: list[dict[str, Any]]) -> list[Footprint]:
    """One estimate per distinct (backbone, params, image size, batch size) among the runs."""
    seen: dict[str, Footprint] = {}
    for cfg in cfgs:
        key = json.dumps([cfg["model"]["backbone"], cfg["model"].get("params"),
                          cfg["data"].get("image_size"), cfg["train"]["batch_size"]],
                         sort_keys=True, default=str)
        if key not in seen:
            seen[key] = footprint(cfg)
    return list(seen.values())


def _on_cpu(cfg: dict[str, Any]) -> bool:
    return str((cfg.get("train") or {}).get("device", "auto")) == "cpu"


def choose_slots(cfgs: list[dict[str, Any]], *, devices: list[int] | str | None,
                 per_device: int | None, workers: int | None, cores: int,
                 ) -> tuple[list[Slot], str]:
    """The local executor's worker slots and the line that says so (see imbal.study.placement).

    `cfgs`: the resolved configs of the runs to do. GPUs are used when --devices lists them, or
    by default when a GPU is visible and the runs do not all set train.device=cpu."""
    all_cpu = all(_on_cpu(c) for c in cfgs)
    if devices == "cpu" or (devices is None and all_cpu):
        return _cpu(workers, per_device, "the runs are on the CPU", cores)
    if devices is not None and all_cpu:
        raise UserError("--devices places runs on GPUs, but the runs set train.device=cpu; "
                        "drop one of them")
    gpus = probe_gpus()
    if devices is None and not gpus:
        return _cpu(workers, per_device, "no GPU is visible here", cores)
    chosen = gpus if devices is None else check_devices(list(devices), gpus)
    reason = None
    if workers is not None:  # N slots dealt over the GPUs in turn
        if per_device is not None:
            raise UserError("give one of --workers (runs at a time in all) and --per-device "
                            "(runs at a time per GPU)")
        slots = gpu_slots(chosen, -(-workers // len(chosen)), cores,
                          os.environ.get("CUDA_VISIBLE_DEVICES"), total=workers)
        return slots, describe(slots, chosen, None)
    if per_device is None:
        per_device, reason = auto_per_device(footprints(cfgs), chosen, cores)
        reason = f"auto: {reason}"
    slots = gpu_slots(chosen, per_device, cores, os.environ.get("CUDA_VISIBLE_DEVICES"))
    return slots, describe(slots, chosen, reason)


def _cpu(workers: int | None, per_device: int | None, why: str,
         cores: int) -> tuple[list[Slot], str]:
    if per_device is not None:
        raise UserError(f"--per-device places runs on GPUs, but {why}; use --workers N")
    slots = cpu_slots(workers or 1, cores)
    return slots, describe(slots, [], None)
