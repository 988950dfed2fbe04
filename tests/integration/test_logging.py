"""The log lines of the real app in both formats: readable text, and JSON lines carrying the request's id."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from litestar.testing import AsyncTestClient

from service.app import create_app
from service.logs import LogFormat, configure_logging, remove_logging
from service.settings import Settings
from tests.support.keeper import with_prebuilt_keeper

FAR_FUTURE = "2099-01-01T00:00:00Z"


@pytest.fixture
def log_file(tmp_path: Path) -> Iterator[Path]:
    previous_level = logging.getLogger().level
    yield tmp_path / "logs" / "service.log"
    remove_logging()
    logging.getLogger().setLevel(previous_level)


async def submit_with_request_id(settings: Settings, keeper_build_dir: Path) -> str:
    app = create_app(with_prebuilt_keeper(settings, keeper_build_dir))
    async with AsyncTestClient(app=app) as client:
        response = await client.post(
            "/jobs", json={"jobName": "logged", "runAt": FAR_FUTURE}, headers={"X-Request-ID": "trace-7"}
        )
        assert response.status_code == 201, response.text
        job_id: str = response.json()["jobId"]
    for handler in logging.getLogger().handlers:
        handler.flush()
    return job_id


def read_lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


async def test_json_lines_carry_the_request_id_of_the_request_that_caused_them(
    make_settings: Callable[..., Settings], keeper_build_dir: Path, log_file: Path
) -> None:
    settings = make_settings(log_format="json", log_file=log_file)
    configure_logging(settings.log_file, "INFO", settings.log_format)

    job_id = await submit_with_request_id(settings, keeper_build_dir)

    entries = [json.loads(line) for line in read_lines(log_file)]
    assert all({"time", "level", "logger", "message"} <= entry.keys() for entry in entries)
    accepted = [entry for entry in entries if entry["message"].startswith(f"job {job_id} accepted")]
    assert len(accepted) == 1
    assert accepted[0]["requestId"] == "trace-7"
    assert accepted[0]["level"] == "INFO"
    started = [entry for entry in entries if entry["message"].startswith("supervisor started")]
    assert started
    assert "requestId" not in started[0]  # caused by the start-up, not by a request


async def test_text_lines_stay_readable_and_name_the_request(
    make_settings: Callable[..., Settings], keeper_build_dir: Path, log_file: Path
) -> None:
    settings = make_settings(log_file=log_file)
    assert settings.log_format is LogFormat.TEXT  # the default
    configure_logging(settings.log_file, "INFO", settings.log_format)

    job_id = await submit_with_request_id(settings, keeper_build_dir)

    lines = read_lines(log_file)
    accepted = [line for line in lines if f"job {job_id} accepted" in line]
    assert len(accepted) == 1
    assert " INFO service.api.jobs: " in accepted[0]
    assert accepted[0].endswith("[request trace-7]")
    assert not any(line.lstrip().startswith("{") for line in lines)
