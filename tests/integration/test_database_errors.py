"""Which database errors are worth trying again: real errors from a real server, raw from asyncpg and wrapped by
SQLAlchemy, classified by what they mean (SQLSTATE), not by which wrapper class carries them."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from service.db.engine import Timeouts, create_engine, libpq_url
from service.db.errors import is_transient
from tests.support.clusters import Cluster


async def _raised(action: Callable[[], Awaitable[Any]]) -> BaseException:
    try:
        await action()
    except Exception as error:
        return error
    pytest.fail("expected an error")


def _raise_sql(errcode: str) -> str:
    return f"DO $$ BEGIN RAISE EXCEPTION 'raised on purpose' USING ERRCODE = '{errcode}'; END $$"


# What the server raises, as it raises it; the condition names are PostgreSQL's.
SERVER_RAISED = [
    ("serialization_failure", True),
    ("deadlock_detected", True),
    ("too_many_connections", True),
    ("admin_shutdown", True),
    ("cannot_connect_now", True),
    ("connection_failure", True),
    ("unique_violation", False),
    ("raise_exception", False),
    ("division_by_zero", False),
]


@pytest.mark.parametrize(("condition", "transient"), SERVER_RAISED)
async def test_server_errors_are_classified_by_sqlstate_raw_and_wrapped(
    database_url: str, engine: AsyncEngine, condition: str, transient: bool
) -> None:
    connection = await asyncpg.connect(libpq_url(database_url))
    try:
        raw = await _raised(lambda: connection.execute(_raise_sql(condition)))
    finally:
        await connection.close()

    async def through_sqlalchemy() -> None:
        async with engine.connect() as wrapped:
            await wrapped.execute(text(_raise_sql(condition)))

    wrapped = await _raised(through_sqlalchemy)

    assert isinstance(raw, asyncpg.PostgresError)
    assert is_transient(raw) is transient, raw
    assert is_transient(wrapped) is transient, repr(wrapped)


async def test_our_statement_timeout_is_transient_and_a_cancel_by_someone_is_not(database_url: str) -> None:
    connection = await asyncpg.connect(libpq_url(database_url))
    other = await asyncpg.connect(libpq_url(database_url))
    try:
        await connection.execute("SET statement_timeout = 50")
        timed_out = await _raised(lambda: connection.execute("SELECT pg_sleep(5)"))
        await connection.execute("SET statement_timeout = 0")
        sleeping = asyncio.ensure_future(connection.execute("SELECT pg_sleep(30)"))
        await asyncio.sleep(0.5)
        await other.execute("SELECT pg_cancel_backend($1)", connection.get_server_pid())
        cancelled = await _raised(lambda: sleeping)
    finally:
        await connection.close()
        await other.close()

    assert isinstance(timed_out, asyncpg.QueryCanceledError)
    assert is_transient(timed_out)
    assert isinstance(cancelled, asyncpg.QueryCanceledError)
    assert not is_transient(cancelled)


async def test_a_session_terminated_mid_statement_or_while_idle_is_transient(database_url: str) -> None:
    busy = await asyncpg.connect(libpq_url(database_url))
    idle = await asyncpg.connect(libpq_url(database_url))
    other = await asyncpg.connect(libpq_url(database_url))
    try:
        sleeping = asyncio.ensure_future(busy.execute("SELECT pg_sleep(30)"))
        await asyncio.sleep(0.5)
        await other.execute("SELECT pg_terminate_backend($1)", busy.get_server_pid())
        mid_statement = await _raised(lambda: sleeping)
        await other.execute("SELECT pg_terminate_backend($1)", idle.get_server_pid())
        for _ in range(100):  # asyncpg reads the server's goodbye on its own; until then the connection looks open
            if idle.is_closed():
                break
            await asyncio.sleep(0.05)
        while_idle = await _raised(lambda: idle.execute("SELECT 1"))
    finally:
        busy.terminate()
        idle.terminate()
        await other.close()

    assert is_transient(mid_statement), repr(mid_statement)
    assert is_transient(while_idle), repr(while_idle)


async def test_a_stopped_server_and_one_starting_up_are_transient(private_cluster: Cluster) -> None:
    engine = create_engine(private_cluster.url, pool_size=1, timeouts=Timeouts(connect_seconds=5.0))

    async def query() -> None:
        async with engine.connect() as connection:
            await connection.execute(text("SELECT 1"))

    try:
        private_cluster.stop()
        refused_raw = await _raised(lambda: asyncpg.connect(private_cluster.url))
        refused = await _raised(query)
        private_cluster.start_as_standby()
        starting_raw = await _raised(lambda: asyncpg.connect(private_cluster.url))
        starting = await _raised(query)
    finally:
        await engine.dispose()

    assert isinstance(refused_raw, OSError)
    assert is_transient(refused_raw)
    assert is_transient(refused)
    # "the database system is not accepting connections": what a server starting up or in recovery answers.
    assert isinstance(starting_raw, asyncpg.CannotConnectNowError)
    assert is_transient(starting_raw)
    assert is_transient(starting), repr(starting)  # SQLAlchemy wraps it as a plain DBAPIError
