"""Messages for the person at the terminal (stderr), silenced by --quiet."""

from __future__ import annotations

import sys


def say(msg: str, quiet: bool = False) -> None:
    if not quiet:
        print(msg, file=sys.stderr, flush=True)
