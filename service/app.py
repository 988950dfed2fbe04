"""create_app(settings): the routes, the dependencies, error mapping, and the lifespan that owns the engine."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from litestar import Litestar
from litestar.exceptions import HTTPException
from litestar.openapi import OpenAPIConfig
from sqlalchemy.exc import SQLAlchemyError

from service import __version__
from service.api.attempts import AttemptController
from service.api.dependencies import JobDefaults, OutputAccess, from_state
from service.api.errors import handle_database_unavailable, handle_http_exception, handle_unexpected_exception
from service.api.health import HealthController, ReadyController
from service.api.jobs import JobController
from service.api.stats import StatsController
from service.db.attempt_store import AttemptStore
from service.db.connections import Database
from service.db.engine import Timeouts, create_engine, redacted_url
from service.db.errors import DatabaseUnavailableError
from service.db.job_store import JobStore
from service.db.migrate import upgrade_to_head
from service.domain.retry import RetryPolicy
from service.runner.keeper import keeper_command
from service.runner.launcher import ProcessLauncher
from service.settings import Settings
from service.supervisor.config import SupervisorConfig
from service.supervisor.listener import DueJobListener
from service.supervisor.node import NodeLock, resolve_node_id
from service.supervisor.reconciler import Reconciler
from service.supervisor.supervisor import Supervisor
from service.supervisor.sweeper import OutcomeSweeper

logger = logging.getLogger(__name__)


def create_app(settings: Settings) -> Litestar:
    """Build the application. `settings.database_url` must be set (the entry point resolves the embedded one)."""
    if settings.database_url is None:
        raise ValueError("create_app needs a database URL; the entry point starts the embedded server first")
    database_url = settings.database_url

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        node_lock = NodeLock(settings.data_dir)
        node_lock.acquire()
        connect_seconds = settings.database_connect_timeout_seconds
        engine = create_engine(
            database_url,
            pool_size=40,
            timeouts=Timeouts(connect_seconds, settings.database_statement_timeout_seconds),
        )
        # /stats may scan every attempt: its statements get their own, longer bound, on a small pool of their own.
        stats_engine = create_engine(
            database_url, pool_size=4, timeouts=Timeouts(connect_seconds, settings.database_stats_timeout_seconds)
        )
        try:
            await _migrate(database_url, connect_seconds)
            logger.info("database ready at %s", redacted_url(database_url))
            database = Database(engine)
            attempt_store = AttemptStore(database)
            node_id = resolve_node_id(settings.node_id, settings.data_dir)
            output_dir = settings.data_dir / "output"
            keeper = await asyncio.to_thread(keeper_command, settings.exit_keeper, settings.data_dir / "bin")
            retry_policy = RetryPolicy(
                base_seconds=settings.retry_backoff_base, cap_seconds=settings.retry_backoff_cap_seconds
            )
            supervisor = Supervisor(
                attempt_store,
                SupervisorConfig(
                    node_id=node_id,
                    max_concurrent_jobs=settings.max_concurrent_jobs,
                    retry_policy=retry_policy,
                    poll_interval_seconds=settings.poll_interval_seconds,
                    shutdown_grace_seconds=settings.shutdown_grace_seconds,
                    shutdown_mode=settings.shutdown_mode,
                    output_dir=output_dir,
                    inherited_environment=settings.child_environment_names,
                    cancel_grace_seconds=settings.cancel_grace_seconds,
                    output_limit_bytes=settings.output_limit_bytes,
                    output_tail_bytes=settings.output_tail_bytes,
                ),
                ProcessLauncher(keeper),
            )
            app.state.engine = engine
            app.state.stats_engine = stats_engine
            app.state.job_store = JobStore(database)
            app.state.supervisor = supervisor
            app.state.job_defaults = JobDefaults(
                programs=settings.programs,
                max_attempts=settings.max_attempts,
                timeout_seconds=settings.default_timeout_seconds,
            )
            app.state.output_access = OutputAccess(
                output_dir=output_dir, node_id=node_id, tail_bytes=settings.output_tail_bytes
            )
            # A cancel asked for on any node wakes this one too: the attempt may be running here.
            listener = DueJobListener(
                database_url,
                supervisor.wake,
                on_cancel_requested=supervisor.cancel_requested,
                connect_timeout_seconds=connect_seconds,
            )
            reconciler = Reconciler(
                attempt_store,
                supervisor,
                output_dir=output_dir,
                retry_policy=retry_policy,
                keeper_in_use=keeper is not None,
                output_tail_bytes=settings.output_tail_bytes,
            )
            sweeper = OutcomeSweeper(
                attempt_store, supervisor, reconciler, interval_seconds=settings.outcome_sweep_interval_seconds
            )
            try:
                # Before the first claim: adopt what a previous life left running, settle what it left behind.
                await reconciler.run_once()
                await supervisor.start()
                await listener.start()
                await sweeper.start()
                # Everything built at start-up lives as long as the process: out of the collector's sight, a full
                # collection no longer walks it (each walk stalled every request in flight).
                gc.collect()
                gc.freeze()
                yield
            finally:
                await sweeper.stop()  # first: a supervisor that stops watching leaves processes it must not adopt
                await listener.stop()
                await supervisor.stop()
        finally:
            await stats_engine.dispose()
            await engine.dispose()
            node_lock.release()

    return Litestar(
        route_handlers=[JobController, AttemptController, StatsController, HealthController, ReadyController],
        dependencies={
            name: from_state(name)
            for name in ("job_store", "supervisor", "job_defaults", "output_access", "engine", "stats_engine")
        },
        exception_handlers={
            HTTPException: handle_http_exception,
            Exception: handle_unexpected_exception,
            DatabaseUnavailableError: handle_database_unavailable,
            SQLAlchemyError: handle_database_unavailable,
        },
        lifespan=[lifespan],
        logging_config=None,  # the entry point configures logging once, for the whole process
        openapi_config=OpenAPIConfig(title="Concurrent Job Manager", version=__version__, path="/schema"),
    )


async def _migrate(database_url: str, connect_seconds: float) -> None:
    """Apply the migrations on a connection of their own: no statement bound, as one may rewrite a big table."""
    engine = create_engine(database_url, pool_size=1, timeouts=Timeouts(connect_seconds, statement_seconds=None))
    try:
        await upgrade_to_head(engine)
    finally:
        await engine.dispose()
