"""create_app(settings): the routes, the dependencies, error mapping, and the lifespan that owns the engine."""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import os
import signal
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from litestar import Litestar
from litestar.datastructures import State
from litestar.exceptions import HTTPException
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from service import __version__
from service.api.attempts import AttemptController
from service.api.auth import BearerTokenMiddleware, TokenRegistry
from service.api.back_pressure import QueueGauge
from service.api.dependencies import JobDefaults, JobIntake, NodeLease, OutputAccess, from_state
from service.api.docs import DocsAssetController, openapi_config
from service.api.errors import handle_database_unavailable, handle_http_exception, handle_unexpected_exception
from service.api.health import HealthController, ReadyController
from service.api.jobs import JobController
from service.api.metrics import MetricsController, ServiceMetrics
from service.api.nodes import NodeAccess, NodeController
from service.api.openapi import refine_openapi
from service.api.request_ids import request_ids
from service.api.stats import StatsController
from service.api.validation import (
    MAX_REQUEST_BODY_BYTES,
    QUERY_PARAMETERS_STATE_KEY,
    known_query_parameters,
    request_head_checks,
)
from service.db.attempt_store import AttemptStore
from service.db.connections import Database
from service.db.engine import Timeouts, create_engine, redacted_url
from service.db.errors import DatabaseUnavailableError
from service.db.job_store import JobStore
from service.db.migrate import upgrade_to_head
from service.db.node_store import NodeRegistration
from service.db.retention_store import RetentionStore
from service.domain.retry import RetryPolicy
from service.logs import lines_written_in_background
from service.runner.job_user import JobUserError, resolve_job_user
from service.runner.keeper import KeeperKind, keeper_command
from service.runner.launcher import ProcessLauncher
from service.settings import Settings
from service.supervisor.config import SupervisorConfig
from service.supervisor.listener import DueJobListener
from service.supervisor.membership import Membership, lease_path_for
from service.supervisor.node import NodeLock, resolve_node_id
from service.supervisor.pruner import Pruner, RetentionConfig
from service.supervisor.reconciler import Reconciler
from service.supervisor.stats_drainer import StatsDrainer
from service.supervisor.supervisor import Supervisor
from service.supervisor.sweeper import OutcomeSweeper
from service.web import web_route_handlers, web_template_config

logger = logging.getLogger(__name__)


async def _stop_supervisor(supervisor: Supervisor, launcher: ProcessLauncher) -> None:
    """The supervisor, then its fork server: nothing spawns or waits on it any more."""
    try:
        await supervisor.stop()
    finally:
        await launcher.close()


def create_app(settings: Settings) -> Litestar:
    """Build the application. `settings.database_url` must be set (the entry point resolves the embedded one)."""
    if settings.database_url is None:
        raise ValueError("create_app needs a database URL; the entry point starts the embedded server first")
    database_url = settings.database_url
    metrics = ServiceMetrics()
    tokens = TokenRegistry(
        settings.api_token.get_secret_value() if settings.api_token else None, settings.api_tokens_file
    )
    job_user = resolve_job_user(settings.job_user)
    if job_user is not None and settings.exit_keeper is KeeperKind.NONE:
        raise JobUserError("JOB_USER needs an exit keeper, which switches each job to it: EXIT_KEEPER is none")

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        node_lock = NodeLock(settings.data_dir)
        node_lock.acquire()
        connect_seconds = settings.database_connect_timeout_seconds
        engine, stats_engine = _engines(database_url, settings)
        try:
            await _migrate(database_url, connect_seconds)
            logger.info("database ready at %s", redacted_url(database_url))
            database = Database(engine)
            attempt_store = AttemptStore(database)
            node_id = resolve_node_id(settings.node_id, settings.data_dir)
            output_dir = settings.data_dir / "output"
            launcher = ProcessLauncher(
                await asyncio.to_thread(keeper_command, settings.exit_keeper, settings.data_dir / "bin"),
                job_user=job_user,
                fork_server=settings.keeper_fork_server,
            )
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
                    lease_path=lease_path_for(settings.data_dir, settings.node_lease_seconds),
                ),
                launcher,
                observer=metrics,
            )
            membership = _membership(settings, database, supervisor, node_id, retry_policy)
            _share_with_controllers(
                app.state,
                settings,
                engine=engine,
                stats_engine=stats_engine,
                database=database,
                supervisor=supervisor,
                metrics=metrics,
                node_id=node_id,
                node_lease=membership.heartbeat,
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
                keeper_in_use=launcher.uses_keeper,
                output_tail_bytes=settings.output_tail_bytes,
            )
            sweeper = OutcomeSweeper(
                attempt_store, supervisor, reconciler, interval_seconds=settings.outcome_sweep_interval_seconds
            )
            maintenance = (sweeper, *_upkeep_loops(settings, database, stats_engine, node_id, output_dir))
            try:
                # Registered, heartbeating and rescuing before the reconciler: its writes are fenced by the lease.
                app.state.node_access = NodeAccess(await membership.join(), retry_policy)
                # Before the first claim: adopt what a previous life left running, settle what it left behind.
                await reconciler.run_once()
                await supervisor.start()
                await listener.start()
                for loop in maintenance:
                    await loop.start()
                # Everything built at start-up lives as long as the process: out of the collector's sight, a full
                # collection no longer walks it (each walk stalled every request in flight).
                gc.collect()
                gc.freeze()
                yield
            finally:
                # The sweeper first: a supervisor that stops watching leaves processes it must not adopt.
                for loop in maintenance:
                    await loop.stop()
                await listener.stop()
                await membership.leave_after(functools.partial(_stop_supervisor, supervisor, launcher))
        finally:
            await stats_engine.dispose()
            await engine.dispose()
            node_lock.release()

    app = Litestar(
        route_handlers=[
            JobController,
            AttemptController,
            StatsController,
            HealthController,
            MetricsController,
            DocsAssetController,
            ReadyController,
            NodeController,
            *web_route_handlers(),
        ],
        dependencies={
            name: from_state(name)
            for name in (
                "job_store",
                "supervisor",
                "job_defaults",
                "job_intake",
                "output_access",
                "engine",
                "stats_engine",
                "metrics",
                "queue_gauge",
                "node_access",
                "node_lease",
            )
        },
        exception_handlers={
            HTTPException: handle_http_exception,
            Exception: handle_unexpected_exception,
            DatabaseUnavailableError: handle_database_unavailable,
            SQLAlchemyError: handle_database_unavailable,
        },
        request_max_body_size=MAX_REQUEST_BODY_BYTES,
        # The log writer first: it writes the lines of the start-up and of the shutdown too.
        lifespan=[_log_writer, functools.partial(_reload_tokens_on_sighup, tokens), lifespan],
        # The request id first, so that a refused request too is answered with its id.
        middleware=[request_ids, BearerTokenMiddleware(tokens), request_head_checks],
        after_exception=[metrics.count_database_error],
        template_config=web_template_config(),
        logging_config=None,  # the entry point configures logging once, for the whole process
        openapi_config=openapi_config(),
    )
    return _with_request_checks(app)


def _with_request_checks(app: Litestar) -> Litestar:
    """What needs the routes registered: each route's query parameters, and the OpenAPI document amended."""
    app.state[QUERY_PARAMETERS_STATE_KEY] = known_query_parameters(app.routes)
    refine_openapi(app)
    return app


def _share_with_controllers(
    state: State,
    settings: Settings,
    *,
    engine: AsyncEngine,
    stats_engine: AsyncEngine,
    database: Database,
    supervisor: Supervisor,
    metrics: ServiceMetrics,
    node_id: str,
    node_lease: NodeLease,
) -> None:
    """What the controllers are handed, by name (see api/dependencies.py `from_state`)."""
    state.node_lease = node_lease
    state.engine = engine
    state.stats_engine = stats_engine
    state.job_store = job_store = JobStore(database)
    state.queue_gauge = QueueGauge(
        lambda up_to: job_store.count_queued_jobs(up_to=up_to), limit=settings.max_queued_jobs
    )
    state.supervisor = supervisor
    state.metrics = metrics
    state.job_defaults = JobDefaults(
        programs=settings.programs,
        max_attempts=settings.max_attempts,
        timeout_seconds=settings.default_timeout_seconds,
        limits=settings.job_limits,
    )
    state.job_intake = JobIntake(
        job_store, supervisor, state.job_defaults, state.queue_gauge, count_accepted=metrics.jobs_submitted.inc
    )
    state.output_access = OutputAccess(
        output_dir=settings.data_dir / "output", node_id=node_id, tail_bytes=settings.output_tail_bytes
    )


def _upkeep_loops(
    settings: Settings, database: Database, stats_engine: AsyncEngine, node_id: str, output_dir: Path
) -> tuple[StatsDrainer, Pruner]:
    """The loops that keep the history small and /stats current; they do no job's work."""
    return (
        StatsDrainer(stats_engine, interval_seconds=settings.stats_drain_interval_seconds),
        Pruner(
            RetentionStore(database),
            RetentionConfig(
                node_id=node_id,
                output_dir=output_dir,
                output_retention_days=settings.output_retention_days,
                job_retention_days=settings.job_retention_days,
                interval_seconds=settings.prune_interval_seconds,
            ),
        ),
    )


def _engines(database_url: str, settings: Settings) -> tuple[AsyncEngine, AsyncEngine]:
    """The engine of the stores and probes, and the one of /stats, whose statements get their own, longer bound on a
    small pool of their own (a rebuild of the rollup may scan every attempt)."""
    connect_seconds = settings.database_connect_timeout_seconds
    engine = create_engine(
        database_url, pool_size=40, timeouts=Timeouts(connect_seconds, settings.database_statement_timeout_seconds)
    )
    stats_engine = create_engine(
        database_url, pool_size=4, timeouts=Timeouts(connect_seconds, settings.database_stats_timeout_seconds)
    )
    return engine, stats_engine


async def _migrate(database_url: str, connect_seconds: float) -> None:
    """Apply the migrations on a connection of their own: no statement bound, as one may rewrite a big table."""
    engine = create_engine(database_url, pool_size=1, timeouts=Timeouts(connect_seconds, statement_seconds=None))
    try:
        await upgrade_to_head(engine)
    finally:
        await engine.dispose()


@asynccontextmanager
async def _log_writer(_app: Litestar) -> AsyncIterator[None]:
    """While the app runs, log lines are formatted and written by a thread of their own, not by the event loop."""
    with lines_written_in_background():
        yield


@asynccontextmanager
async def _reload_tokens_on_sighup(tokens: TokenRegistry, _app: Litestar) -> AsyncIterator[None]:
    """SIGHUP rereads API_TOKENS_FILE while the service runs (the event loop's handler: no code runs in a signal
    handler itself)."""
    hangup = getattr(signal, "SIGHUP", None)  # None on Windows
    loop = asyncio.get_running_loop()
    try:
        if hangup is not None:
            loop.add_signal_handler(hangup, tokens.reload)
    except (RuntimeError, ValueError):  # an event loop outside the main thread (a test client) gets no signals
        hangup = None
    try:
        yield
    finally:
        if hangup is not None:
            loop.remove_signal_handler(hangup)


def _membership(
    settings: Settings, database: Database, supervisor: Supervisor, node_id: str, retry_policy: RetryPolicy
) -> Membership:
    """This node's registration, heartbeat and rescuer, as the settings make them."""
    registration = NodeRegistration(
        id=node_id,
        hostname=socket.gethostname(),
        pid=os.getpid(),
        version=__version__,
        api_url=settings.advertised_api_url,
        slots=settings.max_concurrent_jobs,
    )
    return Membership(
        database,
        supervisor,
        registration,
        lease_seconds=settings.node_lease_seconds,
        shutdown_lease_seconds=settings.shutdown_lease_seconds,
        data_dir=settings.data_dir,
        retry_policy=retry_policy,
    )
