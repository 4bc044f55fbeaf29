"""Group labels of `imbal report` for configurations that share a name: the settings that
tell them apart."""

from __future__ import annotations

import json
from typing import Any

# Config keys that do not make a different configuration (as report.NOT_CONFIG).
NOT_CONFIG = ("name", "seeds", "logging")


def _flat(cfg: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(cfg, dict):
        return {prefix: cfg}
    out: dict[str, Any] = {}
    for k, v in cfg.items():
        if not prefix and k in NOT_CONFIG:
            continue
        out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def differing_settings(cfgs: list[dict[str, Any]], most: int = 3) -> list[str]:
    """For configs that share a label: 'key=value, ...' of the settings that tell each apart."""
    flats = [_flat(c) for c in cfgs]
    keys = sorted({k for f in flats for k in f if k != "train.threads"
                   and len({json.dumps(g.get(k), sort_keys=True, default=str) for g in flats}) > 1})
    return [", ".join(f"{k}={json.dumps(f.get(k), default=str)}" for k in keys[:most])
            + (", ..." if len(keys) > most else "") for f in flats]
