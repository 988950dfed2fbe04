"""Applying the Alembic migrations from inside the service (start-up, `jobmanager db upgrade`, test fixtures)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

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
