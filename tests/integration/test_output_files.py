"""What an attempt leaves under DATA_DIR/output once recorded: nothing when it printed nothing, only its output
files when it printed something; and a followed output shows each CRLF as the one line break it is."""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from litestar.testing import AsyncTestClient

from service.api.attempts import FOLLOW_CHUNK_BYTES
from service.app import create_app
from service.domain.paths import attempt_files
from service.domain.status import JobStatus
from service.runner.launcher import ProcessLauncher
from service.settings import Settings
from tests.support.api import Client, wait_for_job
from tests.support.processes import write_script
from tests.support.stores import Stores
from tests.support.supervision import Supervisors, submit, supervisor_config, wait_for_final

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="uses /bin/sh scripts")

SILENT_JOBS = 20


def entries_under(folder: Path) -> list[Path]:
    return sorted(Path(root) / name for root, folders, files in os.walk(folder) for name in [*folders, *files])


@pytest.fixture
async def supervisors(stores: Stores, launcher: ProcessLauncher) -> AsyncIterator[Supervisors]:
    created = Supervisors(stores, launcher)
    yield created
    await created.cleanup()


async def test_silent_attempts_leave_nothing_on_disk_once_recorded(
    stores: Stores, supervisors: Supervisors, tmp_path: Path
) -> None:
    output_dir = tmp_path / "output"
    supervisor = supervisors.create(supervisor_config("files-node", output_dir, max_concurrent_jobs=8))
    await supervisor.start()
    silent = write_script(tmp_path, "silent.sh", "exit 0\n")
    failing = write_script(tmp_path, "failing.sh", "exit 4\n")
    jobs = [await submit(stores, silent, name=f"silent-{n}") for n in range(SILENT_JOBS)]
    jobs.append(await submit(stores, failing, name="fails-twice", max_attempts=2))
    for job in jobs:
        await wait_for_final(stores, job.id)
    assert await supervisor.wait_until_idle(10)

    assert (await stores.jobs.find_job(jobs[-1].id)).attempts_count == 2  # type: ignore[union-attr]
    assert entries_under(output_dir) == []


async def test_an_attempt_that_printed_keeps_only_its_output_file(
    stores: Stores, supervisors: Supervisors, tmp_path: Path
) -> None:
    output_dir = tmp_path / "output"
    supervisor = supervisors.create(supervisor_config("files-node", output_dir))
    await supervisor.start()
    job = await submit(stores, write_script(tmp_path, "talks.sh", "echo hello\n"))
    assert (await wait_for_final(stores, job.id)).status is JobStatus.COMPLETED
    assert await supervisor.wait_until_idle(10)

    files = attempt_files(output_dir, job.id, 1)
    assert entries_under(output_dir) == [files.directory.parent, files.directory, files.stdout]
    assert files.stdout.read_text() == "hello\n"


# --- following an output whose CRLF falls across two reads ------------------------------------------------------

CRLF_JOB = f"""\
import sys
# Byte {FOLLOW_CHUNK_BYTES} (the last of the first read) is a CR; the LF after it starts the second read.
chunk = {FOLLOW_CHUNK_BYTES}
sys.stdout.buffer.write(b"a" * (chunk - 1) + b"\\r\\n" + b"x" * (chunk - 2) + b"\\r\\nend\\n")
"""


def followed_text(body: str) -> str:
    """The `output` events' data as an EventSource gives it: data lines joined by LF, events concatenated."""
    text = []
    for block in body.replace("\r\n", "\n").split("\n\n"):
        lines = block.split("\n")
        if "event: output" in lines:
            text.append("\n".join(line.removeprefix("data: ") for line in lines if line.startswith("data: ")))
    return "".join(text)


@pytest.fixture
async def client(make_settings: Callable[..., Settings], tmp_path: Path) -> AsyncIterator[Client]:
    script = tmp_path / "crlf.py"
    script.write_text(CRLF_JOB, encoding="utf-8")
    async with AsyncTestClient(app=create_app(make_settings(job_script_path=script, shutdown_mode="drain"))) as test:
        yield test


async def test_a_crlf_split_across_two_follow_reads_is_one_line_break(client: Client) -> None:
    job = (await client.post("/jobs", json={"jobName": "crlf"})).json()
    await wait_for_job(client, job["jobId"], lambda j: j["status"] == "completed")

    response = await client.get(f"/jobs/{job['jobId']}/attempts/1/output?follow=true")

    expected = "a" * (FOLLOW_CHUNK_BYTES - 1) + "\n" + "x" * (FOLLOW_CHUNK_BYTES - 2) + "\nend\n"
    assert followed_text(response.text) == expected
