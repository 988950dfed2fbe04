"""Several real servers on one PostgreSQL, for the node tests: each with its own data folder, node id and port,
short leases, and one job program that notes each run's start and end in a shared file."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections import Counter
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from tests.support.server import ServerProcess, ServerStarter, free_port, service_environment

# Short leases keep each test short: a node is declared dead about 4 s after its last heartbeat.
TEST_LEASE_SECONDS = 3.0
NODE_JOB_SCRIPT = """\
#!/bin/sh
# A job for the node tests: note the start of this run in $1, sleep $2 seconds, note its end.
echo "start $JOB_ID $JOB_ATTEMPT" >> "$1"
sleep "$2"
echo "done $JOB_ID $JOB_ATTEMPT" >> "$1"
"""

RunKey = tuple[str, int]


class Cluster:
    def __init__(self, tmp_path: Path, database_url: str, start_server: ServerStarter) -> None:
        self.tmp_path = tmp_path
        self.database_url = database_url
        self.start_server = start_server
        self.runs_file = tmp_path / "runs.txt"
        self.script = tmp_path / "note_sleep_note.sh"
        self.script.write_text(NODE_JOB_SCRIPT, encoding="utf-8")
        self.script.chmod(0o755)
        self.nodes: dict[str, ServerProcess] = {}
        self._ports: dict[str, int] = {}

    def start_node(
        self, name: str, *, database_url: str | None = None, wait: bool = True, **settings: str
    ) -> ServerProcess:
        """Start (or start again, with the same folder, id and port) the node `name`."""
        port = self._ports.setdefault(name, free_port())
        defaults = {
            "MAX_CONCURRENT_JOBS": "10",
            "MAX_ATTEMPTS": "3",
            "RETRY_BACKOFF_BASE_SECONDS": "0.1",
            "POLL_INTERVAL_SECONDS": "0.2",
            "NODE_LEASE_SECONDS": str(TEST_LEASE_SECONDS),
        }
        environment = service_environment(
            PORT=str(port),
            NODE_ID=name,
            DATABASE_URL=database_url or self.database_url,
            DATA_DIR=str(self.tmp_path / name),
            LOG_FILE=str(self.tmp_path / f"{name}.log"),
            JOB_SCRIPT_PATH=str(self.script),
            **{**defaults, **settings},
        )
        server = self.start_server(environment)
        self.nodes[name] = server
        if wait:
            server.wait_until_healthy()
        return server

    def submit(self, server: ServerProcess, count: int, seconds: float, prefix: str = "job") -> list[str]:
        with server.client() as client:
            return [self.submit_one(client, seconds, f"{prefix}-{index}") for index in range(count)]

    def submit_one(self, client: httpx.Client, seconds: float, name: str) -> str:
        response = client.post("/jobs", json={"jobName": name, "arguments": [str(self.runs_file), str(seconds)]})
        assert response.status_code == 201, response.text
        job_id: str = response.json()["jobId"]
        return job_id

    def runs(self) -> tuple[Counter[RunKey], Counter[RunKey]]:
        """(starts, ends) of every program run, by (jobId, attempt), from what the programs wrote."""
        starts: Counter[RunKey] = Counter()
        ends: Counter[RunKey] = Counter()
        lines = self.runs_file.read_text(encoding="utf-8").splitlines() if self.runs_file.exists() else []
        for line in lines:
            event, job_id, attempt = line.split()
            (starts if event == "start" else ends)[(job_id, int(attempt))] += 1
        return starts, ends

    def attempts(self) -> list[dict[str, Any]]:
        """Every attempt row, as jobId, attempt, nodeId, outcome, pid, error."""
        return asyncio.run(
            self._fetch("""
            SELECT 'job-' || job_id AS job_id, attempt_number, node_id, outcome, pid, error, finished_at
            FROM attempts ORDER BY job_id, attempt_number
        """)
        )

    def node_rows(self) -> dict[str, dict[str, Any]]:
        return {row["id"]: row for row in asyncio.run(self._fetch("SELECT * FROM nodes"))}

    async def _fetch(self, query: str) -> list[dict[str, Any]]:
        connection = await asyncpg.connect(self.database_url)
        try:
            return [dict(row) for row in await connection.fetch(query)]
        finally:
            await connection.close()

    def running_on(self, node: str) -> list[dict[str, Any]]:
        return [row for row in self.attempts() if row["node_id"] == node and row["outcome"] == "running"]

    def kill_node_and_its_programs(self, name: str) -> None:
        """kill -9 the node's service and, right after, every process group it runs (a machine lost at once)."""
        groups = [row["pid"] for row in self.running_on(name) if row["pid"] is not None]
        self.nodes[name].kill_hard()
        for group in groups:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGKILL)
