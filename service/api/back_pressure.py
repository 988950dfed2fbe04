"""MAX_QUEUED_JOBS: past it, POST /jobs answers 429 and stores nothing, at the cost of one bounded count a second."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from service.api.errors import ProblemError

QUEUE_RECOUNT_SECONDS = 1.0
"""How old the count of queued jobs may be; between counts, the jobs this node accepted are added to it."""
RETRY_AFTER_SECONDS = 1


class QueueGauge:
    """How many jobs are queued in the database, counted at most every QUEUE_RECOUNT_SECONDS.

    Between counts the node adds the jobs it accepted itself, so one node never overshoots the limit; jobs other
    nodes accept are seen at the next count (the limit may be passed by what they accept in that interval).
    """

    def __init__(
        self,
        count_queued: Callable[[int], Awaitable[int]],
        *,
        limit: int,
        recount_seconds: float = QUEUE_RECOUNT_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._count_queued = count_queued
        self._limit = limit
        self._recount_seconds = recount_seconds
        self._clock = clock
        self._counted: int | None = None
        self._counted_at = 0.0
        self._accepted_since = 0
        self._recount = asyncio.Lock()

    @property
    def limit(self) -> int:
        return self._limit

    async def check_room(self) -> None:
        """Raise a 429 problem when the queue is full; 0 means no limit (and no count)."""
        if self._limit == 0:
            return
        if self._counted is None or self._clock() - self._counted_at >= self._recount_seconds:
            async with self._recount:  # one count in flight; the requests waiting on it use its result
                if self._counted is None or self._clock() - self._counted_at >= self._recount_seconds:
                    self._counted = await self._count_queued(self._limit)
                    self._counted_at = self._clock()
                    self._accepted_since = 0
        if self._counted + self._accepted_since >= self._limit:
            raise ProblemError(
                status_code=429,
                detail=(
                    f"{self._limit} jobs are queued, the limit (MAX_QUEUED_JOBS); "
                    f"try again in {RETRY_AFTER_SECONDS} s or more"
                ),
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            )

    def accepted(self) -> None:
        """A job was stored: counted until the next recount sees it in the table."""
        self._accepted_since += 1
