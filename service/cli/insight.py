"""`jobmanager stats` and `jobmanager nodes`: what the service has learnt, and who runs it."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from service.cli import render
from service.cli.app import cli_context, failing_with_one_line
from service.cli.client import ApiClient

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts instead of a table.")]
HTTP_NOT_FOUND = 404
HTTP_UNAVAILABLE = 503
NO_NODE_REGISTRY = "this service has no node registry; showing the node that answered"


def list_nodes(api: ApiClient) -> tuple[list[dict[str, Any]], bool]:
    """Every node (GET /nodes, where the service keeps a registry), else the one answering, from GET /health;
    and whether the list came from a registry."""
    response = api.request("GET", "/nodes", allow=(HTTP_NOT_FOUND,))
    if response.status_code != HTTP_NOT_FOUND:
        nodes: list[dict[str, Any]] = response.json()
        return nodes, True
    # A node whose database is unreachable answers 503 with the same body: it is still a node to show.
    health: dict[str, Any] = api.request("GET", "/health", allow=(HTTP_UNAVAILABLE,)).json()
    return [health], False


def register(app: typer.Typer) -> None:
    @app.command("stats")
    @failing_with_one_line
    def stats(
        context: typer.Context,
        since: Annotated[str | None, typer.Option(help="Attempts started at or after: ISO 8601, or 24h, 7d.")] = None,
        until: Annotated[str | None, typer.Option(help="Attempts started before: ISO 8601, or 1h.")] = None,
        program: Annotated[str | None, typer.Option(help="Only jobs that run this program (its path).")] = None,
        name_prefix: Annotated[
            str | None, typer.Option("--name-prefix", help="Only jobs whose name starts so.")
        ] = None,
        as_json: JsonOption = False,
    ) -> None:
        """Success rates, and the job patterns that go with failure (significant ones marked *)."""
        with cli_context(context).api() as api:
            report: dict[str, Any] = api.get_json(
                "/stats", since=since, until=until, program=program, namePrefix=name_prefix
            )
        if as_json:
            render.print_json(report)
            return
        render.stdout.print(render.stats_summary(report))
        render.stdout.print()
        render.stdout.print(render.patterns_table(report))
        render.note("* significant: adjusted p-value at most 0.05 (Benjamini-Hochberg)")

    @app.command("nodes")
    @failing_with_one_line
    def nodes(context: typer.Context, as_json: JsonOption = False) -> None:
        """The service's nodes: each one's health and running jobs."""
        with cli_context(context).api() as api:
            found, from_registry = list_nodes(api)
        if as_json:
            render.print_json(found)
            return
        if not from_registry:
            render.note(NO_NODE_REGISTRY)
        render.stdout.print(render.nodes_table(found))
