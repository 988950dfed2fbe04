"""The log handler of service/logs.py: lines written by the writer thread, in order, with their request ids, and the
log file rotated by size."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.logs import (
    HandOverHandler,
    JsonFormatter,
    LogFormat,
    RotatingLogFile,
    configure_logging,
    current_request_id,
    lines_written_in_background,
    remove_logging,
)


@pytest.fixture
def log_file(tmp_path: Path) -> Iterator[Path]:
    previous_level = logging.getLogger().level
    yield tmp_path / "service.log"
    remove_logging()
    logging.getLogger().setLevel(previous_level)


def test_lines_handed_to_the_writer_thread_keep_their_order_and_request_ids(log_file: Path) -> None:
    configure_logging(log_file, "INFO", LogFormat.JSON)
    logger = logging.getLogger("service.test")
    with lines_written_in_background():
        for number in range(200):
            token = current_request_id.set(f"request-{number}" if number % 2 else None)
            logger.info("line %d of %s", number, ["mutable", "argument"])
            current_request_id.reset(token)
        try:
            int("shown below its line")
        except ValueError:
            logger.exception("a failure")
        for handler in logging.getLogger().handlers:
            handler.flush()  # returns once the thread has written everything handed over
        assert len(log_file.read_text(encoding="utf-8").splitlines()) == 201
    logger.info("written by its caller once the thread is gone")

    entries = [json.loads(line) for line in log_file.read_text(encoding="utf-8").splitlines()]
    assert [entry["message"] for entry in entries[:200]] == [
        f"line {number} of ['mutable', 'argument']" for number in range(200)
    ]
    assert [entry.get("requestId") for entry in entries[:4]] == [None, "request-1", None, "request-3"]
    assert "ValueError: invalid literal" in entries[200]["exception"]
    assert entries[201]["message"] == "written by its caller once the thread is gone"


def test_the_log_file_is_rotated_once_it_would_pass_its_size(tmp_path: Path) -> None:
    path = tmp_path / "service.log"
    file = RotatingLogFile(path, max_bytes=1000, backups=2)
    file.setFormatter(JsonFormatter())
    handler = HandOverHandler([file])
    logger = logging.getLogger("service.test.rotation")
    logger.propagate = False
    logger.addHandler(handler)
    try:
        for number in range(40):
            logger.warning("line %02d %s", number, "x" * 40)
    finally:
        logger.removeHandler(handler)
        handler.close()
    files = [path, path.with_name("service.log.1"), path.with_name("service.log.2")]
    assert all(each.stat().st_size <= 1000 for each in files)
    assert not path.with_name("service.log.3").exists()
    last = json.loads(path.read_text(encoding="utf-8").splitlines()[-1])
    assert last["message"].startswith("line 39 ")
