"""The config reference in the README is generated from the schema, so it cannot drift."""

from __future__ import annotations

import json
import sys

from pydantic import BaseModel

from imbal.config import Config


def _list_of(ann) -> type[BaseModel] | None:
    """X for an annotation list[X] | None where X is a section."""
    for a in getattr(ann, "__args__", (ann,)):
        if getattr(a, "__origin__", None) is list:
            item = a.__args__[0]
            if isinstance(item, type) and issubclass(item, BaseModel):
                return item
    return None


def _section(model: type[BaseModel], prefix: str, defaults: BaseModel | None = None) -> list[str]:
    rows = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        ann = field.annotation
        sub = next((a for a in getattr(ann, "__args__", (ann,))
                    if isinstance(a, type) and issubclass(a, BaseModel)), None)
        value = None if field.is_required() else (
            getattr(defaults, name) if defaults is not None else field.get_default(call_default_factory=True))
        if sub is not None and value is None and not field.is_required():
            rows.append(f"| `{key}` | `null` | optional section, keys below |")
        if sub is not None:
            rows += _section(sub, key + ".", value if isinstance(value, BaseModel) else None)
            continue
        item = _list_of(ann)
        if item is not None:  # a list of sections (stages): its item's keys as key[].x
            rows.append(f"| `{key}` | `null` | {field.description or ''} |")
            rows += _section(item, key + "[].")
            continue
        default = "required" if field.is_required() else json.dumps(value)
        text = (field.description or "").replace("|", "\\|")
        rows.append(f"| `{key}` | `{default}` | {text} |")
    return rows


def config_reference() -> str:
    return "\n".join(["| key | default | meaning |", "|---|---|---|", *_section(Config, "")]) + "\n"


START, END = "<!-- config-reference:start -->", "<!-- config-reference:end -->"


def with_reference(readme: str) -> str:
    """README text with the generated reference between the markers."""
    head, _, rest = readme.partition(START)
    _, _, tail = rest.partition(END)
    return f"{head}{START}\n{config_reference()}{END}{tail}"


if __name__ == "__main__":
    if sys.argv[1:2] == ["--write"]:
        from pathlib import Path

        path = Path(sys.argv[2])
        path.write_text(with_reference(path.read_text()))
    else:
        sys.stdout.write(config_reference())
