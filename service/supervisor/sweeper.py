"""The outcome sweep: while the service runs, record the attempts of this node that the database still says are
`running` although nothing here watches them or is writing their outcome (a write that met an error no retry
mends, a watcher that died). Their exit-status file holds the outcome; the reconciler's rules settle each one."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass

from service.db.attempt_store import AttemptStore
from service.supervisor.periodic import PeriodicTask
from service.supervisor.reconciler import Reconciler, Settled
from service.supervisor.supervisor import Supervisor

logger = logging.getLogger(__name__)

SWEEP = "by the outcome sweep"


@dataclass(frozen=True, slots=True)
class SweepReport:
    untracked: int
    """Running in the database, with a process recorded, and neither watched nor being written here."""
    recovered: int
    adopted: int
    lost: int
    withdrawn: int = 0
    """Its keeper was abandoned before its go-ahead: the program never ran, and the attempt was taken back."""


class OutcomeSweeper:
    """Every `interval_seconds`, `run_once()`: one sweep (what tests call)."""

    def __init__(
        self, attempts: AttemptStore, supervisor: Supervisor, reconciler: Reconciler, *, interval_seconds: float
    ) -> None:
        self._attempts = attempts
        self._supervisor = supervisor
        self._reconciler = reconciler
        # The reconciler has just settled everything at start: the first sweep waits a whole interval.
        self._periodic = PeriodicTask(
            "the outcome sweep", self.run_once, interval_seconds=interval_seconds, first_delay_seconds=interval_seconds
        )

    async def start(self) -> None:
        self._periodic.start()

    async def stop(self) -> None:
        await self._periodic.stop()

    async def run_once(self) -> SweepReport:
        running = await self._attempts.running_attempts_on_node(self._supervisor.node_id)
        # Without a pid the attempt may have just been claimed (its watcher not yet registered): leave it alone. The
        # database may also be a moment behind the supervisor; recording is fenced, so a late sweep writes nothing.
        untracked = [
            attempt
            for attempt in running
            if attempt.attempt.pid is not None and not self._supervisor.is_tracking(attempt.attempt.id)
        ]
        settled = Counter([await self._reconciler.settle(attempt, occasion=SWEEP) for attempt in untracked])
        report = SweepReport(
            untracked=len(untracked),
            recovered=settled[Settled.RECOVERED],
            adopted=settled[Settled.ADOPTED],
            lost=settled[Settled.LOST] + settled[Settled.ENDED_AND_LOST],
            withdrawn=settled[Settled.WITHDRAWN],
        )
        if untracked:
            logger.warning(
                "outcome sweep on node %s: %d running attempt(s) nobody watched: %d recorded from their files, "
                "%d adopted, %d lost",
                self._supervisor.node_id,
                report.untracked,
                report.recovered,
                report.adopted,
                report.lost,
            )
        return report
