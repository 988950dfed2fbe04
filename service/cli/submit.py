"""`jobmanager submit NAME [ARG...]`: submit a job; with --wait or --follow, end as the job ended."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from service.cli import render
from service.cli.app import EXIT_INTERRUPTED, cli_context, failing_with_one_line
from service.cli.following import ending_line, exit_status_of, follow_job, wait_quietly


def register(app: typer.Typer) -> None:
    @app.command("submit")
    @failing_with_one_line
    def submit(
        context: typer.Context,
        name: Annotated[str, typer.Argument(help="The job's name (jobName).", show_default=False)],
        arguments: Annotated[
            list[str] | None,
            typer.Argument(help="The program's arguments; `--` before any that starts with `-`.", show_default=False),
        ] = None,
        program: Annotated[
            str | None, typer.Option(help="A program name from ALLOWED_PROGRAMS (default: `default`).")
        ] = None,
        priority: Annotated[int | None, typer.Option(help="Higher runs first, -1000 to 1000.")] = None,
        timeout: Annotated[
            float | None, typer.Option(help="Seconds an attempt may run before it is ended (timed_out).")
        ] = None,
        run_at: Annotated[
            str | None, typer.Option("--run-at", help="Not before this time: ISO 8601 with an offset.")
        ] = None,
        max_attempts: Annotated[int | None, typer.Option("--max-attempts", help="Attempts in all, 1 to 20.")] = None,
        idempotency_key: Annotated[
            str | None,
            typer.Option("--idempotency-key", help="The same key and request give the same job, however often sent."),
        ] = None,
        wait: Annotated[
            bool, typer.Option("--wait", help="Wait for the job to end; exit with its exit status.")
        ] = False,
        follow: Annotated[bool, typer.Option("--follow", help="Like --wait, and stream its stdout meanwhile.")] = False,
        as_json: Annotated[
            bool, typer.Option("--json", help="Print the job (the final one with --wait) as JSON.")
        ] = False,
    ) -> None:
        """Submit a job and print its id. With --wait, the exit status is the job's: see docs/cli.md."""
        body: dict[str, Any] = {"jobName": name, "arguments": list(arguments or [])}
        optional = {
            "program": program,
            "priority": priority,
            "timeoutSeconds": timeout,
            "runAt": run_at,
            "maxAttempts": max_attempts,
        }
        body.update({key: value for key, value in optional.items() if value is not None})
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        with cli_context(context).api() as api:
            job: dict[str, Any] = api.post_json("/jobs", body, headers=headers)
            job_id = job["jobId"]
            if not (wait or follow):
                if as_json:
                    render.print_json(job)
                else:
                    render.stdout.print(job_id)
                return
            if not as_json and not follow:
                render.stdout.print(job_id)
            else:
                render.note(f"submitted {job_id}")
            try:
                follow_job(api, job_id) if follow else wait_quietly(api, job_id)
            except KeyboardInterrupt:
                render.note(f"stopped waiting; {job_id} goes on (jobmanager cancel {job_id} ends it)")
                raise typer.Exit(EXIT_INTERRUPTED) from None
            final: dict[str, Any] = api.get_json(f"/jobs/{job_id}")
        if as_json:
            render.print_json(final)
        render.note(ending_line(final))
        raise typer.Exit(exit_status_of(final))
