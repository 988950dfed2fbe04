"""End to end: reading a big output whole keeps the real server's memory flat (the file is streamed, not loaded)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from tests.support.server import ServerProcess, ServerStarter, free_port, service_environment

pytestmark = pytest.mark.e2e

MEBIBYTE = 1024 * 1024
OUTPUT_MEBIBYTES = 160
CONCURRENT_READS = 4
# Loaded whole, four reads would add 4 x 160 MiB; streamed, the server holds a few chunks per read.
RSS_GROWTH_BOUND_BYTES = 120 * MEBIBYTE
RSS_SAMPLE_SECONDS = 0.02
JOB_SECONDS = 120.0
JOB_SCRIPT = f"""\
import sys
line = b"x" * 1023 + b"\\n"
for _ in range({OUTPUT_MEBIBYTES} * 1024):
    sys.stdout.buffer.write(line)
"""


@pytest.fixture
def server(tmp_path: Path, database_url: str, start_server: ServerStarter) -> Iterator[ServerProcess]:
    script = tmp_path / "big_output.py"
    script.write_text(JOB_SCRIPT, encoding="utf-8")
    started = start_server(
        service_environment(
            PORT=str(free_port()),
            DATABASE_URL=database_url,
            DATA_DIR=str(tmp_path / "data"),
            LOG_FILE=str(tmp_path / "app.log"),
            JOB_SCRIPT_PATH=str(script),
            OUTPUT_LIMIT_BYTES=str(2 * OUTPUT_MEBIBYTES * MEBIBYTE),
            SHUTDOWN_MODE="kill",
            POLL_INTERVAL_SECONDS="0.2",
        )
    )
    started.wait_until_healthy()
    yield started
    started.stop()


class PeakRss:
    """Samples a process's resident memory in a thread until stopped; keeps the highest value seen."""

    def __init__(self, pid: int) -> None:
        self._process = psutil.Process(pid)
        self.peak: int = int(self._process.memory_info().rss)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(RSS_SAMPLE_SECONDS):
            self.peak = max(self.peak, int(self._process.memory_info().rss))

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def read_discarding(url: str, sizes: list[int]) -> None:
    received = 0
    with httpx.stream("GET", url, timeout=JOB_SECONDS) as response:
        assert response.status_code == 200
        for chunk in response.iter_bytes():
            received += len(chunk)
    sizes.append(received)


def test_reading_a_big_output_whole_keeps_the_server_memory_bounded(server: ServerProcess) -> None:
    with server.client() as client:
        job_id = client.post("/jobs", json={"jobName": "big-output"}).json()["jobId"]
        deadline = time.monotonic() + JOB_SECONDS
        while client.get(f"/jobs/{job_id}").json()["status"] != "completed":
            assert time.monotonic() < deadline, "the job did not complete"
            time.sleep(0.1)
    url = f"{server.base_url}/jobs/{job_id}/attempts/1/output?stream=stdout"
    read_discarding(url, [])  # one read first: whatever a first request allocates once is not growth
    before = psutil.Process(server.pid).memory_info().rss
    sampler = PeakRss(server.pid)
    sizes: list[int] = []
    readers = [threading.Thread(target=read_discarding, args=(url, sizes)) for _ in range(CONCURRENT_READS)]
    for reader in readers:
        reader.start()
    for reader in readers:
        reader.join()
    peak = sampler.stop()
    assert sizes == [OUTPUT_MEBIBYTES * MEBIBYTE] * CONCURRENT_READS
    assert peak - before < RSS_GROWTH_BOUND_BYTES, f"RSS {before / MEBIBYTE:.0f} -> {peak / MEBIBYTE:.0f} MiB"
