"""The commands that talk to the database, not to the API: `jobmanager db upgrade|downgrade|current` and `psql`."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
from collections.abc import Awaitable, Callable, Sequence
from typing import Annotated, TypeVar

import typer
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from service.cli import render
from service.cli.app import EXIT_FAILURE, cli_context
from service.db.embedded import start_embedded_postgres
from service.db.engine import create_engine, libpq_url
from service.db.errors import is_transient
from service.db.migrate import SchemaRevisions, downgrade_to, schema_revisions, upgrade_to_head
from service.settings import Settings

T = TypeVar("T")


def resolve_database_url(settings: Settings) -> str:
    """DATABASE_URL when set; otherwise the embedded server under DATA_DIR, started if it is not running."""
    return settings.database_url or start_embedded_postgres(settings.data_dir)


def _on_database(settings: Settings, work: Callable[[AsyncEngine], Awaitable[T]]) -> T:
    async def _run() -> T:
        engine = create_engine(resolve_database_url(settings), pool_size=1)
        try:
            return await work(engine)
        finally:
            await engine.dispose()

    try:
        return asyncio.run(_run())
    except Exception as error:
        if not is_transient(error):
            raise
        render.error(f"cannot reach the database: {error}")
        raise typer.Exit(EXIT_FAILURE) from None


def _without_password(url: URL) -> URL:
    return URL.create(url.drivername, url.username, None, url.host, url.port, url.database, url.query)


def open_psql(settings: Settings, extra_arguments: Sequence[str]) -> int:
    url = make_url(libpq_url(resolve_database_url(settings)))
    # The password goes to psql in its environment, not on its command line, which every user can read in /proc.
    environment = dict(os.environ)
    if url.password is not None:
        environment["PGPASSWORD"] = str(url.password)
    psql = shutil.which("psql")
    if psql is None or settings.database_url is None:
        # The embedded server ships its own psql, of the same version as the server.
        from embedded_postgres._commands import POSTGRES_BIN_PATH  # noqa: PLC0415

        psql = str(POSTGRES_BIN_PATH / "psql")
    # A child, not exec(): this process must exit normally so the embedded server's handle is released.
    previous_handler = signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl+C belongs to psql
    try:
        return subprocess.call(
            [psql, _without_password(url).render_as_string(hide_password=False), *extra_arguments], env=environment
        )
    finally:
        signal.signal(signal.SIGINT, previous_handler)


def _describe(revisions: SchemaRevisions) -> str:
    current = ", ".join(revisions.current) or "none (empty database)"
    state = "up to date" if revisions.up_to_date else f"the newest is {', '.join(revisions.heads)}"
    return f"database schema at revision {current}; {state}"


db = typer.Typer(help="Database maintenance: the Alembic migrations.", no_args_is_help=True)


@db.command("upgrade")
def upgrade(context: typer.Context) -> None:
    """Apply the migrations up to the newest."""
    _on_database(cli_context(context).settings, upgrade_to_head)
    print("database schema is up to date")


@db.command("downgrade")
def downgrade(
    context: typer.Context,
    revision: Annotated[
        str, typer.Argument(help="Where to go down to: a revision id (0002), `base` (nothing), or -1 (one step).")
    ] = "-1",
) -> None:
    """Undo migrations. The service upgrades again when it starts: stop every node first."""
    settings = cli_context(context).settings

    async def _downgrade(engine: AsyncEngine) -> SchemaRevisions:
        await downgrade_to(engine, revision)
        return await schema_revisions(engine)

    print(_describe(_on_database(settings, _downgrade)))


@db.command("current")
def current(
    context: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """The revision the database is at, and whether it is the newest."""
    revisions = _on_database(cli_context(context).settings, schema_revisions)
    if as_json:
        render.print_json(
            {"current": list(revisions.current), "heads": list(revisions.heads), "upToDate": revisions.up_to_date}
        )
    else:
        print(_describe(revisions))


def register(app: typer.Typer) -> None:
    app.add_typer(db, name="db")

    @app.command("psql", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
    def psql_command(context: typer.Context) -> None:
        """Open psql on the configured database (embedded or not); arguments go to psql, e.g. -c 'SELECT 1'."""
        raise typer.Exit(open_psql(cli_context(context).settings, context.args))
