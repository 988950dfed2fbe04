"""GET /health (the process is alive; `degraded` when the database is not) and GET /ready (it can do its work:
the database answers, the schema is at the newest migration, the claim loop runs, its lease holds)."""

from __future__ import annotations

import asyncio
from http import HTTPStatus

from litestar import Controller, Response, get
from litestar.di import NamedDependency
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from service.api.dependencies import NodeLease, SupervisorHandle
from service.api.errors import DATABASE_RETRY_AFTER_SECONDS
from service.api.schemas import HealthRead, ReadyRead
from service.db.errors import describe, is_transient
from service.db.migrate import migrations_not_applied

# A probe answers within this bound whatever the database does: a load balancer's check must never hang.
PROBE_TIMEOUT_SECONDS = 2.0
OK = "ok"
UNREACHABLE = "unreachable"
SCHEMA_BEHIND = "schema behind"
LEASE_HELD = "held"
LEASE_LAPSED = "lapsed"
NO_LEASE = "none"


async def _probe(engine: AsyncEngine, *, check_schema: bool) -> tuple[str, str | None]:
    """The database's state (`ok`, `unreachable`, `schema behind`) and, unless ok, why, in a sentence."""
    try:
        async with asyncio.timeout(PROBE_TIMEOUT_SECONDS), engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
            problem = await _schema_problem(connection) if check_schema else None
    except TimeoutError:
        return UNREACHABLE, f"the database did not answer within {PROBE_TIMEOUT_SECONDS:g} s"
    except Exception as error:
        if not is_transient(error):
            raise
        return UNREACHABLE, f"the database is unreachable ({describe(error)})"
    return (OK, None) if problem is None else (SCHEMA_BEHIND, problem)


async def _schema_problem(connection: AsyncConnection) -> str | None:
    missing = await migrations_not_applied(connection)
    return f"migrations not applied: {', '.join(sorted(missing))}" if missing else None


def _lease_state(seconds_left: float | None) -> tuple[str, str | None]:
    """`held`, `lapsed` or `none`, and, when lapsed, why that matters, in a sentence."""
    if seconds_left is None:
        return NO_LEASE, None
    if seconds_left > 0:
        return LEASE_HELD, None
    return LEASE_LAPSED, (
        f"this node's lease lapsed {-seconds_left:.0f} s ago: its programs are ended, and another node may run its "
        "jobs again"
    )


class HealthController(Controller):
    path = "/health"
    tags = ["health"]  # noqa: RUF012

    @get(summary="Liveness: 200 while the process runs; `degraded`, with the reason, when the database is not there")
    async def health(
        self, engine: NamedDependency[AsyncEngine], supervisor: NamedDependency[SupervisorHandle]
    ) -> HealthRead:
        database, problem = await _probe(engine, check_schema=False)
        return HealthRead(
            status=OK if problem is None else "degraded",
            node_id=supervisor.node_id,
            database=database,
            running_jobs=supervisor.running_count,
            reason=problem,
        )


class ReadyController(Controller):
    path = "/ready"
    tags = ["health"]  # noqa: RUF012

    @get(
        summary=(
            "Readiness: 200 when the database answers, its schema is current, the claim loop runs and this node's "
            "lease holds; else 503"
        )
    )
    async def ready(
        self,
        engine: NamedDependency[AsyncEngine],
        supervisor: NamedDependency[SupervisorHandle],
        node_lease: NamedDependency[NodeLease],
    ) -> Response[ReadyRead]:
        database, database_problem = await _probe(engine, check_schema=True)
        claiming = supervisor.claim_loop_running
        reasons = [database_problem] if database_problem else []
        if not claiming:
            reasons.append("the supervisor's claim loop is not running")
        lease, lease_problem = _lease_state(node_lease.lease_seconds_left())
        if lease_problem is not None:
            reasons.append(lease_problem)
        body = ReadyRead(
            status="ready" if not reasons else "not ready",
            node_id=supervisor.node_id,
            database=database,
            claim_loop="running" if claiming else "stopped",
            lease=lease,
            reason="; ".join(reasons) or None,
        )
        if not reasons:
            return Response(body, status_code=HTTPStatus.OK)
        return Response(
            body,
            status_code=HTTPStatus.SERVICE_UNAVAILABLE,
            headers={"Retry-After": str(DATABASE_RETRY_AFTER_SECONDS)},
        )
