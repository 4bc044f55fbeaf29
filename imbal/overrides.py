"""Changing a config mapping: `key.path=value` overrides, the deep merge of `extends`, and the
kind-change rule both follow (KIND_KEYS): when a section's kind changes, the old kind's
parameters do not carry over."""

from __future__ import annotations

from typing import Any

import yaml

from imbal import input_checks
from imbal.errors import UserError

# data.imbalance's parameters of its kind (config.Imbalance's fields less kind and apply; a test
# keeps the two in step).
IMBALANCE_PARAMS = ("classes", "keep", "ratio", "order", "n_max", "counts", "low", "high")

def apply_override(raw: dict[str, Any], item: str) -> None:
    """Apply one `a.b.c=value` override in place; the value is parsed as YAML."""
    if "=" not in item:
        raise UserError(f"override '{item}' must look like key.path=value")
    key, _, text = item.partition("=")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        raise UserError(f"override '{item}': value is not valid YAML") from None
    input_checks.check_expanded_size(value, f"override '{key}'")
    parts = key.strip().split(".")
    node: Any = raw
    path: tuple = ()
    for part, nxt_part in zip(parts[:-1], parts[1:], strict=True):
        nxt = _child(node, part, item)
        if nxt is None:
            nxt = node[part] = {}
        if not isinstance(nxt, dict) and not (isinstance(nxt, list) and nxt_part.isdigit()):
            raise UserError(f"override '{item}': '{part}' is not a section")
        node = nxt
        path = (*path, int(part) if part.isdigit() else part)
    if isinstance(node, list):
        _child(node, parts[-1], item)  # refuses an index past the end
        node[int(parts[-1])] = value
        return
    rule = _kind_rule(path)
    if rule is not None and rule[0] == parts[-1]:  # a new kind: the old one's parameters go
        kept = drop_other_kind(path, node, value)
        if kept is not node:
            node.clear()
            node.update(kept)
    node[parts[-1]] = value


def _child(node: Any, part: str, item: str) -> Any:
    """node[part]; in a list (stages.1.epochs) the part is an index."""
    if isinstance(node, list):
        if not part.isdigit() or int(part) >= len(node):
            raise UserError(f"override '{item}': no item {part} in a list of {len(node)}")
        return node[int(part)]
    return node.get(part)


# The kind-change rule: in these sections one key says which kind of thing the section is, and
# the other keys (or the listed ones) are that kind's parameters. When `extends` or an override
# changes the kind, the old kind's parameters are dropped instead of carried over. Paths are
# key tuples; "*" matches any item of a list.
KIND_KEYS: tuple[tuple[tuple[str, ...], str, tuple[str, ...] | None], ...] = (  # None: all but the kind
    (("data", "imbalance"), "kind", IMBALANCE_PARAMS),
    (("model",), "backbone", ("params",)),
    (("remedy", "*"), "name", None),
    (("train", "optimizer"), "name", None),
    (("train", "schedule"), "name", None),
    (("train", "batch_transforms", "*"), "name", None),
    (("pretrain",), "task", ("params",)),
    (("pretrain", "optimizer"), "name", None),
    (("stages", "*"), "task", ("params",)),
    (("stages", "*", "optimizer"), "name", None),
    (("stages", "*", "schedule"), "name", None),
    (("stages", "*", "remedy", "*"), "name", None),
    (("stages", "*", "batch_transforms", "*"), "name", None),
)


def _kind_rule(path: tuple) -> tuple[str, tuple[str, ...] | None] | None:
    for pattern, key, owned in KIND_KEYS:
        if len(pattern) == len(path) and all(
                p == "*" and isinstance(q, int) or p == q for p, q in zip(pattern, path, strict=True)):
            return key, owned
    return None


def drop_other_kind(path: tuple, old: dict[str, Any], new_kind: Any) -> dict[str, Any]:
    """`old` (the section at `path`) without its kind's parameters when `new_kind` differs from
    its kind (compared case-blind: SGD is sgd); unchanged otherwise."""
    rule = _kind_rule(path)
    if rule is None or rule[0] not in old or not isinstance(new_kind, str):
        return old
    key, owned = rule
    if str(old[key]).lower() == new_kind.lower():
        return old
    if owned is None:
        return {key: old[key]}
    return {k: v for k, v in old.items() if k not in owned}


def kinds_first(overrides: list[str] | tuple[str, ...]) -> list[str]:
    """The overrides that set a kind (KIND_KEYS) first, each group in its given order, so that
    `--set data.imbalance.keep=0.05 --set data.imbalance.kind=step` keeps its keep."""
    def sets_kind(item: str) -> bool:
        parts = item.partition("=")[0].strip().split(".")
        path = tuple(int(p) if p.isdigit() else p for p in parts[:-1])
        rule = _kind_rule(path)
        return rule is not None and rule[0] == parts[-1]

    return sorted(overrides, key=lambda item: not sets_kind(item))


def deep_merge(base: dict[str, Any], top: dict[str, Any], path: tuple = ()) -> dict[str, Any]:
    """`top` over `base`, mappings merged key by key, anything else replaced; a section whose
    kind `top` changes (KIND_KEYS) keeps none of the old kind's parameters."""
    rule = _kind_rule(path)
    if rule is not None and rule[0] in top:
        base = drop_other_kind(path, base, top[rule[0]])
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value, (*path, key))
        else:
            out[key] = value
    return out
