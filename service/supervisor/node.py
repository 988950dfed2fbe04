"""This node's identity: the same across restarts of one installation, different between installations."""

from __future__ import annotations

import re
import secrets
import socket
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
