"""Turning a PostgreSQL URL into an async engine, and into the other spellings psql and the logs want."""

from __future__ import annotations

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection


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


def create_engine(database_url: str, *, pool_size: int = 10) -> AsyncEngine:
    engine = create_async_engine(
        async_driver_url(database_url),
        pool_size=pool_size,
        max_overflow=pool_size,
    )
    # Instead of pool_pre_ping, whose ping is three round trips (BEGIN, a query, ROLLBACK) on every checkout (a
    # large share of the service's busy time under load): asyncpg learns at once when the server closes a
    # connection (a restart, pg_terminate_backend), so a closed one is replaced at checkout, for free. A connection
    # that breaks while in use still raises; the supervisor retries such writes.
    event.listen(engine.sync_engine.pool, "checkout", _replace_if_closed)
    return engine


def _replace_if_closed(
    _dbapi_connection: DBAPIConnection, record: ConnectionPoolEntry, _proxy: PoolProxiedConnection
) -> None:
    if record.driver_connection is not None and record.driver_connection.is_closed():
        raise DisconnectionError("the server closed this connection")
