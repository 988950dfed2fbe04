"""GET /ui/api/overview and /ui/api/submit-options: the JSON the dashboard draws, beside the public API's own."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol, runtime_checkable

import msgspec
from litestar import Controller, get
from litestar.di import NamedDependency

from service.db.job_store import JobStore
from service.domain.status import AttemptOutcome, JobStatus

ACTIVITY_WINDOW = timedelta(hours=1)


@runtime_checkable  # Litestar checks injected values with isinstance()
class NodeSlots(Protocol):
    """What the dashboard shows of a node's supervisor."""

    @property
    def node_id(self) -> str: ...

    @property
    def running_count(self) -> int: ...

    @property
    def free_slots(self) -> int: ...


@runtime_checkable
class SubmitChoices(Protocol):
    """What a submitted job may choose from, and what it gets when it does not say (the API's JobDefaults)."""

    @property
    def programs(self) -> Mapping[str, Path]: ...

    @property
    def max_attempts(self) -> int: ...

    @property
    def timeout_seconds(self) -> float | None: ...


class NodeRead(msgspec.Struct, rename="camel"):
    node_id: str
    running: int
    free_slots: int
    this_node: bool


class MinuteRead(msgspec.Struct, rename="camel"):
    minute: datetime
    submitted: int
    ended: dict[str, int]
    """Attempts that ended in this minute, by outcome."""


class OverviewRead(msgspec.Struct, rename="camel"):
    counts: dict[str, int]
    """Jobs by status; every status is present."""
    nodes: list[NodeRead]
    activity: list[MinuteRead]
    """Minutes with any activity, oldest first, from `since`."""
    since: datetime
    now: datetime
    outcomes: list[str]
    """Every attempt outcome but running, in the order the chart stacks them."""


class SubmitOptionsRead(msgspec.Struct, rename="camel"):
    programs: list[str]
    """The names a job may choose (`default` among them); paths stay on the server."""
    default_max_attempts: int
    default_timeout_seconds: float | None


class DashboardDataController(Controller):
    path = "/ui/api"
    include_in_schema = False

    @get("/overview")
    async def overview(
        self, job_store: NamedDependency[JobStore], supervisor: NamedDependency[NodeSlots]
    ) -> OverviewRead:
        """Counts by status, this node's slots, and the last hour per minute."""
        now = datetime.now(UTC)
        since = (now - ACTIVITY_WINDOW).replace(second=0, microsecond=0)
        counts = await job_store.count_by_status()
        activity = await job_store.activity_per_minute(since)
        # One node today: the supervisor of this process. A nodes table would list every node here.
        node = NodeRead(
            node_id=supervisor.node_id,
            running=supervisor.running_count,
            free_slots=supervisor.free_slots,
            this_node=True,
        )
        return OverviewRead(
            counts={status.value: counts[status] for status in JobStatus},
            nodes=[node],
            activity=[
                MinuteRead(
                    minute=minute.minute,
                    submitted=minute.submitted,
                    ended={outcome.value: count for outcome, count in minute.ended.items()},
                )
                for minute in activity
            ],
            since=since,
            now=now,
            outcomes=[outcome.value for outcome in AttemptOutcome if outcome is not AttemptOutcome.RUNNING],
        )

    @get("/submit-options")
    async def submit_options(self, job_defaults: NamedDependency[SubmitChoices]) -> SubmitOptionsRead:
        return SubmitOptionsRead(
            programs=sorted(job_defaults.programs),
            default_max_attempts=job_defaults.max_attempts,
            default_timeout_seconds=job_defaults.timeout_seconds,
        )
