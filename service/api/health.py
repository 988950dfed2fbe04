"""GET /health: is the service up, and can it reach its database."""

from __future__ import annotations

from litestar import Controller, Response, get
from litestar.di import NamedDependency
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from service.api.dependencies import SupervisorHandle
from service.api.schemas import HealthRead


class HealthController(Controller):
    path = "/health"
    tags = ["health"]  # noqa: RUF012

    @get(summary="Liveness and database reachability")
    async def health(
        self, engine: NamedDependency[AsyncEngine], supervisor: NamedDependency[SupervisorHandle]
    ) -> Response[HealthRead]:
        try:
            async with engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
            database = "ok"
        except (DBAPIError, OSError):
            database = "unreachable"
        body = HealthRead(
            status="ok" if database == "ok" else "degraded",
            node_id=supervisor.node_id,
            database=database,
            running_jobs=supervisor.running_count,
        )
        return Response(body, status_code=200 if database == "ok" else 503)
