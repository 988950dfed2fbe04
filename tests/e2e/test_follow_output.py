"""End to end: `?follow=true` streams an attempt's output live (Server-Sent Events) from the real server, and the
stream ends when the attempt does."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.server import ServerStarter, free_port, service_environment

pytestmark = pytest.mark.e2e

# Prints a line, then waits for the test to say "go on" (a file) before the next: the test can prove each line
# arrives while the job still runs.
JOB_SCRIPT = """\
#!/bin/sh
# $1: a folder; the job prints step N, then waits for the file $1/N before going on.
for step in 1 2 3; do
    echo "step $step"
    while [ ! -e "$1/$step" ]; do sleep 0.02; done
done
echo "done"
"""
STREAM_SECONDS = 20.0


class Events:
    """SSE events read by a thread from a live response: (event, data) pairs as they come, and whether it ended."""

    def __init__(self, response: httpx.Response) -> None:
        self.received: list[tuple[str, str]] = []
        self.ended = threading.Event()
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._read, args=(response,), daemon=True)
        self._thread.start()

    def _read(self, response: httpx.Response) -> None:
        event = "message"
        data: list[str] = []
        try:
            for line in response.iter_lines():
                if line == "":
                    if data:
                        with self._changed:
                            self.received.append((event, "\n".join(data)))
                            self._changed.notify_all()
                    event, data = "message", []
                elif line.startswith("event: "):
                    event = line.removeprefix("event: ")
                elif line.startswith("data: "):
                    data.append(line.removeprefix("data: "))
        finally:
            with self._changed:
                self.ended.set()
                self._changed.notify_all()

    def text(self) -> str:
        return "".join(data for event, data in self.received if event == "output")

    def wait_for(self, wanted: str) -> None:
        """Until the streamed output contains `wanted`; fails after STREAM_SECONDS."""
        deadline = time.monotonic() + STREAM_SECONDS
        with self._changed:
            while wanted not in self.text():
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.ended.is_set():
                    pytest.fail(f"{wanted!r} never arrived; received {self.received}")
                self._changed.wait(remaining)

    def wait_for_end(self) -> None:
        if not self.ended.wait(STREAM_SECONDS):
            pytest.fail(f"the stream did not end; received {self.received}")


@pytest.fixture
def job_script(tmp_path: Path) -> Path:
    script = tmp_path / "steps.sh"
    script.write_text(JOB_SCRIPT, encoding="utf-8")
    script.chmod(0o755)
    return script


@pytest.fixture
def base_url(tmp_path: Path, database_url: str, start_server: ServerStarter, job_script: Path) -> Iterator[str]:
    server = start_server(
        service_environment(
            PORT=str(free_port()),
            DATABASE_URL=database_url,
            DATA_DIR=str(tmp_path / "data"),
            LOG_FILE=str(tmp_path / "app.log"),
            JOB_SCRIPT_PATH=str(job_script),
            SHUTDOWN_MODE="kill",
            POLL_INTERVAL_SECONDS="0.2",
        )
    )
    server.wait_until_healthy()
    yield server.base_url
    server.stop()


def test_a_followed_attempt_streams_each_line_while_it_runs_and_ends_with_it(base_url: str, tmp_path: Path) -> None:
    steps = tmp_path / "steps"
    steps.mkdir()
    with httpx.Client(base_url=base_url, timeout=STREAM_SECONDS) as client:
        job = client.post("/jobs", json={"jobName": "steps", "arguments": [str(steps)]}).json()
        deadline = time.monotonic() + STREAM_SECONDS
        while client.get(f"/jobs/{job['jobId']}").json()["attempts"] == 0:
            assert time.monotonic() < deadline, "the job never started"
            time.sleep(0.05)

        url = f"/jobs/{job['jobId']}/attempts/1/output?stream=stdout&follow=true"
        with client.stream("GET", url) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            events = Events(response)
            for step in (1, 2, 3):
                events.wait_for(f"step {step}\n")
                # The job is still running: it waits for this very file.
                assert client.get(f"/jobs/{job['jobId']}").json()["status"] == "running"
                assert not events.ended.is_set()
                (steps / str(step)).touch()
            events.wait_for_end()

    assert events.text() == "step 1\nstep 2\nstep 3\ndone\n"
    assert events.received[-1] == ("end", '{"outcome": "succeeded", "exitCode": 0, "signal": null}')
