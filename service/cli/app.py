"""The `jobmanager` command: its options common to every command, the commands' registration, and how an error
ends it (one line on stderr; exit 1 for a failure, 2 for a usage error)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import wraps
from typing import Annotated, ParamSpec, TypeVar

import typer
from pydantic import ValidationError
from pydantic_settings import SettingsError

from service.cli import render
from service.cli.client import ApiClient, ApiError
from service.settings import Settings, describe_settings_error

EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_BAD_CONFIGURATION = 2
EXIT_INTERRUPTED = 130  # as a shell reports a command ended by Ctrl+C
URL_VARIABLE = "JOBMANAGER_URL"
TOKEN_VARIABLE = "JOBMANAGER_TOKEN"  # noqa: S105  (the variable's name, not a token)
# Addresses a server binds to that mean "every interface": a client reaches it through the loopback one.
_ANY_ADDRESS = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}  # noqa: S104  (only read, never bound)

P = ParamSpec("P")
R = TypeVar("R")


def load_settings() -> Settings:
    """Read the environment and `.env` once; a bad value ends the program with a message naming the variable."""
    try:
        return Settings()
    except (ValidationError, SettingsError) as error:
        render.error(describe_settings_error(error))
        raise SystemExit(EXIT_BAD_CONFIGURATION) from None


def url_from_settings(settings: Settings) -> str:
    host = _ANY_ADDRESS.get(settings.host, settings.host)
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.port}"


@dataclass
class CliContext:
    """What the common options said; the API client and the settings are made when a command needs them."""

    url: str | None
    token: str | None
    _settings: Settings | None = field(default=None, repr=False)

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings()
        return self._settings

    def api(self) -> ApiClient:
        """A client of `--url`, else JOBMANAGER_URL, else the service this machine's settings (HOST, PORT) name."""
        return ApiClient(self.url or url_from_settings(self.settings), self.token)


def cli_context(context: typer.Context) -> CliContext:
    found = context.find_object(CliContext)
    if found is None:  # a command invoked without the group (never from the command line)
        found = CliContext(url=os.environ.get(URL_VARIABLE), token=os.environ.get(TOKEN_VARIABLE))
    return found


def failing_with_one_line(command: Callable[P, R]) -> Callable[P, R]:
    """An API error or an unreachable service is one line on stderr and exit 1, never a traceback."""

    @wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except ApiError as error:
            render.error(str(error))
            raise typer.Exit(EXIT_FAILURE) from None
        except KeyboardInterrupt:
            raise typer.Exit(EXIT_INTERRUPTED) from None

    return wrapper


app = typer.Typer(
    name="jobmanager",
    help="Concurrent Job Manager: run the service (the default), or work with a running one.",
    add_completion=False,
    invoke_without_command=True,
    no_args_is_help=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def common_options(
    context: typer.Context,
    url: Annotated[
        str | None,
        typer.Option(
            "--url",
            envvar=URL_VARIABLE,
            help="The service's base URL. Default: JOBMANAGER_URL, else http://HOST:PORT from the settings.",
            show_default=False,
        ),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            envvar=TOKEN_VARIABLE,
            help="Sent as `Authorization: Bearer <token>`. Default: JOBMANAGER_TOKEN.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """With no command: serve (the HTTP API and the supervisor)."""
    context.obj = CliContext(url=url, token=token)
    if context.invoked_subcommand is None:
        from service.cli.server import serve  # noqa: PLC0415  (the entry point's own default)

        serve(context.obj.settings)


def run(arguments: Sequence[str]) -> int:
    """Run the command line on `arguments`; the exit status (2 for a usage error, with click's message)."""
    command = typer.main.get_command(app)
    try:
        command.main(args=list(arguments), prog_name="jobmanager", standalone_mode=True)
    except SystemExit as stop:
        if stop.code is None or isinstance(stop.code, int):
            return stop.code or 0
        render.error(str(stop.code))
        return EXIT_FAILURE
    return 0
