"""Keyword arguments from a config section, checked against the signature of what takes them.

A config section such as `train.optimizer` names a builder (a torch.optim class, a schedule
builder, a plugin's function) and passes it keyword arguments. They are checked here, before any
work starts, against `inspect.signature` of the builder: a key it does not take is refused (with
the keys it does take), and each value must fit the parameter's annotation (or, without one, the
type of its default): true/false where a bool is expected, finite numbers where a number is, a
list of the right length where a tuple is. YAML cannot give a tensor or a callable, so a
parameter that only takes those is not settable from a config.
"""

from __future__ import annotations

import inspect
import math
import types
import typing
from collections.abc import Callable
from typing import Any

from imbal.errors import UserError
from imbal.registry import did_you_mean

EMPTY = inspect.Parameter.empty


def keyword_parameters(builder: Callable, skip: tuple[str, ...] = ()) -> tuple[dict, bool]:
    """({name: inspect.Parameter} of what can be passed by keyword, takes **kwargs)."""
    try:
        sig = inspect.signature(builder, eval_str=True)
    except (NameError, TypeError, ValueError):  # an annotation that does not evaluate
        sig = inspect.signature(builder)
    params, var_kw = {}, False
    for name, p in sig.parameters.items():
        if p.kind is p.VAR_KEYWORD:
            var_kw = True
        elif p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and name not in skip:
            params[name] = p
    return params, var_kw


def check_keys(where: str, what: str, given: dict, params: dict, var_kw: bool) -> None:
    """Refuse a key the builder does not take: one line naming it and the valid ones."""
    if var_kw:
        return
    for key in given:
        if key not in params:
            raise UserError(f"{where}: {what} takes no argument '{key}'"
                            f"{did_you_mean(key, list(params))}; valid: {', '.join(params)}")


def check_value(where: str, key: str, value: Any, param: inspect.Parameter | None) -> Any:
    """The value as the builder takes it (a list where a tuple is expected becomes a tuple, an
    integer where only a float is expected a float), or a one-line UserError."""
    ann = _annotation(param)
    if not _fits(value, ann):
        raise UserError(f"bad value for '{where}.{key}': expected {describe(ann)} "
                        f"(got {value!r})")
    return _convert(value, ann)


def plain(value: Any) -> Any:
    """A value as the resolved config holds it (YAML/JSON types: tuples as lists)."""
    if isinstance(value, (tuple, list)):
        return [plain(v) for v in value]
    return value


def _annotation(param: inspect.Parameter | None) -> Any:
    if param is None:
        return EMPTY
    ann = param.annotation
    if ann is EMPTY or isinstance(ann, str):  # none, or one that did not evaluate: the default's
        return _from_default(param.default)
    return ann


def _from_default(default: Any) -> Any:
    if isinstance(default, bool):
        return bool
    if isinstance(default, (int, float)):
        return float
    if isinstance(default, tuple):
        return tuple[tuple(_from_default(d) for d in default)]
    if isinstance(default, str):
        return str
    return EMPTY


def _union_args(ann: Any) -> tuple | None:
    if typing.get_origin(ann) in (typing.Union, types.UnionType):
        return typing.get_args(ann)
    return None


def _finite(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, (list, tuple)):
        return all(_finite(v) for v in value)
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    return True


def _fits(value: Any, ann: Any) -> bool:
    if ann is EMPTY or ann is Any:
        return _finite(value)
    arms = _union_args(ann)
    if arms is not None:
        return any(_fits(value, a) for a in arms)
    if ann is None or ann is type(None):
        return value is None
    if ann is bool:
        return isinstance(value, bool)
    if ann is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if ann is float:
        return (isinstance(value, (int, float)) and not isinstance(value, bool)
                and math.isfinite(value))
    if ann is str:
        return isinstance(value, str)
    origin, args = typing.get_origin(ann), typing.get_args(ann)
    if origin is typing.Literal:
        return value in args
    if ann is tuple or origin is tuple:
        if not isinstance(value, (list, tuple)):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_fits(v, args[0]) for v in value)
        if not args:
            return _finite(value)
        return len(value) == len(args) and all(_fits(v, a) for v, a in zip(value, args, strict=True))
    if origin is list:
        return isinstance(value, list) and all(_fits(v, args[0]) if args else _finite(v) for v in value)
    return False  # a tensor, a callable, ...: nothing YAML can give


def _convert(value: Any, ann: Any) -> Any:
    arms = _union_args(ann)
    if arms is not None:
        fitting = [a for a in arms if _fits(value, a)]
        exact = [a for a in fitting if a is int and isinstance(value, int)]
        return _convert(value, (exact or fitting)[0])
    if ann is float and isinstance(value, int):
        return float(value)
    if ann is tuple or typing.get_origin(ann) is tuple:
        args = typing.get_args(ann)
        if args and not (len(args) == 2 and args[1] is Ellipsis):
            return tuple(_convert(v, a) for v, a in zip(value, args, strict=True))
        return tuple(value)
    return value


def describe(ann: Any) -> str:
    """An annotation in config words: 'a number', 'true or false', 'a list of 2 numbers'..."""
    if ann is EMPTY or ann is Any:
        return "a finite value"
    arms = _union_args(ann)
    if arms is not None:
        words = [describe(a) for a in arms if _settable(a)]
        return " or ".join(dict.fromkeys(words)) or "a value a config cannot give"
    names = {bool: "true or false", int: "an integer", float: "a finite number",
             str: "a string", type(None): "null", None: "null"}
    if ann in names:
        return names[ann]
    origin, args = typing.get_origin(ann), typing.get_args(ann)
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if ann is tuple or origin is tuple:
        if args and not (len(args) == 2 and args[1] is Ellipsis):
            return f"a list of {len(args)} ({', '.join(describe(a) for a in args)})"
        return "a list"
    return f"a {getattr(ann, '__name__', ann)} (not settable from a config)"


def _settable(ann: Any) -> bool:
    return not (isinstance(ann, type) and ann.__module__.startswith("torch"))
