"""Retention: removes the output files of this node's attempts past OUTPUT_RETENTION_DAYS and, when
JOB_RETENTION_DAYS is set, deletes finished jobs with their attempts, a small batch at a time."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from service.db.retention_store import RetentionStore
from service.domain.paths import attempt_files
from service.runner.output import remove_attempt_files
from service.supervisor.periodic import PeriodicTask

logger = logging.getLogger(__name__)

PRUNE_BATCH_SIZE = 500
"""Rows per statement: each batch is a short transaction that never holds many locks."""


@dataclass(frozen=True, slots=True)
class RetentionConfig:
    node_id: str
    output_dir: Path
    output_retention_days: float
    job_retention_days: float | None = None
    interval_seconds: float = 600.0
    batch_size: int = PRUNE_BATCH_SIZE


@dataclass(frozen=True, slots=True)
class PruneReport:
    attempts_cleared: int
    """Attempts whose output files were removed (or found already gone) and marked so."""
    files_removed: int
    """Files and folders removed from disk."""
    jobs_deleted: int


class Pruner:
    """`start()` runs `run_once()` every `interval_seconds` until `stop()`."""

    def __init__(self, store: RetentionStore, config: RetentionConfig) -> None:
        self._store = store
        self._config = config
        self._periodic = PeriodicTask("the pruner", self._round, interval_seconds=config.interval_seconds)

    async def run_once(self, now: datetime | None = None) -> PruneReport:
        """Everything that is due now, batch after batch."""
        now = now or datetime.now(UTC)
        config = self._config
        # Output never outlives its job: a job is only deleted once its files are gone.
        output_days = min(config.output_retention_days, config.job_retention_days or config.output_retention_days)
        output_cutoff = now - timedelta(days=output_days)
        cleared = files = 0
        while True:
            batch = await self._store.attempts_with_output(
                node_id=config.node_id, ended_before=output_cutoff, limit=config.batch_size
            )
            for attempt in batch:
                # On the event loop, like every start of a program: a folder is never removed under a new attempt.
                files += remove_attempt_files(attempt_files(config.output_dir, attempt.job_id, attempt.attempt_number))
            if batch:
                cleared += await self._store.mark_output_removed([attempt.attempt_id for attempt in batch])
            if len(batch) < config.batch_size:
                break
            await asyncio.sleep(0)  # let requests and the claim loop in between batches
        deleted = 0
        if config.job_retention_days is not None:
            job_cutoff = now - timedelta(days=config.job_retention_days)
            while True:
                count = await self._store.delete_finished_jobs(finished_before=job_cutoff, limit=config.batch_size)
                deleted += count
                if count < config.batch_size:
                    break
                await asyncio.sleep(0)
        return PruneReport(attempts_cleared=cleared, files_removed=files, jobs_deleted=deleted)

    async def start(self) -> None:
        self._periodic.start()

    async def stop(self) -> None:
        await self._periodic.stop()

    async def _round(self) -> None:
        report = await self.run_once()
        if report.attempts_cleared or report.jobs_deleted:
            logger.info(
                "pruned the output of %d attempt(s) (%d files and folders) and %d finished job(s)",
                report.attempts_cleared,
                report.files_removed,
                report.jobs_deleted,
            )
