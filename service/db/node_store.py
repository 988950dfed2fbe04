"""The `nodes` table: registration, heartbeats (lease renewals), declaring a dead node dead and settling its
attempts, forgetting a node, and what a node that comes back learns about the attempts taken from it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg

from service.db.attempt_store import OutcomeToRecord, apply_outcomes
from service.db.connections import Database
from service.db.fencing import LIMIT_TRANSACTION_IDLE
from service.db.notifications import JOBS_DUE_CHANNEL
from service.db.rows import ATTEMPT_COLUMNS, attempt_from_row
from service.domain.records import AttemptEnding, AttemptRecord, RecordedOutcome
from service.domain.retry import RetryPolicy
from service.domain.status import AttemptOutcome, JobStatus

# Any fixed number: the live nodes take it in turn, so exactly one declares a given node dead.
RESCUE_LOCK_KEY = 7_240_813_503
# A node without a lease (NODE_LEASE_SECONDS=0) may be forgotten once it has not heartbeated for this long.
FORGET_LEASELESS_AFTER_SECONDS = 60.0

_NODE_COLUMNS = """
    n.id, n.hostname, n.pid, n.version, n.api_url, n.started_at, n.last_heartbeat, n.lease_until, n.slots, n.state,
    n.declared_dead_at, n.declared_dead_by
"""


@dataclass(frozen=True, slots=True)
class NodeRegistration:
    """What a node says about itself when it joins."""

    id: str
    hostname: str
    pid: int
    version: str
    api_url: str | None
    slots: int


@dataclass(frozen=True, slots=True)
class NodeRecord:
    id: str
    hostname: str
    pid: int
    version: str
    api_url: str | None
    started_at: datetime
    last_heartbeat: datetime
    lease_until: datetime | None
    slots: int
    state: str
    declared_dead_at: datetime | None
    declared_dead_by: str | None
    running: int = 0


@dataclass(frozen=True, slots=True)
class RescueReport:
    nodes: list[str]
    """The nodes this call declared dead."""
    lost: int
    """Their running attempts, now `lost`."""
    retried: int
    """Jobs among those that will run again."""


class NodeNotFoundError(LookupError):
    """No node of that id is known (no row, and no attempt running under it)."""


class NodeStillAliveError(RuntimeError):
    """The node holds its lease (or, without a lease, heartbeats): it cannot be forgotten."""


def _node_from_row(row: asyncpg.Record) -> NodeRecord:
    return NodeRecord(**{name: row[name] for name in row.keys()})  # noqa: SIM118  (asyncpg records)


def _lease_sql(parameter: str) -> str:
    """now() + the lease in seconds given by `parameter`; NULL (no lease) when it is NULL."""
    return f"now() + make_interval(secs => {parameter}::float8)"


class NodeStore:
    """Each method is one transaction, committed before it returns."""

    def __init__(self, database: Database) -> None:
        self._database = database

    async def register(self, node: NodeRegistration, *, lease_seconds: float | None) -> NodeRecord | None:
        """Join (or join again) as alive with a fresh lease; returns the row as it was before, if there was one."""
        async with self._database.driver() as driver, driver.transaction():
            before = await driver.fetchrow(f"SELECT {_NODE_COLUMNS} FROM nodes n WHERE n.id = $1 FOR UPDATE", node.id)
            await driver.execute(
                f"""
                INSERT INTO nodes AS n (id, hostname, pid, version, api_url, slots, lease_until, state)
                VALUES ($1, $2, $3, $4, $5, $6, {_lease_sql("$7")}, 'alive')
                ON CONFLICT (id) DO UPDATE
                SET hostname = excluded.hostname, pid = excluded.pid, version = excluded.version,
                    api_url = excluded.api_url, slots = excluded.slots, lease_until = excluded.lease_until,
                    state = 'alive', started_at = now(), last_heartbeat = now(),
                    declared_dead_at = NULL, declared_dead_by = NULL
                """,
                node.id,
                node.hostname,
                node.pid,
                node.version,
                node.api_url,
                node.slots,
                lease_seconds,
            )
        return _node_from_row(before) if before is not None else None

    async def renew(self, node_id: str, *, lease_seconds: float | None) -> bool:
        """One heartbeat: renew the lease from now. False: this node was declared dead (or forgotten) meanwhile."""
        async with self._database.driver() as driver:
            row = await driver.fetchrow(
                f"""
                UPDATE nodes n SET last_heartbeat = now(), lease_until = {_lease_sql("$2")}
                WHERE n.id = $1 AND n.state = 'alive'
                RETURNING n.id
                """,
                node_id,
                lease_seconds,
            )
        return row is not None

    async def leave(self, node_id: str, *, lease_seconds: float | None) -> bool:
        """A graceful stop: the jobs left running keep the node's place for `lease_seconds` (its planned return)."""
        async with self._database.driver() as driver:
            row = await driver.fetchrow(
                f"""
                UPDATE nodes n SET last_heartbeat = now(), lease_until = {_lease_sql("$2")}, state = 'leaving'
                WHERE n.id = $1 AND n.state = 'alive'
                RETURNING n.id
                """,
                node_id,
                lease_seconds,
            )
        return row is not None

    async def list_nodes(self) -> list[NodeRecord]:
        """Every node, with how many attempts the database says run on it."""
        async with self._database.driver() as driver:
            rows = await driver.fetch(
                f"""
                SELECT {_NODE_COLUMNS},
                       (SELECT count(*) FROM attempts a WHERE a.node_id = n.id AND a.outcome = $1)::int AS running
                FROM nodes n ORDER BY n.id
                """,
                AttemptOutcome.RUNNING.value,
            )
        return [_node_from_row(row) for row in rows]

    async def find_node(self, node_id: str) -> NodeRecord | None:
        async with self._database.driver() as driver:
            row = await driver.fetchrow(f"SELECT {_NODE_COLUMNS} FROM nodes n WHERE n.id = $1", node_id)
        return _node_from_row(row) if row is not None else None

    async def rescue(self, *, rescuer_id: str, margin_seconds: float, retry_policy: RetryPolicy) -> RescueReport:
        """Declare dead every node whose lease ran out more than `margin_seconds` ago, and make its running attempts
        `lost`, their jobs following the retry policy: all in one transaction, by one live node at a time.

        Only a node that holds its own lease may do it; a node that cannot get the lock leaves it to the holder.
        """
        async with self._database.driver() as driver, driver.transaction():
            await driver.execute(LIMIT_TRANSACTION_IDLE)
            if not await driver.fetchval("SELECT pg_try_advisory_xact_lock($1)", RESCUE_LOCK_KEY):
                return RescueReport(nodes=[], lost=0, retried=0)
            dead = await driver.fetch(
                """
                UPDATE nodes d SET state = 'dead', declared_dead_at = now(), declared_dead_by = $1
                WHERE d.state IN ('alive', 'leaving') AND d.id <> $1
                  AND d.lease_until + make_interval(secs => $2::float8) < now()
                  AND EXISTS (SELECT FROM nodes me WHERE me.id = $1 AND me.state = 'alive' AND me.lease_until > now())
                RETURNING d.id, d.lease_until
                """,
                rescuer_id,
                margin_seconds,
            )
            now: datetime = await driver.fetchval("SELECT now()")
            reasons = {
                row["id"]: (
                    f"node {row['id']!r} stopped renewing its lease, which ended at {_when(row['lease_until'])}; "
                    f"node {rescuer_id!r} declared it dead at {_when(now)}"
                )
                for row in dead
            }
            lost, retried = await _settle_attempts_of(driver, reasons, retry_policy)
        return RescueReport(nodes=sorted(reasons), lost=lost, retried=retried)

    async def forget(self, node_id: str, *, by: str, retry_policy: RetryPolicy) -> RescueReport:
        """Remove a node that will never return: its running attempts become `lost` (their jobs retried per policy)
        and its row is deleted. Raises `NodeStillAliveError` for a node holding its lease, `NodeNotFoundError` for
        one unknown."""
        async with self._database.driver() as driver, driver.transaction():
            await driver.execute(LIMIT_TRANSACTION_IDLE)
            await driver.execute("SELECT pg_advisory_xact_lock($1)", RESCUE_LOCK_KEY)
            row = await driver.fetchrow(
                f"""
                SELECT {_NODE_COLUMNS},
                       (n.state = 'alive' AND (n.lease_until > now() OR (n.lease_until IS NULL
                        AND n.last_heartbeat > now() - make_interval(secs => $2::float8)))) AS holds_lease
                FROM nodes n WHERE n.id = $1 FOR UPDATE
                """,
                node_id,
                FORGET_LEASELESS_AFTER_SECONDS,
            )
            if row is not None and row["holds_lease"]:
                raise NodeStillAliveError(
                    f"node {node_id!r} is alive (state {row['state']}, heartbeat at {_when(row['last_heartbeat'])}); "
                    "stop it before forgetting it"
                )
            now: datetime = await driver.fetchval("SELECT now()")
            lost, retried = await _settle_attempts_of(
                driver, {node_id: f"node {node_id!r} was forgotten by {by} at {_when(now)}"}, retry_policy
            )
            deleted = await driver.fetchval("DELETE FROM nodes WHERE id = $1 RETURNING id", node_id)
            if deleted is None and lost == 0:
                raise NodeNotFoundError(f"no node {node_id!r} is known, and no attempt runs under that id")
        return RescueReport(nodes=[node_id], lost=lost, retried=retried)

    async def taken_attempts(self, attempt_ids: Sequence[int]) -> list[int]:
        """Of the attempts this node watches, those that the database no longer says are running."""
        if not attempt_ids:
            return []
        async with self._database.driver() as driver:
            rows = await driver.fetch(
                "SELECT id FROM attempts WHERE id = ANY($1::bigint[]) AND outcome <> $2 ORDER BY id",
                list(attempt_ids),
                AttemptOutcome.RUNNING.value,
            )
        return [row["id"] for row in rows]

    async def attempts_taken_since(self, node_id: str, declared_dead_at: datetime) -> list[AttemptRecord]:
        """The attempts of `node_id` made lost when it was declared dead (a node restarted after that ends what
        is left of their processes)."""
        async with self._database.driver() as driver:
            rows = await driver.fetch(
                f"""
                SELECT {ATTEMPT_COLUMNS} FROM attempts a
                WHERE a.node_id = $1 AND a.outcome = $2 AND a.finished_at >= $3 AND a.pid IS NOT NULL
                ORDER BY a.id
                """,
                node_id,
                AttemptOutcome.LOST.value,
                declared_dead_at,
            )
        return [attempt_from_row(row) for row in rows]


async def _settle_attempts_of(
    driver: asyncpg.Connection, reasons: dict[str, str], retry_policy: RetryPolicy
) -> tuple[int, int]:
    """Make the running attempts of the nodes in `reasons` lost, each with its node's reason; (lost, retried)."""
    if not reasons:
        return 0, 0
    rows = await driver.fetch(
        "SELECT id, node_id FROM attempts WHERE node_id = ANY($1::text[]) AND outcome = $2 ORDER BY id",
        list(reasons),
        AttemptOutcome.RUNNING.value,
    )
    if not rows:
        return 0, 0
    finished_at = datetime.now(UTC)
    outcomes = [
        OutcomeToRecord(
            row["id"],
            AttemptEnding(outcome=AttemptOutcome.LOST, finished_at=finished_at, error=reasons[row["node_id"]]),
            retry_policy,
        )
        for row in rows
    ]
    recorded = await apply_outcomes(driver, outcomes, fence_on_lease=False)
    written = [result for result in recorded if isinstance(result, RecordedOutcome)]
    lost = len(written)
    retried = sum(1 for result in written if result.job_status is JobStatus.RETRIED)
    if retried:
        # One notification for the whole transaction: every node's claim loop wakes once the retries are due.
        await driver.execute("SELECT pg_notify($1, '')", JOBS_DUE_CHANNEL)
    return lost, retried


def _when(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
