"""create_app(settings): the routes, the dependencies, error mapping, and the lifespan that owns the engine."""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from litestar import Litestar
from litestar.exceptions import HTTPException
from litestar.openapi import OpenAPIConfig

from service import __version__
from service.api.attempts import AttemptController
from service.api.auth import BearerTokenMiddleware, TokenRegistry
from service.api.dependencies import JobDefaults, OutputAccess, from_state
from service.api.errors import handle_http_exception, handle_unexpected_exception
from service.api.health import HealthController
from service.api.jobs import JobController
from service.api.stats import StatsController
from service.db.attempt_store import AttemptStore
from service.db.connections import Database
from service.db.engine import create_engine, redacted_url
from service.db.job_store import JobStore
from service.db.migrate import upgrade_to_head
from service.domain.retry import RetryPolicy
from service.runner.job_user import JobUserError, resolve_job_user
from service.runner.keeper import KeeperKind, keeper_command
from service.runner.launcher import ProcessLauncher
from service.settings import Settings
from service.supervisor.config import SupervisorConfig
from service.supervisor.listener import DueJobListener
from service.supervisor.node import NodeLock, resolve_node_id
from service.supervisor.reconciler import Reconciler
from service.supervisor.supervisor import Supervisor

logger = logging.getLogger(__name__)


def create_app(settings: Settings) -> Litestar:
    """Build the application. `settings.database_url` must be set (the entry point resolves the embedded one)."""
    if settings.database_url is None:
        raise ValueError("create_app needs a database URL; the entry point starts the embedded server first")
    database_url = settings.database_url
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
        engine = create_engine(database_url, pool_size=40)
        try:
            await upgrade_to_head(engine)
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
                ProcessLauncher(keeper, job_user=job_user),
            )
            app.state.engine = engine
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
            listener = DueJobListener(database_url, supervisor.wake, on_cancel_requested=supervisor.cancel_requested)
            try:
                # Before the first claim: adopt what a previous life left running, settle what it left behind.
                await Reconciler(
                    attempt_store,
                    supervisor,
                    output_dir=output_dir,
                    retry_policy=retry_policy,
                    keeper_in_use=keeper is not None,
                    output_tail_bytes=settings.output_tail_bytes,
                ).run_once()
                await supervisor.start()
                await listener.start()
                # Everything built at start-up lives as long as the process: out of the collector's sight, a full
                # collection no longer walks it (each walk stalled every request in flight).
                gc.collect()
                gc.freeze()
                yield
            finally:
                await listener.stop()
                await supervisor.stop()
        finally:
            await engine.dispose()
            node_lock.release()

    return Litestar(
        route_handlers=[JobController, AttemptController, StatsController, HealthController],
        dependencies={
            name: from_state(name) for name in ("job_store", "supervisor", "job_defaults", "output_access", "engine")
        },
        exception_handlers={HTTPException: handle_http_exception, Exception: handle_unexpected_exception},
        lifespan=[functools.partial(_reload_tokens_on_sighup, tokens), lifespan],
        middleware=[BearerTokenMiddleware(tokens)],
        logging_config=None,  # the entry point configures logging once, for the whole process
        openapi_config=OpenAPIConfig(title="Concurrent Job Manager", version=__version__, path="/schema"),
    )


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
