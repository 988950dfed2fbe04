"""Turning a PostgreSQL URL into an async engine and a session factory."""

from __future__ import annotations

from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine


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
    return create_async_engine(
        async_driver_url(database_url),
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
    )


def create_session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)
