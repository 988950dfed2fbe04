"""The command line: `jobmanager serve` (the default), `db upgrade`, `psql`, and `bench` (from a source checkout)."""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from pydantic import ValidationError
from pydantic_settings import SettingsError
from sqlalchemy.engine import URL, make_url

from service.api.auth import TokenFileError
from service.db.embedded import start_embedded_postgres
from service.db.engine import create_engine, libpq_url
from service.db.migrate import upgrade_to_head
from service.hardening import (
    forget_secret_environment,
    make_non_dumpable,
    secure_data_dir,
    unauthenticated_network_refusal,
    warn_about_root,
    warn_if_env_file_exposed,
)
from service.logs import configure_logging
from service.runner.job_user import JobUserError, resolve_job_user, running_as_root
from service.settings import ENV_FILE, Settings, describe_settings_error

EXIT_BAD_CONFIGURATION = 2
EXIT_NO_BENCHMARKS = 2
# The benchmarks are not part of the installed package: they sit next to it in a source checkout only.
CHECKOUT_ROOT = Path(__file__).resolve().parent.parent


def resolve_database_url(settings: Settings) -> str:
    """DATABASE_URL when set; otherwise the embedded server under DATA_DIR, started if it is not running."""
    return settings.database_url or start_embedded_postgres(settings.data_dir)


def load_settings() -> Settings:
    """Read the environment and `.env` once; a bad value ends the program with a message naming the variable."""
    try:
        return Settings()
    except (ValidationError, SettingsError) as error:
        print(f"jobmanager: {describe_settings_error(error)}", file=sys.stderr)
        raise SystemExit(EXIT_BAD_CONFIGURATION) from None


def _exit_normally(signal_number: int, frame: FrameType | None) -> None:
    """A stop asked for by SIGTERM or Ctrl+C is a normal end: exit 0, running the atexit handlers.

    uvicorn shuts down gracefully on these signals, then raises the signal again with this handler restored;
    with the default handler the process would die of the signal, skipping atexit (which stops the embedded
    PostgreSQL) and reporting a failure to whatever supervises the service.
    """
    del signal_number, frame
    raise SystemExit(0)


def _refuse_to_start(message: str) -> None:
    print(f"jobmanager: {message}", file=sys.stderr)
    raise SystemExit(EXIT_BAD_CONFIGURATION)


def serve(settings: Settings) -> None:
    import uvicorn  # noqa: PLC0415  (only serving needs the server)

    from service.app import create_app  # noqa: PLC0415

    refusal = unauthenticated_network_refusal(settings)
    if refusal is not None:
        _refuse_to_start(refusal)
    forget_secret_environment()  # Settings has them; no child (embedded PostgreSQL, keeper, job) inherits them
    configure_logging(settings.log_file, settings.log_level)
    for stop_signal in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stop_signal, _exit_normally)
    # The embedded server, when the service is root, runs as its own user and must reach DATA_DIR/postgres.
    embedded_server_user = settings.database_url is None and running_as_root()
    secure_data_dir(settings.data_dir, embedded_server_user=embedded_server_user)
    settings = settings.model_copy(update={"database_url": resolve_database_url(settings)})
    secure_data_dir(settings.data_dir, embedded_server_user=embedded_server_user)  # its start-up opens the folder
    try:
        job_user = resolve_job_user(settings.job_user)
        app = create_app(settings)
    except (TokenFileError, JobUserError) as error:
        _refuse_to_start(str(error))
    warn_about_root(settings, is_root=running_as_root(), job_user_switches=job_user is not None)
    warn_if_env_file_exposed(ENV_FILE)
    print(f"Concurrent Job Manager: http://{settings.host}:{settings.port}  (API docs at /schema)", flush=True)
    uvicorn.run(app, host=settings.host, port=settings.port, log_config=None, access_log=False)


def upgrade_database(settings: Settings) -> None:
    async def _upgrade() -> None:
        engine = create_engine(resolve_database_url(settings), pool_size=1)
        try:
            await upgrade_to_head(engine)
        finally:
            await engine.dispose()

    asyncio.run(_upgrade())
    print("database schema is up to date")


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


def run_bench(arguments: Sequence[str]) -> int:
    """`python -m bench` with these arguments, from the source checkout this service runs from."""
    if not (CHECKOUT_ROOT / "bench" / "__main__.py").is_file():
        print(
            "jobmanager: the benchmarks ship with the source only; run `python -m bench` from a checkout",
            file=sys.stderr,
        )
        return EXIT_NO_BENCHMARKS
    search_path = [str(CHECKOUT_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(search_path)}
    return subprocess.call([sys.executable, "-m", "bench", *arguments], env=environment)


def main(argv: Sequence[str] | None = None) -> int:
    # First of all: from here on, no other process of this user can read our environment or memory through /proc.
    make_non_dumpable()
    arguments_given = list(sys.argv[1:] if argv is None else argv)
    if arguments_given[:1] == ["psql"]:
        # Everything after `psql` is psql's own (-c, -f, ...), which argparse would try to parse as ours.
        return open_psql(load_settings(), arguments_given[1:])
    if arguments_given[:1] == ["bench"]:
        # `python -m bench` has its own options; nothing here reads the configured database for it.
        return run_bench(arguments_given[1:])
    parser = argparse.ArgumentParser(prog="jobmanager", description="Concurrent Job Manager")
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("serve", help="run the HTTP API and the supervisor (the default)")
    db = commands.add_parser("db", help="database maintenance")
    db_commands = db.add_subparsers(dest="db_command", required=True)
    db_commands.add_parser("upgrade", help="apply the Alembic migrations up to the newest")
    psql = commands.add_parser("psql", help="open psql on the configured database (embedded or not)")
    psql.add_argument("psql_arguments", nargs=argparse.REMAINDER, help="passed on to psql, e.g. -c 'SELECT 1'")
    bench = commands.add_parser("bench", help="the benchmarks, and `bench seed` (python -m bench, from a checkout)")
    bench.add_argument("bench_arguments", nargs=argparse.REMAINDER, help="passed on to python -m bench")
    arguments = parser.parse_args(arguments_given)

    settings = load_settings()
    if arguments.command in (None, "serve"):
        serve(settings)
    elif arguments.command == "db":
        upgrade_database(settings)
    elif arguments.command == "psql":
        return open_psql(settings, arguments.psql_arguments)
    return 0
