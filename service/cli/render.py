"""How the command line shows things: rich tables and colours for people, plain JSON for scripts."""

from __future__ import annotations

import json
import sys
from datetime import datetime
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

# Output for people and scripts goes to stdout; messages, spinners and errors to stderr, so that
# `id=$(jobmanager submit ...)` and `jobmanager list --json | jq` see nothing else.
stdout = Console(highlight=False)
stderr = Console(stderr=True, highlight=False)

STATUS_STYLES = {
    "queued": "cyan",
    "running": "yellow",
    "retried": "magenta",
    "completed": "green",
    "crashed": "red",
    "cancelled": "bright_black",
}
OUTCOME_STYLES = {
    "running": "yellow",
    "succeeded": "green",
    "failed": "red",
    "killed": "red",
    "spawn_failed": "red",
    "lost": "red",
    "cancelled": "bright_black",
    "timed_out": "red",
}
BAR_WIDTH = 20
MILLISECONDS_PER_SECOND = 1000
SECONDS_PER_MINUTE = 60


def print_json(value: Any) -> None:
    """Indented JSON on stdout, with nothing else: what `--json` promises."""
    sys.stdout.write(json.dumps(value, indent=2, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def error(message: str) -> None:
    stderr.print(Text(f"jobmanager: {message}", style="red"), soft_wrap=True)


def note(message: str) -> None:
    stderr.print(Text(message, style="bright_black"), soft_wrap=True)


def status_text(status: str) -> Text:
    return Text(status, style=STATUS_STYLES.get(status, ""))


def outcome_text(outcome: str) -> Text:
    return Text(outcome, style=OUTCOME_STYLES.get(outcome, ""))


def moment(value: str | None) -> str:
    """An API time (ISO 8601, UTC) as `2024-05-01 12:30:05`, in UTC; `-` for none."""
    if not value:
        return "-"
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        return value


def duration(milliseconds: int | None) -> str:
    if milliseconds is None:
        return "-"
    if milliseconds < MILLISECONDS_PER_SECOND:
        return f"{milliseconds} ms"
    seconds = milliseconds / MILLISECONDS_PER_SECOND
    if seconds < SECONDS_PER_MINUTE:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(int(seconds), SECONDS_PER_MINUTE)
    return f"{minutes} min {rest} s"


def exit_text(exit_code: int | None, signal: int | None) -> str:
    if signal is not None:
        return f"signal {signal}"
    return "-" if exit_code is None else str(exit_code)


def jobs_table(jobs: list[dict[str, Any]]) -> Table:
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("JOB", "NAME", "PROGRAM", "STATUS", "ATTEMPTS", "EXIT", "DURATION", "CREATED (UTC)"):
        table.add_column(column, no_wrap=column in ("JOB", "STATUS", "CREATED (UTC)"))
    for job in jobs:
        table.add_row(
            job["jobId"],
            job["jobName"],
            job["programName"],
            status_text(job["status"]),
            f"{job['attempts']}/{job['maxAttempts']}",
            exit_text(job["exitCode"], None),
            duration(job["duration"]),
            moment(job["createdAt"]),
        )
    return table


def job_fields(job: dict[str, Any]) -> Table:
    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    rows: list[tuple[str, str | Text]] = [
        ("job", job["jobId"]),
        ("name", job["jobName"]),
        ("status", status_text(job["status"])),
        ("program", f"{job['programName']} ({job['program']})"),
        ("arguments", " ".join(job["args"]) or "-"),
        ("attempts", f"{job['attempts']} of {job['maxAttempts']}"),
        ("exit code", exit_text(job["exitCode"], None)),
        ("priority", str(job["priority"])),
        ("timeout", "-" if job["timeoutSeconds"] is None else f"{job['timeoutSeconds']:g} s"),
        ("run at", moment(job["runAt"])),
        ("created", moment(job["createdAt"])),
        ("started", moment(job["startedAt"])),
        ("finished", moment(job["finishedAt"])),
    ]
    if job.get("cancelRequestedAt"):
        rows.append(("cancel asked", moment(job["cancelRequestedAt"])))
    for name, value in rows:
        table.add_row(name, value)
    return table


def attempts_table(attempts: list[dict[str, Any]]) -> Table:
    table = Table(box=None, header_style="bold", pad_edge=False, title_justify="left")
    for column in ("#", "NODE", "PID", "OUTCOME", "EXIT", "DURATION", "STARTED (UTC)", "ERROR"):
        table.add_column(column)
    for attempt in attempts:
        table.add_row(
            str(attempt["attempt"]),
            attempt["nodeId"],
            "-" if attempt["pid"] is None else str(attempt["pid"]),
            outcome_text(attempt["outcome"]),
            exit_text(attempt["exitCode"], attempt["signal"]),
            duration(attempt["duration"]),
            moment(attempt["startedAt"]),
            attempt["error"] or "",
        )
    return table


def bar(rate: float, width: int = BAR_WIDTH) -> Text:
    """A success rate as a bar: green for the successes, red for the rest."""
    filled = round(max(0.0, min(1.0, rate)) * width)
    return Text("█" * filled, style="green") + Text("░" * (width - filled), style="red")


def percent(rate: float | None) -> str:
    return "-" if rate is None else f"{rate * 100:.1f} %"


def stats_summary(stats: dict[str, Any]) -> Table:
    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("jobs", str(stats["totalJobs"]))
    table.add_row("finished attempts", str(stats["totalAttempts"]))
    table.add_row("attempt success", percent(stats["overallSuccessRate"]))
    table.add_row("job success", f"{percent(stats['jobSuccessRate'])} of {stats['decidedJobs']} decided")
    table.add_row(
        "rescued by a retry",
        f"{percent(stats['retryRescueRate'])} ({stats['rescuedJobs']} of {stats['retriedFailures']})",
    )
    return table


def patterns_table(stats: dict[str, Any]) -> Table:
    """The patterns with their success rate as a bar; a significant one is marked with `*` and in bold."""
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("", "PATTERN", "MATCHES", "SUCCESS", "", "VS AVERAGE", "ADJ. P"):
        table.add_column(column)
    for pattern in stats["patterns"]:
        significant = bool(pattern["significant"])
        adjusted = pattern["adjustedPValue"]
        table.add_row(
            Text("*", style="bold yellow") if significant else "",
            Text(pattern["pattern"], style="bold" if significant else ""),
            str(pattern["matchCount"]),
            bar(pattern["successRate"]),
            percent(pattern["successRate"]) if pattern["matchCount"] else "-",
            pattern["differenceFromAverage"],
            "-" if adjusted is None else f"{adjusted:.3g}",
        )
    return table


def nodes_table(nodes: list[dict[str, Any]]) -> Table:
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("NODE", "STATUS", "DATABASE", "RUNNING"):
        table.add_column(column)
    for node in nodes:
        status = str(node.get("status", "-"))
        table.add_row(
            node["nodeId"],
            Text(status, style="green" if status == "ok" else "red"),
            str(node.get("database", "-")),
            str(node.get("runningJobs", "-")),
        )
    return table
