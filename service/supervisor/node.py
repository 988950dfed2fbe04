"""This node's identity: the same across restarts of one installation, different between installations."""

from __future__ import annotations

import os
import re
import secrets
import socket
import sys
from pathlib import Path

NODE_ID_FILE_NAME = "node-id"
_UNSAFE_CHARACTERS = re.compile(r"[^A-Za-z0-9._-]+")


def resolve_node_id(configured: str | None, data_dir: Path) -> str:
    """NODE_ID when set; otherwise the id kept in DATA_DIR/node-id, created on the first start."""
    if configured:
        return configured
    path = data_dir / NODE_ID_FILE_NAME
    if path.is_file():
        stored = path.read_text(encoding="utf-8").strip()
        if stored:
            return stored
    host = _UNSAFE_CHARACTERS.sub("-", socket.gethostname()).strip("-")[:40] or "node"
    node_id = f"{host}-{secrets.token_hex(4)}"
    data_dir.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(node_id + "\n", encoding="utf-8")
    temporary.replace(path)
    return node_id


LOCK_FILE_NAME = "node.lock"


class DataDirInUseError(RuntimeError):
    """Another service process runs on the same data folder (and so as the same node)."""


class NodeLock:
    """One service process per data folder: two would each believe the other's running jobs are theirs.

    An advisory lock on DATA_DIR/node.lock, released by the OS when the process ends, however it ends. The
    descriptor is not inheritable, so the jobs' processes (which outlive the service) never hold it.
    """

    def __init__(self, data_dir: Path) -> None:
        self._path = data_dir / LOCK_FILE_NAME
        self._descriptor: int | None = None

    def acquire(self) -> None:
        if sys.platform == "win32":
            return  # documented: Windows has no flock; keep one service per data folder by hand there
        import fcntl  # noqa: PLC0415  (POSIX only)

        self._path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(descriptor)
            raise DataDirInUseError(
                f"another service process is already running with DATA_DIR={self._path.parent}; "
                "each process needs its own DATA_DIR (and so its own node id)"
            ) from None
        os.ftruncate(descriptor, 0)
        os.write(descriptor, f"{os.getpid()}\n".encode())
        self._descriptor = descriptor

    def release(self) -> None:
        if self._descriptor is not None:
            os.close(self._descriptor)  # closing drops the lock
            self._descriptor = None
