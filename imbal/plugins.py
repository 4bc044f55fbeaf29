"""Plugins: user code that registers components with the same decorators the built-ins use.

A plugin is one of
- a module name (`my_pkg.imbal_parts`), imported from sys.path like any module;
- a .py file (`poly_loss.py`; anything ending in .py or holding a '/' is a path), imported
  alone under a stable module name made from its resolved path, so importing the same file
  twice is a no-op;
- an installed package's entry point in the group `imbal.plugins`
  (`[project.entry-points."imbal.plugins"] my_parts = "my_pkg.imbal_parts"`): every one is
  imported by every process that builds or checks a run.

Where they come from: the config's `imports:` list (paths relative to the config file; the
resolved config keeps them as absolute paths, so a run directory re-runs or re-evaluates on
its own), `--import` on `imbal train|eval|data|sweep`, a sweep file's `imports:`, and
`imbal.train(..., imports=[...])`. `load(specs)` is the one entry: config.resolve calls it
before a config is validated, a sweep worker calls it with its job's imports.

A plugin that cannot be imported (not found, a syntax error, an exception, a name registered
twice) is refused with one line naming it; the registries are put back as they were before it.
What was imported (module, file, sha256 of the file) is recorded in each run's meta.json.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import re
import sys
import traceback
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from imbal.errors import UserError
from imbal.registry import RegistrationError, restore, snapshot

ENTRY_POINT_GROUP = "imbal.plugins"
_MODULE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_UNSAFE = re.compile(r"[^A-Za-z0-9_]")

_loaded: dict[str, dict[str, Any]] = {}  # module name -> record, in import order
_by_spec: dict[str, str] = {}  # an `imports:` entry -> the module name it was imported as
_entry_points_done = False


def is_path(spec: str) -> bool:
    return spec.endswith(".py") or "/" in spec or os.sep in spec


def check_specs(value: Any, where: str = "imports") -> list[str]:
    """The `imports:` value as a list of strings (one string is a one-item list)."""
    if value is None:
        return []
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(s, str) and s.strip() for s in items):
        raise UserError(f"bad value for '{where}': must be a list of module names or .py "
                        f"paths (got {value!r})")
    return [s.strip() for s in items]


def absolute(specs: Iterable[str], base: str | Path | None = None) -> list[str]:
    """Paths made absolute against `base` (default: the working directory); names unchanged."""
    root = Path(base) if base is not None else Path.cwd()
    return [str((root / Path(s).expanduser()).resolve()) if is_path(s) else s for s in specs]


def merge(*lists: Iterable[str] | None) -> list[str]:
    """Concatenation without repeats, first occurrence kept."""
    out: list[str] = []
    for items in lists:
        out += [s for s in items or () if s not in out]
    return out


def module_name_for(path: Path) -> str:
    """The stable module name of a plugin file: its stem and a digest of its resolved path."""
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:10]
    return f"imbal_plugin_{_UNSAFE.sub('_', path.stem)}_{digest}"


def loaded() -> list[dict[str, Any]]:
    """What this process imported as plugins: [{import, module, file, sha256}, ...]."""
    return [dict(r) for r in _loaded.values()]


def used(specs: Iterable[str]) -> list[dict[str, Any]]:
    """The records of a run's plugins: every entry point, then its `imports:` (already loaded)."""
    names = [n for n, r in _loaded.items() if "entry_point" in r]
    names += [_by_spec[s] for s in specs if s in _by_spec]
    return [dict(_loaded[n]) for n in merge(names)]


def load(specs: Iterable[str] = ()) -> list[dict[str, Any]]:
    """Import the installed entry points (once per process), then every spec, in order."""
    load_entry_points()
    return [load_one(s) for s in check_specs(list(specs))]


def load_one(spec: str) -> dict[str, Any]:
    rec = _load_file(spec) if is_path(spec) else _load_module(spec)
    _by_spec[spec] = rec["module"]
    return rec


def load_entry_points() -> None:
    global _entry_points_done
    if _entry_points_done:
        return
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        dist = f"{ep.dist.name} {ep.dist.version}" if ep.dist is not None else "unknown package"
        label = f"entry point '{ep.name} = {ep.value}' ({dist})"
        if ep.module in _loaded:
            continue
        _guarded(label, ep.module, _origin(ep.module, label) or None, ep.load)
        _record(ep.module, {"entry_point": f"{ep.name} = {ep.value}", "distribution": dist})
    _entry_points_done = True


def _sha256(path: str | None) -> str | None:
    if not path or not os.path.isfile(path):
        return None
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _record(name: str, extra: dict[str, Any]) -> dict[str, Any]:
    if name not in _loaded:
        file = getattr(sys.modules.get(name), "__file__", None)
        _loaded[name] = {**extra, "module": name, "file": file, "sha256": _sha256(file)}
    return _loaded[name]


def _load_file(spec: str) -> dict[str, Any]:
    path = Path(absolute([spec])[0])
    if path.suffix != ".py":
        raise UserError(f"cannot import plugin '{spec}': a path must name a .py file "
                        "(or give a module name such as my_pkg.parts)")
    if not path.is_file():
        raise UserError(f"cannot import plugin '{path}': file not found")
    name = module_name_for(path)
    if name in sys.modules:
        return _record(name, {"import": str(path)})
    same = _module_with_file(path)  # the same file already imported under a module name
    if same is not None:
        return _record(same, {"import": str(path)})
    loader_spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(loader_spec)

    def run() -> None:
        sys.modules[name] = module
        loader_spec.loader.exec_module(module)

    _guarded(f"'{path}'", name, str(path), run)
    return _record(name, {"import": str(path)})


def _load_module(spec: str) -> dict[str, Any]:
    if not _MODULE.match(spec):
        raise UserError(f"cannot import plugin '{spec}': not a module name (my_pkg.parts) "
                        "or a .py file")
    if spec in sys.modules:
        return _record(spec, {"import": spec})
    origin = _origin(spec, f"'{spec}'")
    if origin is False:
        raise UserError(f"cannot import plugin '{spec}': no module named '{spec}'")
    if origin:
        as_file = module_name_for(Path(origin).resolve())
        if as_file in sys.modules:  # the same file was imported by its path: the same module
            sys.modules[spec] = sys.modules[as_file]
            return _record(as_file, {"import": spec})
    _guarded(f"'{spec}'", spec, origin or None, lambda: importlib.import_module(spec))
    return _record(spec, {"import": spec})


def _origin(name: str, label: str) -> str | bool:
    """The file module `name` would be imported from; False if there is no such module, ""
    if it has no file. Only its parent packages run (find_spec imports them)."""
    try:
        found = importlib.util.find_spec(name)
    except (ImportError, ValueError):  # a parent package is missing, or is not a package
        return False
    except Exception as err:  # a parent package that fails to import
        raise UserError(f"cannot import plugin {label}: {_reason(err, None)}") from None
    if found is None:
        return False
    return found.origin if found.origin and os.path.isfile(found.origin) else ""


def _guarded(label: str, name: str, file: str | None, run: Callable[[], Any]) -> None:
    """run() the import; any failure -> registries and sys.modules as before, one-line error."""
    _import_registry_homes()  # so a rollback never drops a built-in registered meanwhile
    before = snapshot()
    try:
        run()
    except (Exception, SystemExit) as err:
        restore(before)
        sys.modules.pop(name, None)
        raise UserError(f"cannot import plugin {label}: {_reason(err, file)}") from None


def _reason(err: BaseException, file: str | None) -> str:
    if isinstance(err, SyntaxError):
        return f"SyntaxError at line {err.lineno}: {err.msg}"
    if isinstance(err, (RegistrationError, UserError)):
        return str(err)
    text = str(err).strip()
    where = ""
    if file:
        lines = [f.lineno for f in traceback.extract_tb(err.__traceback__)
                 if os.path.abspath(f.filename) == os.path.abspath(file)]
        where = f" at line {lines[-1]}" if lines else ""
    first = text.splitlines()[0][:300] if text else ""
    return f"{type(err).__name__}{where}" + (f": {first}" if first else "")


def _module_with_file(path: Path) -> str | None:
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None)
        if file and os.path.basename(file) == path.name and Path(file).resolve() == path:
            return name
    return None


def _import_registry_homes() -> None:
    import imbal

    for module, _ in imbal.REGISTRIES.values():
        importlib.import_module(module)
