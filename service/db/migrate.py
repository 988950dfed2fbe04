"""The Alembic migrations from inside the service: applied at start-up, by `jobmanager db upgrade` and by the test
fixtures; undone by `jobmanager db downgrade`; read by `jobmanager db current`."""

from __future__ import annotations

import asyncio
import functools
from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
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


def _downgrade_on(connection: Connection, revision: str) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    command.downgrade(config, revision)


async def downgrade_to(engine: AsyncEngine, revision: str) -> None:
    """Undo migrations down to `revision` (an id, `base`, or `-1` for one step), in one transaction."""
    async with engine.begin() as connection:
        await connection.run_sync(_downgrade_on, revision)


@dataclass(frozen=True, slots=True)
class SchemaRevisions:
    current: tuple[str, ...]
    """The revisions the database is at; empty when no migration was applied."""
    heads: tuple[str, ...]
    """The newest revisions this code knows."""

    @property
    def up_to_date(self) -> bool:
        return set(self.current) == set(self.heads)


def _revisions_on(connection: Connection) -> SchemaRevisions:
    current = MigrationContext.configure(connection).get_current_heads()
    heads = ScriptDirectory.from_config(alembic_config()).get_heads()
    return SchemaRevisions(current=tuple(sorted(current)), heads=tuple(sorted(heads)))


async def schema_revisions(engine: AsyncEngine) -> SchemaRevisions:
    """Where the database's schema is, and where this code's migrations end."""
    async with engine.connect() as connection:
        return await connection.run_sync(_revisions_on)


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
