"""`jobmanager list|show|logs|cancel|retry`: reading and steering jobs of a running service."""

from __future__ import annotations

import sys
import time
from typing import Annotated, Any

import typer
from rich.console import Group
from rich.live import Live
from rich.text import Text

from service.cli import render
from service.cli.app import EXIT_FAILURE, cli_context, failing_with_one_line
from service.cli.client import ApiClient
from service.cli.following import stream_attempt, wait_for

DEFAULT_LIST_LIMIT = 20
WATCH_REFRESH_SECONDS = 2.0

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts instead of a table.")]
JobId = Annotated[str, typer.Argument(help="The job's id, e.g. job-42.", show_default=False)]


def _list_jobs(
    api: ApiClient, statuses: list[str], name: str | None, program: str | None, limit: int
) -> list[dict[str, Any]]:
    params: dict[str, Any] = {"limit": limit, "name": name, "program": program}
    if statuses:
        params["status"] = ",".join(statuses)
    jobs: list[dict[str, Any]] = api.get_json("/jobs", **params)
    return jobs


def list_command(
    context: typer.Context,
    status: Annotated[list[str] | None, typer.Option("--status", help="Only this status; repeat for several.")] = None,
    name: Annotated[str | None, typer.Option(help="Only jobs whose name starts so.")] = None,
    program: Annotated[str | None, typer.Option(help="Only jobs of this program name.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="At most this many, newest first.")] = (
        DEFAULT_LIST_LIMIT
    ),
    watch: Annotated[bool, typer.Option("--watch", help="Refresh the table until Ctrl+C.")] = False,
    as_json: JsonOption = False,
) -> None:
    """The newest jobs as a table."""
    statuses = list(status or [])
    with cli_context(context).api() as api:
        if not watch:
            jobs = _list_jobs(api, statuses, name, program, limit)
            if as_json:
                render.print_json(jobs)
            elif jobs:
                render.stdout.print(render.jobs_table(jobs))
            else:
                render.note("no job")
            return
        if as_json:
            render.error("--watch shows a live table; for scripts, call `list --json` as often as needed")
            raise typer.Exit(EXIT_FAILURE)

        def frame() -> Group:
            jobs = _list_jobs(api, statuses, name, program, limit)
            caption = Text(f"{api.base_url}  {time.strftime('%H:%M:%S')}  (Ctrl+C to stop)", style="bright_black")
            return Group(render.jobs_table(jobs), caption)

        try:
            with Live(frame(), console=render.stdout, auto_refresh=False) as live:
                while True:
                    time.sleep(WATCH_REFRESH_SECONDS)
                    live.update(frame(), refresh=True)
        except KeyboardInterrupt:
            return


def show(context: typer.Context, job_id: JobId, as_json: JsonOption = False) -> None:
    """One job's fields and its attempts."""
    with cli_context(context).api() as api:
        job: dict[str, Any] = api.get_json(f"/jobs/{job_id}")
    if as_json:
        render.print_json(job)
        return
    render.stdout.print(render.job_fields(job))
    if job["attemptHistory"]:
        render.stdout.print()
        render.stdout.print(render.attempts_table(job["attemptHistory"]))


def logs(
    context: typer.Context,
    job_id: JobId,
    attempt: Annotated[int | None, typer.Option(min=1, help="Which attempt (default: the latest).")] = None,
    stderr: Annotated[bool, typer.Option("--stderr", help="Its stderr instead of its stdout.")] = False,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Go on printing until the attempt ends.")] = False,
) -> None:
    """An attempt's output, as the program wrote it."""
    stream = "stderr" if stderr else "stdout"
    with cli_context(context).api() as api:
        job: dict[str, Any] = api.get_json(f"/jobs/{job_id}")
        number = attempt or job["attempts"]
        if number == 0:
            if not follow:
                render.error(f"{job_id} has not started yet; --follow waits for its first attempt")
                raise typer.Exit(EXIT_FAILURE)
            job, number = wait_for(api, job_id, until_attempt=1), 1
            if job["attempts"] == 0:
                render.error(f"{job_id} is {job['status']} and never ran")
                raise typer.Exit(EXIT_FAILURE)
        if follow:
            stream_attempt(api, job_id, number, stream)
            return
        response = api.request("GET", f"/jobs/{job_id}/attempts/{number}/output", params={"stream": stream})
        sys.stdout.write(response.text)
        sys.stdout.flush()


def cancel(context: typer.Context, job_id: JobId, as_json: JsonOption = False) -> None:
    """Cancel a job: at once if it waits; a running attempt gets SIGTERM, then SIGKILL."""
    with cli_context(context).api() as api:
        job: dict[str, Any] = api.post_json(f"/jobs/{job_id}/cancel")
    if as_json:
        render.print_json(job)
    elif job["status"] == "cancelled":
        render.stdout.print(f"{job_id} cancelled")
    else:
        render.stdout.print(f"{job_id}: cancel requested; it is cancelled once its running attempt has ended")


def retry(context: typer.Context, job_id: JobId, as_json: JsonOption = False) -> None:
    """Run a crashed or cancelled job again, as a new attempt."""
    with cli_context(context).api() as api:
        job: dict[str, Any] = api.post_json(f"/jobs/{job_id}/retry")
    if as_json:
        render.print_json(job)
    else:
        render.stdout.print(f"{job_id} is {job['status']}: attempt {job['attempts'] + 1} is due now")


def register(app: typer.Typer) -> None:
    app.command("list")(failing_with_one_line(list_command))
    app.command("show")(failing_with_one_line(show))
    app.command("logs")(failing_with_one_line(logs))
    app.command("cancel")(failing_with_one_line(cancel))
    app.command("retry")(failing_with_one_line(retry))
