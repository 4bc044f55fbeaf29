"""Folder locks: one writer per run directory and per sweep folder.

An OS file lock (fcntl.flock on FOLDER/.lock) that the kernel drops when its process dies, so a
killed run never leaves a stale lock behind. The lock file itself stays (removing it would race
with a process about to lock it); it holds the pid of the last holder, for the message.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from imbal.errors import UserError

LOCK_NAME = ".lock"


class FolderLock:
    """Held from `acquire` until `release` (or the process ends)."""

    def __init__(self, folder: Path, what: str):
        self.folder, self.what = Path(folder), what
        self.fd: int | None = None

    def acquire(self) -> FolderLock:
        path = self.folder / LOCK_NAME
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 32).decode(errors="replace").strip()
            os.close(fd)
            raise UserError(f"{self.what} {self.folder} is in use by another imbal process"
                            f"{f' (pid {holder})' if holder.isdigit() else ''}; wait for it "
                            "to end or stop it first") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor drops the lock
            self.fd = None

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def check_unlocked(folder: Path, what: str) -> None:
    """Refuse early (before any set-up) when another process holds `folder`; takes nothing."""
    if (Path(folder) / LOCK_NAME).is_file():
        FolderLock(folder, what).acquire().release()
