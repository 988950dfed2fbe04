"""`jobmanager serve` (also what no command means) and `jobmanager bench`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import NoReturn

import typer

from service.api.auth import TokenFileError
from service.cli import render
from service.cli.app import EXIT_BAD_CONFIGURATION, cli_context
from service.cli.database import resolve_database_url
from service.cli.keep_alive import http_protocol
from service.hardening import (
    forget_secret_environment,
    secure_data_dir,
    unauthenticated_network_refusal,
    warn_about_root,
    warn_if_env_file_exposed,
)
from service.logs import configure_logging
from service.runner.job_user import JobUserError, resolve_job_user, running_as_root
from service.settings import ENV_FILE, Settings

EXIT_NO_BENCHMARKS = 2
# The benchmarks are not part of the installed package: they sit next to it in a source checkout only.
CHECKOUT_ROOT = Path(__file__).resolve().parents[2]


def _exit_normally(signal_number: int, frame: FrameType | None) -> None:
    """A stop asked for by SIGTERM or Ctrl+C is a normal end: exit 0, running the atexit handlers.

    uvicorn shuts down gracefully on these signals, then raises the signal again with this handler restored;
    with the default handler the process would die of the signal, skipping atexit (which stops the embedded
    PostgreSQL) and reporting a failure to whatever supervises the service.
    """
    del signal_number, frame
    raise SystemExit(0)


def _refuse_to_start(message: str) -> NoReturn:
    render.error(message)
    raise SystemExit(EXIT_BAD_CONFIGURATION)


def serve(settings: Settings) -> None:
    import uvicorn  # noqa: PLC0415  (only serving needs the server)

    from service.app import create_app  # noqa: PLC0415

    refusal = unauthenticated_network_refusal(settings)
    if refusal is not None:
        _refuse_to_start(refusal)
    forget_secret_environment()  # Settings has them; no child (embedded PostgreSQL, keeper, job) inherits them
    configure_logging(settings.log_file, settings.log_level, settings.log_format)
    for stop_signal in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stop_signal, _exit_normally)
    # The embedded server, when the service is root, runs as its own user and must reach DATA_DIR/postgres.
    embedded_server_user = settings.database_url is None and running_as_root()
    secure_data_dir(settings.data_dir, embedded_server_user=embedded_server_user)
    # The embedded PostgreSQL serves one node by construction: no lease, nothing for another node to take over.
    lease = settings.node_lease_seconds if settings.database_url is not None else 0.0
    settings = settings.model_copy(update={"database_url": resolve_database_url(settings), "node_lease_seconds": lease})
    secure_data_dir(settings.data_dir, embedded_server_user=embedded_server_user)  # its start-up opens the folder
    try:
        job_user = resolve_job_user(settings.job_user)
        app = create_app(settings)
    except (TokenFileError, JobUserError) as error:
        _refuse_to_start(str(error))
    warn_about_root(settings, is_root=running_as_root(), job_user_switches=job_user is not None)
    warn_if_env_file_exposed(ENV_FILE)
    print(f"Concurrent Job Manager: http://{settings.host}:{settings.port}  (API docs at /schema)", flush=True)
    uvicorn.run(app, host=settings.host, port=settings.port, http=http_protocol(), log_config=None, access_log=False)


def run_bench(arguments: Sequence[str]) -> int:
    """`python -m bench` with these arguments, from the source checkout this service runs from."""
    if not (CHECKOUT_ROOT / "bench" / "__main__.py").is_file():
        render.error("the benchmarks ship with the source only; run `python -m bench` from a checkout")
        return EXIT_NO_BENCHMARKS
    search_path = [str(CHECKOUT_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(search_path)}
    return subprocess.call([sys.executable, "-m", "bench", *arguments], env=environment)


PASS_THROUGH = {"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []}


def register(app: typer.Typer) -> None:
    @app.command("serve")
    def serve_command(context: typer.Context) -> None:
        """Run the HTTP API and the supervisor (the default)."""
        serve(cli_context(context).settings)

    @app.command("bench", context_settings=PASS_THROUGH)
    def bench_command(context: typer.Context) -> None:
        """The benchmarks, and `bench seed` (python -m bench, from a checkout); arguments go to it."""
        raise typer.Exit(run_bench(context.args))
