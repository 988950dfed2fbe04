"""Nodes: end-to-end throughput with 1, 2 and 3 nodes on one PostgreSQL, and how long a dead node's jobs take to
run elsewhere.

    python -m bench.nodes [--jobs 2000] [--slots 32] [--connections 32] [--program /bin/true]

Throughput: --jobs no-op jobs submitted evenly through every node (--connections in all), from the first POST to
the moment the database says every job is final; each node has MAX_CONCURRENT_JOBS=--slots. The baseline is the
same run with one node: the ratio says what the extra nodes add on this machine (on one machine, they share its
cores with PostgreSQL and the client).

Failover: two nodes with NODE_LEASE_SECONDS=3, FAILOVER_JOBS sleeping jobs running on them; node-b's service and
its programs are killed at once (kill -9), and the figure is the time from the kill until every one of node-b's jobs
runs again on node-a. The baseline is what the lease arithmetic promises, lease + margin (service/domain/lease.py),
plus the rescuer's check period: the ratio near 1 says nothing but the lease stands between a death and the rerun.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.harness import (
    FINAL_STATUSES,
    Context,
    Row,
    ServerProcess,
    conclude,
    connected,
    fresh_database,
    run_standalone,
    submit_jobs,
    verdict,
    wait_until,
)
from service.domain.lease import LeaseTimeline

NAME = "nodes"
NODE_COUNTS = (1, 2, 3)
FINISH_TIMEOUT_SECONDS = 300.0
FAILOVER_LEASE_SECONDS = 3.0
FAILOVER_JOBS = 20
FAILOVER_SLEEP_SECONDS = 60
FAILOVER_TIMEOUT_SECONDS = 60.0
# Three nodes should do more than one; on two shared cores, not three times as much.
GOAL_SCALING = 1.0


@contextlib.contextmanager
def nodes_on(
    database_url: str, folder: Path, count: int, settings: dict[str, str], *, first_index: int = 0
) -> Iterator[list[ServerProcess]]:
    """`count` servers on one database, node-<first_index> onwards; stopped on leaving."""
    servers: list[ServerProcess] = []
    try:
        for index in range(first_index, first_index + count):
            data_dir = folder / f"node-{index}"
            data_dir.mkdir(parents=True)
            server = ServerProcess(
                database_url=database_url, data_dir=data_dir, settings={**settings, "NODE_ID": f"node-{index}"}
            )
            server.start()
            servers.append(server)
        yield servers
    finally:
        for server in servers:
            with contextlib.suppress(Exception):
                server.stop()


async def _throughput(servers: list[ServerProcess], database_url: str, jobs: int, connections: int) -> dict[str, Any]:
    share = [jobs // len(servers) + (1 if index < jobs % len(servers) else 0) for index in range(len(servers))]
    per_node_connections = max(1, connections // len(servers))
    async with connected(database_url) as database:

        async def all_final() -> bool:
            return bool(
                await database.fetchval("SELECT count(*) FROM jobs WHERE status = ANY($1)", FINAL_STATUSES) >= jobs
            )

        started = time.perf_counter()
        await asyncio.gather(
            *(
                submit_jobs(
                    server.base_url, count, connections=per_node_connections, name_prefix=f"n{index}", arguments=[]
                )
                for index, (server, count) in enumerate(zip(servers, share, strict=True))
            )
        )
        await wait_until(all_final, timeout=FINISH_TIMEOUT_SECONDS, what=f"{jobs} jobs final", interval=0.01)
        seconds = time.perf_counter() - started
        per_node = dict(await database.fetch("SELECT node_id, count(*) FROM attempts GROUP BY node_id ORDER BY 1"))
    return {"seconds": seconds, "jobs_per_second": jobs / seconds, "attempts_per_node": per_node}


def measure_throughput(context: Context, count: int) -> dict[str, Any]:
    options = context.options
    settings = {
        "JOB_SCRIPT_PATH": options.program,
        "MAX_CONCURRENT_JOBS": str(options.slots),
        "LOG_LEVEL": options.log_level,
    }
    with (
        fresh_database(context.server_url) as database_url,
        nodes_on(database_url, context.scratch(f"{NAME}-{count}"), count, settings) as servers,
    ):
        return asyncio.run(_throughput(servers, database_url, options.jobs, options.connections))


def _sleeper(folder: Path) -> Path:
    script = folder / "sleeper.sh"
    script.write_text(f"#!/bin/sh\nsleep {FAILOVER_SLEEP_SECONDS}\n", encoding="utf-8")
    script.chmod(0o755)
    return script


async def _failover(database_url: str, folder: Path, settings: dict[str, str]) -> dict[str, Any]:
    """node-1 runs every sleeper; node-0 joins with free slots; node-1 dies with its programs."""
    with nodes_on(database_url, folder / "victim", 1, settings, first_index=1) as (node_b,):
        async with connected(database_url) as database:
            await submit_jobs(node_b.base_url, FAILOVER_JOBS, connections=4, name_prefix="sleep", arguments=[])

            async def all_started() -> bool:
                started = await database.fetchval(
                    "SELECT count(*) FROM attempts WHERE outcome = 'running' AND pid IS NOT NULL"
                )
                return bool(started >= FAILOVER_JOBS)

            await wait_until(all_started, timeout=FAILOVER_TIMEOUT_SECONDS, what="every sleeper started on node-1")
            with nodes_on(database_url, folder / "survivor", 1, settings):
                rows = await database.fetch("SELECT job_id, pid FROM attempts WHERE outcome = 'running'")
                killed_at = time.perf_counter()
                node_b.kill_hard()
                for row in rows:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(row["pid"], signal.SIGKILL)
                jobs = [row["job_id"] for row in rows]

                async def rerun_elsewhere() -> bool:
                    rerun = await database.fetchval(
                        """SELECT count(*) FROM attempts WHERE job_id = ANY($1::bigint[]) AND attempt_number = 2
                           AND node_id = 'node-0' AND pid IS NOT NULL""",
                        jobs,
                    )
                    return bool(rerun >= len(jobs))

                await wait_until(rerun_elsewhere, timeout=FAILOVER_TIMEOUT_SECONDS, what="node-1's jobs on node-0")
                seconds = time.perf_counter() - killed_at
                # The reruns would sleep on: end them before the survivor stops.
                for row in await database.fetch("SELECT pid FROM attempts WHERE outcome = 'running' AND pid > 0"):
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(row["pid"], signal.SIGKILL)
    return {"seconds": seconds, "jobs_taken_over": len(jobs)}


def measure_failover(context: Context) -> dict[str, Any]:
    folder = context.scratch(f"{NAME}-failover")
    folder.mkdir(parents=True)
    settings = {
        "JOB_SCRIPT_PATH": str(_sleeper(folder)),
        "MAX_CONCURRENT_JOBS": str(FAILOVER_JOBS),
        "NODE_LEASE_SECONDS": str(FAILOVER_LEASE_SECONDS),
        "RETRY_BACKOFF_BASE_SECONDS": "0",
        "POLL_INTERVAL_SECONDS": "0.2",
        "LOG_LEVEL": context.options.log_level,
    }
    with fresh_database(context.server_url) as database_url:
        return asyncio.run(_failover(database_url, folder, settings))


def run(context: Context) -> list[Row]:
    options = context.options
    print(
        f"nodes: {options.jobs} x {options.program} through 1, 2 and 3 nodes ({options.slots} slots each)", flush=True
    )
    throughput = {}
    for count in NODE_COUNTS:
        throughput[count] = measure_throughput(context, count)
        print(
            f"  {count} node(s): {throughput[count]['jobs_per_second']:.0f} jobs/s "
            f"({throughput[count]['seconds']:.2f} s; attempts per node {throughput[count]['attempts_per_node']})",
            flush=True,
        )
    one = throughput[1]["jobs_per_second"]
    three = throughput[NODE_COUNTS[-1]]["jobs_per_second"]
    scaling = three / one
    timeline = LeaseTimeline(FAILOVER_LEASE_SECONDS)
    promised = timeline.rescue_after_seconds + timeline.rescue_check_interval_seconds
    print(
        f"failover: {FAILOVER_JOBS} sleepers on 2 nodes (lease {FAILOVER_LEASE_SECONDS:g} s), kill -9 one", flush=True
    )
    failover = measure_failover(context)
    print(
        f"  {failover['jobs_taken_over']} jobs ran again elsewhere {failover['seconds']:.2f} s after the kill "
        f"(lease + margin + check period: {promised:.2f} s)",
        flush=True,
    )
    rows = [
        Row(
            benchmark=f"nodes throughput ({options.jobs} no-op jobs, 3 nodes)",
            figure=f"{three:.0f} jobs/s (2 nodes {throughput[2]['jobs_per_second']:.0f})",
            baseline=f"1 node {one:.0f}/s",
            ratio=scaling,
            goal=f"ratio >= {GOAL_SCALING}",
            verdict=verdict(scaling >= GOAL_SCALING),
        ),
        Row(
            benchmark="nodes failover (death to rerun elsewhere)",
            figure=f"{failover['seconds']:.2f} s for {failover['jobs_taken_over']} jobs",
            baseline=f"lease arithmetic {promised:.2f} s",
            ratio=failover["seconds"] / promised,
            goal=f"<= {promised:.1f} s + 2 s",
            verdict=verdict(failover["seconds"] <= promised + 2.0),
        ),
    ]
    conclude(
        NAME,
        rows[0],
        {
            "throughput": {str(count): figures for count, figures in throughput.items()},
            "failover": failover,
            "failover_promised_seconds": promised,
            "lease_seconds": FAILOVER_LEASE_SECONDS,
            "jobs": options.jobs,
            "slots": options.slots,
        },
    )
    return rows


if __name__ == "__main__":
    run_standalone(__doc__, run)
