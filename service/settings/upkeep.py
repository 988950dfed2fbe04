"""Settings of the upkeep: how long output and finished jobs are kept, and how often the background loops run."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field
from pydantic_settings import BaseSettings


class UpkeepSettings(BaseSettings):
    """Retention, and the background loops that do no job's work."""

    output_retention_days: Annotated[
        float,
        Field(
            gt=0,
            le=36500,
            description=(
                "An attempt's output files are removed this many days after it ended (its tails stay on the"
                " attempt row, and GET .../output serves them from there). Above 0, at most 36500."
            ),
        ),
    ] = 14.0
    job_retention_days: float | None = Field(
        default=None,
        gt=0,
        le=36500,
        description=(
            "Finished jobs (completed, crashed, cancelled) are deleted with their attempts this many days after"
            " they finished, once their output files are gone. Above 0, at most 36500. Unset: jobs are kept."
        ),
    )
    prune_interval_seconds: Annotated[
        float,
        Field(
            gt=0,
            le=86400,
            description="How often the pruner removes what the retention settings let go. Above 0, at most 86400.",
        ),
    ] = 600.0
    stats_drain_interval_seconds: Annotated[
        float,
        Field(
            gt=0,
            le=3600,
            description=(
                "How often the /stats queues (attempts finished, jobs changed) are folded into the rollup in the"
                " background, so that they stay short when nobody asks for /stats. Above 0, at most 3600."
            ),
        ),
    ] = 10.0
