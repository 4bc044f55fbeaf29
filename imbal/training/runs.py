"""The run directory: atomic writes, provenance, per-epoch logs, checkpoints that load as data."""

from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from imbal.errors import UserError

MARKERS = ("config.yaml", "results.json", "checkpoints")
# The layout of a resumable checkpoint (last.pt). 2: torch.optim optimizer and lr_scheduler
# state. Before it (no "version"): imbal's own optimizers and epoch-function schedule.
# Weights-only files (best.pt, pretrained.pt) load whatever their version.
CHECKPOINT_VERSION = 2


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _mkstemp(path: Path) -> tuple[int, str]:
    """A temp file beside `path`, with the mode a plain open() would give it (mkstemp's 0600
    would ignore the user's umask)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.fchmod(fd, 0o666 & ~_umask())
    return fd, tmp


def dumps(obj: Any, **kw: Any) -> str:
    """JSON as every run file is written: NaN and Infinity are refused (they are not JSON)."""
    return json.dumps(obj, allow_nan=False, **kw)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temp file in the same directory, fsync, then rename over the target."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _mkstemp(path)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, dumps(obj, indent=2) + "\n")


def atomic_torch_save(path: Path, obj: Any) -> None:
    """torch.save beside the target, then rename: a failed write (torch raises RuntimeError
    for a full disk) leaves the previous file intact and becomes an OSError naming the file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _mkstemp(path)
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except RuntimeError as err:
        Path(tmp).unlink(missing_ok=True)
        raise write_failure(path, err) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_failure(path: Path, err: BaseException) -> OSError:
    """torch's RuntimeError from a failed write as an OSError: ENOSPC when the disk is full."""
    import errno
    import shutil

    try:
        full = shutil.disk_usage(path.parent).free < 1 << 20
    except OSError:
        full = False
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    if full:
        return OSError(errno.ENOSPC, "disk full", str(path))
    return OSError(errno.EIO, f"cannot write ({text[:120]})", str(path))


def load_checkpoint(path: Path, *, resume: bool = False) -> dict:
    """Load a checkpoint as data only (weights_only=True); a bad file is a one-line UserError.
    resume=True: it must also hold training state in this imbal's layout (CHECKPOINT_VERSION)."""
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated, corrupt, or a pickle that is not plain data
        raise UserError(f"cannot load checkpoint {path}: {load_error(err)}") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt or ckpt.get("format") != "imbal":
        raise UserError(f"{path} is not an imbal checkpoint")
    if resume:
        check_resumable(ckpt, path)
    return ckpt


def load_error(err: BaseException) -> str:
    """torch.load's failure in one complete sentence, without its advice to load with
    weights_only=False (that would run whatever code the file holds)."""
    text = str(err).strip()
    if "weights only load failed" in text.lower() or "weights_only" in text:
        why = next((line.strip() for line in text.splitlines()[1:] if line.strip()
                    and "weights_only" not in line and "documentation" not in line), "")
        return ("it holds objects other than plain data" + (f" ({why.rstrip('.')})" if why else "")
                + "; imbal loads checkpoints as data only and never runs code from them")
    first = text.splitlines()[0] if text else type(err).__name__
    sentence = first.split(". ")[0].rstrip(".")
    if "central directory" in first or "corrupt" in first.lower():
        sentence += " (the file is truncated or corrupt)"
    return sentence


def mismatch(path: Path, ckpt: dict, backbone: str, err: BaseException) -> str:
    """A checkpoint whose tensors do not fit the model: which backbone made it, which one the
    config builds, and the first differing tensor."""
    made = ckpt.get("backbone")
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    detail = next((ln for ln in lines if ln.startswith(("size mismatch", "Missing key", "Unexpected key"))),
                  lines[0] if lines else type(err).__name__)
    made_s = f"was made with backbone '{made}'" if made else "was made with another model"
    return (f"checkpoint {path} {made_s}, the config builds '{backbone}' ({detail.rstrip('.')[:300]})")


def check_resumable_file(path: Path) -> None:
    """check_resumable before anything else of a resumed run is looked at (its config may be
    an older imbal's too); mmap: only the header is read, not the tensors."""
    if not path.is_file():
        return  # check_run_dir says so
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # load_checkpoint reports it properly later
        return
    if isinstance(ckpt, dict) and ckpt.get("format") == "imbal":
        check_resumable(ckpt, path)


def check_resumable(ckpt: dict, path: Path) -> None:
    version = ckpt.get("version")
    if version == CHECKPOINT_VERSION:
        return
    if version is None or (isinstance(version, int) and version < CHECKPOINT_VERSION):
        raise UserError(f"{path} was written by an older imbal (its optimizer and schedule state "
                        "are in a layout this version cannot load): the run cannot be resumed, "
                        "start it again (imbal train CONFIG --overwrite)")
    raise UserError(f"{path} was written by a newer imbal (checkpoint version {version!r}, this "
                    f"one reads {CHECKPOINT_VERSION}): resume it with that version")


def check_run_dir(path: Path, *, overwrite: bool, resume: bool) -> None:
    """Refuse a bad output directory before any work, without creating anything."""
    from imbal.locks import check_unlocked

    if path.exists() and not path.is_dir():
        raise UserError(f"output path exists and is not a directory: {path}")
    last = path / "checkpoints" / "last.pt"
    if path.is_dir():
        check_unlocked(path, "run directory")
    if resume:
        if _complete(path):
            raise UserError(f"run {path} is already complete (results.json): nothing to resume; "
                            "start it again with imbal train CONFIG --overwrite")
        if not last.is_file():
            raise UserError(f"nothing to resume in {path}: no checkpoints/last.pt (start it "
                            "again with imbal train CONFIG --overwrite)")
    elif path.is_dir() and any((path / m).exists() for m in MARKERS) and not overwrite:
        hint = ("--resume RUN_DIR or --overwrite" if last.is_file() and not _complete(path)
                else "--overwrite, or another --out")
        raise UserError(f"run directory {path} already holds a run; use {hint}")
    parent = path
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not _writable(parent):
        raise UserError(f"cannot write to output directory {path}: {parent} is not a writable directory")


def _complete(path: Path) -> bool:
    try:
        return json.loads((path / "results.json").read_text()).get("complete") is True
    except (OSError, ValueError, AttributeError):
        return False


def _writable(folder: Path) -> bool:
    """Try it: os.access says yes to root and knows nothing of a read-only file system."""
    try:
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False


def create_run_dir(path: Path, *, overwrite: bool, resume: bool, lock=None) -> Path:
    """Create the run directory (after the run's setup succeeded), take `lock` (an unacquired
    imbal.locks.FolderLock of it), then clear an old run on overwrite."""
    check_run_dir(path, overwrite=overwrite, resume=resume)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"cannot write to output directory {path}: {err.strerror}") from None
    if lock is not None:
        lock.acquire()
    if resume:
        return path
    if overwrite:
        for name in ("results.json", "metrics.jsonl", "confusion.csv", "confusion.png", "error.txt"):
            (path / name).unlink(missing_ok=True)
        for sub in ("checkpoints", "tb"):
            _rmtree(path / sub)
    return path


def _rmtree(p: Path) -> None:
    import shutil

    if p.is_dir():
        shutil.rmtree(p)


def git_revision() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True,
                             text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if rev.returncode != 0:
        return None
    return rev.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def package_version(name: str) -> str | None:
    """A package's version without importing it: a run that never touches torchvision (cached
    image folders, digits) would pay ~2 s of CPU just to print torchvision.__version__."""
    module = sys.modules.get(name)
    if module is not None and hasattr(module, "__version__"):
        return str(module.__version__)
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def provenance(device: torch.device, imports: list[str] | tuple[str, ...] = ()) -> dict:
    """Where and with what a run ran; `imports`: the config's plugins (recorded with file and
    sha256, after the installed entry-point plugins)."""
    import numpy

    import imbal
    from imbal import plugins

    return {
        "git_revision": git_revision(),
        "command": sys.argv,
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor(),
        # A sweep worker placed on a GPU sees only that GPU: this names it as the sweep did.
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "threads": torch.get_num_threads(),
        "versions": {"python": platform.python_version(), "imbal": imbal.__version__,
                     "torch": torch.__version__, "torchvision": package_version("torchvision"),
                     "numpy": numpy.__version__},
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "plugins": plugins.used(imports),
    }


def rng_states() -> dict:
    """Global RNG states as plain data (tensors, lists, ints): loadable with weights_only."""
    import random

    import numpy as np

    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {"torch": torch.get_rng_state(), "python": random.getstate(),
            "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def set_rng_states(st: dict) -> None:
    import random

    import numpy as np

    torch.set_rng_state(st["torch"])
    random.setstate(st["python"])
    name, keys, pos, has_gauss, cached = st["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    if st.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


class EpochLog:
    """metrics.jsonl (rewritten atomically, so a killed run never leaves half a line) + TensorBoard."""

    def __init__(self, run_dir: Path, tensorboard: bool, history: list[dict] | None = None):
        self.path = run_dir / "metrics.jsonl"
        self.rows: list[dict] = list(history or [])
        self.writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter  # slow import: only when asked

            self.writer = SummaryWriter(str(run_dir / "tb"))

    def add(self, row: dict, step: int) -> None:
        """Append a row; TensorBoard tags are <stage>/<key path> (one group per stage) at
        `step`, the epoch counted over the whole run."""
        self.rows.append(row)
        atomic_write_text(self.path, "".join(dumps(r) + "\n" for r in self.rows))
        if self.writer is not None:
            self._scalars(row, step, f"{row['stage']}/" if "stage" in row else "")

    def _scalars(self, row: dict, step: int, prefix: str = "") -> None:
        for key, value in row.items():
            tag = f"{prefix}{key}"
            if isinstance(value, dict):
                self._scalars(value, step, tag + "/")
            elif isinstance(value, list):
                for i, v in enumerate(value):
                    if isinstance(v, (int, float)):
                        self.writer.add_scalar(f"{tag}/{i}", v, step)
            elif isinstance(value, (int, float)) and key not in ("epoch",):
                self.writer.add_scalar(tag, value, step)

    def figure(self, tag: str, fig, step: int) -> None:
        if self.writer is not None:
            self.writer.add_figure(tag, fig, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
