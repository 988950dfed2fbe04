"""Alembic environment: async, and sharing the service's connection when the service runs the upgrade itself."""

from __future__ import annotations

import asyncio
from logging.config import fileConfig

from alembic import context
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from service.db.engine import async_driver_url
from service.db.migrate import MIGRATION_LOCK_KEY
from service.db.models import Base

config = context.config
target_metadata = Base.metadata


def _run_with_connection(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata, transaction_per_migration=False)
    with context.begin_transaction():
        # Two nodes starting at once must not both create the tables.
        context.execute(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_KEY})")
        context.run_migrations()


async def _run_from_settings() -> None:
    # Imported here: the command-line path reads the environment once, like the service's entry point.
    from service.cli import resolve_database_url  # noqa: PLC0415
    from service.settings import Settings  # noqa: PLC0415

    engine = create_async_engine(async_driver_url(resolve_database_url(Settings())))
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run_with_connection)
            await connection.commit()
    finally:
        await engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported; run them against a database")

shared_connection = config.attributes.get("connection")
if shared_connection is not None:
    _run_with_connection(shared_connection)
else:
    if config.config_file_name is not None:
        fileConfig(config.config_file_name)
    asyncio.run(_run_from_settings())
