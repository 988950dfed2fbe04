"""Reading an attempt's output files: their last bytes (stored on the attempt row), and new bytes as they grow."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from service.domain.paths import AttemptFiles

# PostgreSQL text cannot hold NUL; a job's output may. It is shown as U+FFFD, like any byte that is not UTF-8.
_NUL = "\x00"
_REPLACEMENT = "\ufffd"
# An attempt whose folder could not even be made (its path runs through a file) has nothing to remove either.
_NOTHING_THERE = (FileNotFoundError, NotADirectoryError)


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


def remove_after_recording(files: AttemptFiles) -> int:
    """Once an attempt's outcome and tails are on its row: remove its exit-status file, its empty output files and
    then its folders if nothing is left in them; returns how many entries it removed.

    A folder is removed only when empty; a new attempt of the same job making its folder meanwhile may see its
    job's folder vanish under it, and makes it again (see runner/cleanup.py).
    """
    removed = 0
    with contextlib.suppress(*_NOTHING_THERE):
        files.exit_status.unlink()
        removed += 1
    for path in (files.stdout, files.stderr):
        try:
            if path.stat().st_size == 0:
                path.unlink()
                removed += 1
        except _NOTHING_THERE:
            pass
    return removed + _remove_empty_folders(files)


def remove_attempt_files(files: AttemptFiles) -> int:
    """Remove an attempt's output and exit-status files and its folders (retention); returns entries removed."""
    removed = 0
    for path in (files.stdout, files.stderr, files.exit_status):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed += 1
    return removed + _remove_empty_folders(files)


def _remove_empty_folders(files: AttemptFiles) -> int:
    """The attempt's folder, then its job's, each only if empty; returns how many went."""
    removed = 0
    for folder in (files.directory, files.directory.parent):
        try:
            folder.rmdir()
        except OSError:
            break  # not empty (output kept, or another attempt of the job), or already gone
        removed += 1
    return removed
