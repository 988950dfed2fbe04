"""Connections for the stores: SQLAlchemy's for most queries, the bare asyncpg one for the per-job hot path, and
every failure that may pass raised as `DatabaseUnavailableError`."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import asyncpg
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from service.db.errors import DatabaseUnavailableError, as_sqlalchemy_error, is_transient


@contextlib.asynccontextmanager
async def unavailable_when_transient() -> AsyncIterator[None]:
    """Re-raise a failure that may pass (see `is_transient`) as `DatabaseUnavailableError`, from the original."""
    try:
        yield
    except Exception as error:
        if is_transient(error):
            raise DatabaseUnavailableError(str(error) or error.__class__.__name__) from error
        raise


class Database:
    """One engine's connections, as the stores use them."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    @contextlib.asynccontextmanager
    async def connect(self) -> AsyncIterator[AsyncConnection]:
        """A connection for reads; nothing it does is committed."""
        async with unavailable_when_transient(), self._engine.connect() as connection:
            yield connection

    @contextlib.asynccontextmanager
    async def begin(self) -> AsyncIterator[AsyncConnection]:
        """A connection in a transaction, committed when the block ends without an error."""
        async with unavailable_when_transient(), self._engine.begin() as connection:
            yield connection

    @contextlib.asynccontextmanager
    async def driver(self) -> AsyncIterator[asyncpg.Connection]:
        """A plain asyncpg connection from the engine's pool, for the per-job hot path.

        SQLAlchemy's layer costs far more Python per statement than prepared statements on the driver connection.
        Outside a `transaction()` each statement commits on its own (atomic alone), before its result is returned.
        Errors come out as SQLAlchemy's would, as from the other connections.
        """
        async with unavailable_when_transient(), self._engine.connect() as connection:
            driver: asyncpg.Connection = (await connection.get_raw_connection()).driver_connection
            try:
                yield driver
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as error:
                # SQLAlchemy's reset on return does not know of a transaction begun on the driver: a connection
                # left in one, or broken, must not go back into the pool.
                if driver.is_closed() or driver.is_in_transaction() or not isinstance(error, asyncpg.PostgresError):
                    await connection.invalidate(error)
                raise as_sqlalchemy_error(error) from error
            except BaseException:  # cancelled, say: the same holds
                if driver.is_closed() or driver.is_in_transaction():
                    await connection.invalidate()
                raise
