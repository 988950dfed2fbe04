"""Applying the Alembic migrations from inside the service (start-up, `jobmanager db upgrade`, test fixtures)."""

from __future__ import annotations

import asyncio
import functools
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

PROJECT_ROOT = Path(__file__).resolve().parents[2]
ALEMBIC_INI = PROJECT_ROOT / "alembic.ini"

# Any fixed number; nodes that start together queue on it instead of racing to create tables.
MIGRATION_LOCK_KEY = 7_240_813_502


def alembic_config() -> Config:
    config = Config(str(ALEMBIC_INI))
    config.set_main_option("script_location", str(PROJECT_ROOT / "migrations"))
    return config


def _upgrade_on(connection: Connection) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    # "heads": every branch of the migration graph, so independently written migrations can meet before merging.
    command.upgrade(config, "heads")


async def upgrade_to_head(engine: AsyncEngine) -> None:
    """Bring the schema up to the newest migration, in one transaction."""
    async with engine.begin() as connection:
        await connection.run_sync(_upgrade_on)


@functools.cache
def _head_revisions() -> frozenset[str]:
    """The newest revision of each branch of the migration files (read once: they do not change while running)."""
    return frozenset(ScriptDirectory.from_config(alembic_config()).get_heads())


async def migrations_not_applied(connection: AsyncConnection) -> frozenset[str]:
    """The head revisions the database has not reached (empty when its schema is current)."""
    result = await connection.execute(text("SELECT version_num FROM alembic_version"))
    applied = frozenset(result.scalars())
    heads = await asyncio.to_thread(_head_revisions)
    return heads - applied
