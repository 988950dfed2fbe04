"""Settings of how this node runs its jobs: how many at once, under which exit keeper, with how much output,
how often it looks for work, and what a stop does with what runs."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field
from pydantic_settings import BaseSettings

from service.domain.shutdown import ShutdownMode
from service.runner.keeper import KeeperKind

MEBIBYTE = 1024 * 1024


class RunningSettings(BaseSettings):
    """How this node runs its jobs."""

    max_concurrent_jobs: Annotated[
        int, Field(ge=1, le=100_000, description="How many jobs this node runs at once, 1 to 100000.")
    ] = 10
    output_limit_bytes: Annotated[
        int,
        Field(
            ge=1024,
            le=1024 * 1024 * MEBIBYTE,
            description=(
                "Bytes of each output stream (stdout, stderr) kept in its file, 1024 to 1 TiB (default 10 MiB);"
                " past it, a truncation marker and the stream's last `OUTPUT_TAIL_BYTES`. Without an exit keeper"
                " the files are not bounded."
            ),
        ),
    ] = 10 * MEBIBYTE
    output_tail_bytes: Annotated[
        int,
        Field(
            ge=0,
            le=16 * MEBIBYTE,
            description=(
                "The end of each stream kept past the limit, and stored on the attempt row when it ends"
                " (`attempts.stdout_tail`, `stderr_tail`), 0 to 16 MiB (default 64 KiB)."
            ),
        ),
    ] = 64 * 1024
    exit_keeper: KeeperKind = Field(
        default=KeeperKind.AUTO,
        description=(
            "What records each program's exit status in a file, so that it survives the service: `auto` (the"
            " compiled keeper if a C compiler is found, else the Python one), `native` (start-up fails without a"
            " C compiler), `python` or `none`. Ignored on Windows, which has no keeper."
        ),
    )
    keeper_fork_server: bool = Field(
        default=True,
        description=(
            "With the compiled exit keeper: start keepers through one long-lived fork server (`exit_keeper"
            " --serve`), which forks them many at a time and reports their exits, instead of spawning each from"
            " the service. `false`: spawn each keeper directly (slower; the same records). Keepers outlive either"
            " way (see The exit keeper in docs/operations.md)."
        ),
    )
    poll_interval_seconds: Annotated[
        float,
        Field(
            gt=0,
            le=60,
            description=(
                "How often the supervisor looks for due jobs when nothing woke it (jobs submitted through another"
                " node). A job submitted to this node wakes it at once. Above 0, at most 60."
            ),
        ),
    ] = 1.0
    shutdown_grace_seconds: Annotated[
        float,
        Field(
            ge=0,
            le=3600,
            description="For `drain` and `kill`: how long a graceful stop waits for running jobs, 0 to 3600.",
        ),
    ] = 10.0
    shutdown_mode: ShutdownMode = Field(
        default=ShutdownMode.LEAVE,
        description=(
            "What a graceful stop does with running jobs: `leave` them for the next start to adopt, `drain`"
            " (wait up to `SHUTDOWN_GRACE_SECONDS` for them) or `kill` them."
        ),
    )
    outcome_sweep_interval_seconds: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        description=(
            "Seconds between sweeps that record, from their exit-status files, attempts of this node still"
            " `running` in the database although nothing watches them any more; above 0, at most 3600."
        ),
    )
