"""One tensor cache for every data source.

Reading a data set is slow where it decodes (a folder of 60k JPEGs: tens of seconds;
torchvision's CIFAR reader: an md5 of every file, then unpickling); the result is a few uint8
tensors that load in milliseconds. A source calls ``cached(tag, identity, stamps, build)``:

- ``identity``: what the entry is (JSON-able: the root, the split, image_size, which files were
  chosen...), everything besides the files that changes the decoded result;
- ``stamps``: (path, size, mtime_ns) of every file the entry is decoded from (``stamp(paths)``);
- ``build()``: decodes them into a dict of tensors (plus plain lists, strings, numbers).

The key hashes VERSION, the tag, the identity and the stamps, so editing, adding or removing a
source file, or changing image_size, gives a new entry; the file name's prefix hashes only
VERSION, tag and identity, so a new entry replaces the stale one of the same identity instead of
piling up. Entries live in $IMBAL_CACHE (default ~/.cache/imbal), never next to the data (its
folder may be read-only), are written atomically (temp file in the same folder, then
os.replace) and read back memory-mapped (a subset pages in only the rows it takes; parallel runs
share the pages). An unwritable cache is a warning; an unreadable entry is rebuilt. Deleting
the folder at any time is safe.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch

# Bump when a source's decoding or the entry layout changes, so older entries are not reused.
VERSION = 2
_MARK = "imbal_cache_version"

Stamp = tuple[str, int, int]


def cache_dir() -> str:
    return os.path.expanduser(os.environ.get("IMBAL_CACHE") or "~/.cache/imbal")


def warn(msg: str) -> None:
    print(f"warning: {msg}", file=sys.stderr)


def stamp(paths: Iterable[str]) -> list[Stamp]:
    """(path, size, mtime_ns) of each file, in the given order: what an entry is keyed by."""
    out = []
    for p in paths:
        st = os.stat(p)
        out.append((p, st.st_size, st.st_mtime_ns))
    return out


def _digest(*parts: Any) -> str:
    return hashlib.sha256(json.dumps([VERSION, *parts]).encode()).hexdigest()


def entry_path(tag: str, identity: Any, stamps: Sequence[Stamp]) -> tuple[str, str]:
    """(prefix, path) of the entry: the prefix names tag + identity, the rest adds the stamps."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", tag)[:40]
    prefix = f"{safe}-{_digest(tag, identity)[:12]}-"
    name = f"{prefix}{_digest(tag, identity, stamps)[:24]}.pt"  # tuples dump as JSON lists
    return prefix, os.path.join(cache_dir(), name)


def lookup(tag: str, identity: Any, stamps: Sequence[Stamp]) -> dict | None:
    """The stored entry, memory-mapped, or None (absent, or unreadable: it will be rebuilt)."""
    return _load(entry_path(tag, identity, stamps)[1])


def cached(tag: str, identity: Any, stamps: Sequence[Stamp], build: Callable[[], dict], *,
           what: str) -> dict:
    """The entry for (tag, identity, stamps): from the cache, else ``build()`` and store it.

    ``what`` describes the work for the one line printed when it is done ("decoded 5000 images
    under ROOT/train"), since a first load can take a while and the user should know why.
    """
    prefix, path = entry_path(tag, identity, stamps)
    blob = _load(path)
    if blob is not None:
        return blob
    t0 = time.perf_counter()
    blob = dict(build())
    print(f"{tag}: {what} in {time.perf_counter() - t0:.1f} s; caching in {path}",
          file=sys.stderr)
    _save(path, prefix, {**blob, _MARK: VERSION})
    return blob


def _load(path: str) -> dict | None:
    if not os.path.isfile(path):
        return None
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:  # truncated, foreign or from another torch: decode again, overwrite
        warn(f"ignoring unreadable cache file {path} ({type(e).__name__}); rebuilding it")
        return None
    if not isinstance(blob, dict) or blob.pop(_MARK, None) != VERSION:
        warn(f"ignoring cache file {path} (not an imbal cache entry); rebuilding it")
        return None
    return blob


def _save(path: str, prefix: str, blob: dict) -> None:
    """Atomic write, then drop stale entries of the same identity (same prefix). Failure only
    warns: the data is already in memory, the next run decodes again."""
    folder = os.path.dirname(path)
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".pt")
        try:
            with os.fdopen(fd, "wb") as f:
                torch.save(blob, f)
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
        for name in os.listdir(folder):
            if name.startswith(prefix) and name != os.path.basename(path):
                try:
                    os.unlink(os.path.join(folder, name))
                except FileNotFoundError:  # a parallel run removed it first
                    pass
    except (OSError, RuntimeError) as e:  # torch.save raises RuntimeError on a full disk
        why = getattr(e, "strerror", None) or (str(e).strip().splitlines() or [type(e).__name__])[0][:120]
        warn(f"could not write the data cache to {folder} ({why}); set IMBAL_CACHE "
             "to a writable directory to avoid decoding again")
