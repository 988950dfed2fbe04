"""`jobmanager nodes list` and `jobmanager nodes forget NODE`: the nodes table from the command line, straight on
the configured database (no server needed)."""

from __future__ import annotations

import asyncio
import sys

from service.db.connections import Database
from service.db.engine import create_engine
from service.db.node_store import NodeNotFoundError, NodeRecord, NodeStillAliveError, NodeStore
from service.domain.retry import RetryPolicy
from service.settings import Settings

EXIT_REFUSED = 1
FORGOTTEN_BY = "the command line"


def run_nodes_command(settings: Settings, database_url: str, command: str, node_id: str | None) -> int:
    return asyncio.run(_run(settings, database_url, command, node_id))


async def _run(settings: Settings, database_url: str, command: str, node_id: str | None) -> int:
    engine = create_engine(database_url, pool_size=1)
    try:
        nodes = NodeStore(Database(engine))
        if command == "list":
            for node in await nodes.list_nodes():
                sys.stdout.write(_line(node) + "\n")
            return 0
        assert node_id is not None
        policy = RetryPolicy(base_seconds=settings.retry_backoff_base, cap_seconds=settings.retry_backoff_cap_seconds)
        try:
            report = await nodes.forget(node_id, by=FORGOTTEN_BY, retry_policy=policy)
        except (NodeStillAliveError, NodeNotFoundError) as error:
            sys.stderr.write(f"jobmanager: {error}\n")
            return EXIT_REFUSED
        sys.stdout.write(
            f"forgot node {node_id}: {report.lost} running attempt(s) made lost, {report.retried} job(s) to run again\n"
        )
        return 0
    finally:
        await engine.dispose()


def _line(node: NodeRecord) -> str:
    lease = node.lease_until.isoformat(timespec="seconds") if node.lease_until else "no lease"
    return f"{node.id}\t{node.state}\t{node.running}/{node.slots} running\tlease until {lease}\t{node.api_url or '-'}"
