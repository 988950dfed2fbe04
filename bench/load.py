"""Closed-loop HTTP load: N connections each send one request after another for a fixed time, from 1+ processes.

The client is bench/http_client.py on asyncio (uvloop): a few tens of microseconds of CPU per request, where httpx
spent about 0.8 ms and took the core the service needed. The load can still be spread over several processes
(`processes`); each result says how many it used and how much CPU the client burnt, so that a client-bound figure
can be told from a server-bound one.
"""

from __future__ import annotations

import asyncio
import itertools
import multiprocessing
import resource
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace

from bench.harness import http_connections
from bench.http_client import HttpConnection, HttpError

# Spawned client processes need this long to start and open their connections before the common start.
PROCESS_START_MARGIN_SECONDS = 3.0


@dataclass(frozen=True)
class LoadPlan:
    base_url: str
    method: str
    path: str
    connections: int
    seconds: float
    expected_status: int
    body_template: str | None = None
    """JSON body; `{n}` in it becomes a number unique to each request."""
    keep_bodies: bool = False


@dataclass
class LoadResult:
    ok: int = 0
    errors: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    """Seconds, of the requests answered with the expected status."""
    bodies: list[bytes] = field(default_factory=list)
    client_cpu_seconds: float = 0.0
    processes: int = 1

    @property
    def rate(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0

    @property
    def client_cores(self) -> float:
        """CPU the client used, in cores (1.0 = one core busy all along): near 1 per process means client-bound."""
        return self.client_cpu_seconds / self.seconds if self.seconds else 0.0


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _run(plan: LoadPlan, worker: int, start_at: float | None) -> LoadResult:
    result = LoadResult()
    numbers = itertools.count()
    # The connections are open before the clock starts: the run measures requests, not TCP handshakes.
    async with http_connections(plan.base_url, plan.connections) as connections:
        if start_at is not None:
            await asyncio.sleep(max(0.0, start_at - time.time()))
        cpu_before = _cpu_seconds()
        started = time.perf_counter()
        deadline = started + plan.seconds

        async def one_connection(connection: HttpConnection) -> None:
            while time.perf_counter() < deadline:
                content = None
                if plan.body_template is not None:
                    content = plan.body_template.replace("{n}", f"{worker}-{next(numbers)}").encode()
                sent = time.perf_counter()
                try:
                    status, body = await connection.request(plan.method, plan.path, content)
                except HttpError:
                    result.errors += 1
                    return  # the connection is gone
                if status == plan.expected_status:
                    result.latencies.append(time.perf_counter() - sent)
                    result.ok += 1
                    if plan.keep_bodies:
                        result.bodies.append(body)
                else:
                    result.errors += 1

        await asyncio.gather(*(one_connection(connection) for connection in connections))
        result.seconds = time.perf_counter() - started
        result.client_cpu_seconds = _cpu_seconds() - cpu_before
    return result


def _run_loop(plan: LoadPlan, worker: int, start_at: float | None) -> LoadResult:
    """On uvloop where it is installed (a service dependency on Linux): about 20 % more requests per client core."""
    try:
        import uvloop  # noqa: PLC0415
    except ImportError:
        return asyncio.run(_run(plan, worker, start_at))
    return uvloop.run(_run(plan, worker, start_at))


def closed_loop(plan: LoadPlan, processes: int = 1) -> LoadResult:
    """Run the plan; with processes > 1 its connections are split between that many client processes."""
    if processes <= 1:
        return _run_loop(plan, 0, None)
    shares = [
        plan.connections // processes + (1 if index < plan.connections % processes else 0) for index in range(processes)
    ]
    start_at = time.time() + PROCESS_START_MARGIN_SECONDS
    # spawn, not fork: the parent may hold an event loop or database connections that a child must not inherit.
    with ProcessPoolExecutor(max_workers=processes, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [
            pool.submit(_run_loop, replace(plan, connections=share), index, start_at)
            for index, share in enumerate(shares)
            if share > 0
        ]
        parts = [future.result() for future in futures]
    combined = LoadResult(processes=len(parts))
    for part in parts:
        combined.ok += part.ok
        combined.errors += part.errors
        combined.latencies.extend(part.latencies)
        combined.bodies.extend(part.bodies)
        combined.client_cpu_seconds += part.client_cpu_seconds
        combined.seconds = max(combined.seconds, part.seconds)
    return combined
