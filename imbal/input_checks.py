"""Checks of careless or hostile input that pydantic's field types do not make by themselves:
numbers given as booleans or strings, run names that are paths, NaN hidden in free-form maps,
YAML whose aliases expand beyond any real config. Light: no torch."""

from __future__ import annotations

import math
import types
import typing
from typing import Any

# A config expanded (aliases followed) beyond this many nodes is not a config: refused.
MAX_NODES = 100_000


def _kinds(ann: Any) -> set[type]:
    """The plain types an annotation allows (int | None -> {int, NoneType})."""
    if typing.get_origin(ann) in (typing.Union, types.UnionType):
        return set().union(*(_kinds(a) for a in typing.get_args(ann)))
    return {ann} if isinstance(ann, type) else set()


def strict_number(annotation: Any, value: Any) -> Any:
    """An integer field takes an integer, never true/false or "2"; a float field takes no
    true/false (strings stay: YAML reads 1e-3 as a string)."""
    kinds = _kinds(annotation)
    if int in kinds and bool not in kinds and (isinstance(value, (bool, str))):
        raise ValueError("must be an integer")
    if float in kinds and bool not in kinds and isinstance(value, bool):
        raise ValueError("must be a number")
    return value


def one_path_component(name: str) -> str:
    """A run name is a folder name under logging.out_dir: `--out` is where to choose a path."""
    if name in ("", ".", "..") or "/" in name or "\\" in name or "\0" in name:
        raise ValueError("must be a single folder name (no '/', not '.' or '..'); "
                         "use --out to choose where the run goes")
    return name


def finite(value: Any) -> Any:
    """No NaN or infinity anywhere in a free-form value (a map of parameters, a remedy)."""
    def ok(v: Any) -> bool:
        if isinstance(v, float):
            return math.isfinite(v)
        if isinstance(v, (list, tuple)):
            return all(map(ok, v))
        return all(map(ok, v.values())) if isinstance(v, dict) else True

    if not ok(value):
        raise ValueError("must be finite (no nan or inf)")
    return value


def expanded_size(value: Any, limit: int = MAX_NODES) -> int:
    """Nodes of `value` with shared (aliased) parts counted each time they appear; stops
    counting past `limit`, so a billion-laughs document is measured in microseconds."""
    count, stack = 0, [value]
    while stack:
        v = stack.pop()
        count += 1
        if count > limit:
            return count
        if isinstance(v, dict):
            stack.extend(v.keys())
            stack.extend(v.values())
        elif isinstance(v, (list, tuple)):
            stack.extend(v)
    return count


def check_expanded_size(value: Any, where: str) -> None:
    from imbal.errors import UserError

    if expanded_size(value) > MAX_NODES:
        raise UserError(f"{where}: YAML aliases expand to more than {MAX_NODES} values; "
                        "refused (not a config)")


def memory_bytes() -> int:
    """This machine's physical memory (a generous bound for one allocation)."""
    import os

    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 1 << 40


def check_allocation(nbytes: int, what: str) -> None:
    """Refuse, before allocating, a size that no memory here could hold (a typo in a count)."""
    from imbal.errors import UserError

    have = memory_bytes()
    if nbytes > have:
        raise UserError(f"{what} would need {nbytes / 2**30:,.1f} GiB of memory; this machine "
                        f"has {have / 2**30:,.1f} GiB")
