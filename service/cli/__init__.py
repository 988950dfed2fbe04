"""The command line, `jobmanager` (and `python -m service`): serve (the default), work with a running service over
its API (submit, list, show, logs, cancel, retry, stats, nodes), and maintain its database (db, psql); bench."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from service.cli import database, insight, jobs, server, submit
from service.cli.app import app, cli_context, load_settings, run
from service.cli.database import open_psql, resolve_database_url
from service.cli.server import run_bench
from service.hardening import make_non_dumpable

for _commands in (submit, jobs, insight, server, database):
    _commands.register(app)

__all__ = ["main", "resolve_database_url"]


def main(argv: Sequence[str] | None = None) -> int:
    # First of all: from here on, no other process of this user can read our environment or memory through /proc.
    make_non_dumpable()
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["psql"]:
        # Everything after `psql` is psql's own (-c, -f, --help, ...), never an option of ours.
        return open_psql(load_settings(), arguments[1:])
    if arguments[:1] == ["bench"]:
        # `python -m bench` has its own options; nothing here reads the configured database for it.
        return run_bench(arguments[1:])
    return run(arguments)


del cli_context  # imported for the commands' modules only
