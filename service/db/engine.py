"""Turning a PostgreSQL URL into an async engine, and into the other spellings psql and the logs want."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import ExceptionContext, make_url
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection

from service.db.errors import ends_the_connection

DEFAULT_CONNECT_TIMEOUT_SECONDS = 5.0
DEFAULT_STATEMENT_TIMEOUT_SECONDS = 5.0
# The client gives up this much later than the server's statement_timeout: a slow statement is ended by the server
# (its connection stays usable), and only a server that stopped answering reaches the client's own timeout.
CLIENT_TIMEOUT_MARGIN_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class Timeouts:
    """How long the engine waits for the database; None: no bound (migrations, which may rewrite big tables)."""

    connect_seconds: float = DEFAULT_CONNECT_TIMEOUT_SECONDS
    statement_seconds: float | None = DEFAULT_STATEMENT_TIMEOUT_SECONDS

    @property
    def pool_checkout_seconds(self) -> float:
        """A request waits for a pooled connection at most as long as for one statement (or one connect)."""
        return max(self.connect_seconds, self.statement_seconds or 0.0)

    def connect_args(self) -> dict[str, Any]:
        """asyncpg's connect arguments: the connect bound, the server's statement_timeout, the client's backstop."""
        arguments: dict[str, Any] = {"timeout": self.connect_seconds}
        if self.statement_seconds is not None:
            arguments["command_timeout"] = self.statement_seconds + CLIENT_TIMEOUT_MARGIN_SECONDS
            arguments["server_settings"] = {"statement_timeout": str(round(self.statement_seconds * 1000))}
        return arguments


def async_driver_url(database_url: str) -> str:
    """The same URL with SQLAlchemy's asyncpg driver named, whichever PostgreSQL spelling the user gave."""
    url = make_url(database_url)
    return url.set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)


def libpq_url(database_url: str) -> str:
    """The URL as psql and libpq want it (no driver name)."""
    url = make_url(database_url)
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def redacted_url(database_url: str) -> str:
    """Safe to log: the password is masked."""
    return make_url(database_url).render_as_string(hide_password=True)


def create_engine(database_url: str, *, pool_size: int = 10, timeouts: Timeouts | None = None) -> AsyncEngine:
    timeouts = timeouts or Timeouts()
    engine = create_async_engine(
        async_driver_url(database_url),
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_timeout=timeouts.pool_checkout_seconds,
        connect_args=timeouts.connect_args(),
    )
    # Instead of pool_pre_ping, whose ping is three round trips (BEGIN, a query, ROLLBACK) on every checkout (a
    # large share of the service's busy time under load): asyncpg learns at once when the server closes a
    # connection (a restart, pg_terminate_backend), so a closed one is replaced at checkout, for free. A connection
    # that breaks while in use still raises; the supervisor retries such writes.
    event.listen(engine.sync_engine.pool, "checkout", _replace_if_closed)
    event.listen(engine.sync_engine, "handle_error", _invalidate_pool_when_connection_ends)
    return engine


def _replace_if_closed(
    _dbapi_connection: DBAPIConnection, record: ConnectionPoolEntry, _proxy: PoolProxiedConnection
) -> None:
    if record.driver_connection is not None and record.driver_connection.is_closed():
        raise DisconnectionError("the server closed this connection")


def _invalidate_pool_when_connection_ends(context: ExceptionContext) -> None:
    # A restart, a termination or a server that stopped answering affects every pooled connection, not only this
    # one: marking it a disconnect makes the pool replace all connections older than the error at their next
    # checkout, instead of handing each out once more to fail (a connection that timed out is mid-statement too).
    if ends_the_connection(context.original_exception):
        context.is_disconnect = True
        context.invalidate_pool_on_disconnect = True
