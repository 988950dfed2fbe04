"""Reading an attempt's output files: their last bytes (stored on the attempt row), and new bytes as they grow."""

from __future__ import annotations

import os
from pathlib import Path

# PostgreSQL text cannot hold NUL; a job's output may. It is shown as U+FFFD, like any byte that is not UTF-8.
_NUL = "\x00"
_REPLACEMENT = "\ufffd"


def read_tail(path: Path, max_bytes: int) -> bytes | None:
    """The last `max_bytes` of the file; None if there is no such file (the program never started, or output is
    on another node)."""
    if max_bytes <= 0:
        return b""
    try:
        with path.open("rb") as file:
            size = file.seek(0, os.SEEK_END)
            file.seek(max(0, size - max_bytes))
            return file.read(max_bytes)
    except FileNotFoundError:
        return None


def tail_text(path: Path, max_bytes: int) -> str | None:
    """`read_tail` as text for the database: UTF-8, any other byte (a character cut in two, NUL) shown as U+FFFD."""
    tail = read_tail(path, max_bytes)
    if tail is None:
        return None
    return tail.decode("utf-8", errors="replace").replace(_NUL, _REPLACEMENT)


def read_from(path: Path, offset: int, max_bytes: int) -> bytes:
    """Up to `max_bytes` of the file from `offset`; empty at its end or when it does not exist (yet)."""
    try:
        with path.open("rb") as file:
            file.seek(offset)
            return file.read(max_bytes)
    except FileNotFoundError:
        return b""
