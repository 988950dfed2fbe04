"""GET /metrics: the service's Prometheus metrics, kept in a registry of each app's own."""

from __future__ import annotations

import time
from typing import Any, Protocol

from litestar import Controller, Response, get
from litestar.di import NamedDependency
from litestar.types import Scope
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from service.db.errors import DatabaseUnavailableError, is_transient
from service.db.job_store import JobStore
from service.domain.status import AttemptOutcome

# The queue is counted up to this many jobs (the gauge then says "at least"), and not more often than this:
# a scrape never scans the whole queue, and many scrapers cost one query every few seconds.
QUEUED_COUNT_LIMIT = 10_000
QUEUED_CACHE_SECONDS = 5.0
# Programs run from a fraction of a second to hours; claims are one short query.
ATTEMPT_DURATION_BUCKETS_SECONDS = (0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 4 * 3600.0, 24 * 3600.0)
START_LATENCY_BUCKETS_SECONDS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0)
CLAIM_BUCKETS_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)


class NodeSlots(Protocol):
    """What the metrics read of this node's supervisor at each scrape."""

    @property
    def running_count(self) -> int: ...

    @property
    def free_slots(self) -> int: ...


class ServiceMetrics:
    """Every metric of one app. It is the supervisor's observer, and counts what the API sees."""

    def __init__(self, *, queued_cache_seconds: float = QUEUED_CACHE_SECONDS) -> None:
        self._queued_cache_seconds = queued_cache_seconds
        # Not the global registry: several apps in one process (tests) each count their own.
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        self.jobs_submitted = Counter(
            "jobmanager_jobs_submitted",
            "Jobs accepted by this node's API (POST /jobs answered 201).",
            registry=registry,
        )
        self.attempts_finished = Counter(
            "jobmanager_attempts_finished",
            "Attempts run by this node whose ending was recorded, by outcome and program name.",
            ["outcome", "program"],
            registry=registry,
        )
        self.attempts_running = Gauge(
            "jobmanager_attempts_running", "Attempts whose process this node is watching.", registry=registry
        )
        self.free_slots = Gauge(
            "jobmanager_free_slots",
            "Attempts this node could start now: MAX_CONCURRENT_JOBS less those running.",
            registry=registry,
        )
        self.jobs_queued = Gauge(
            "jobmanager_jobs_queued",
            f"Jobs due and waiting for a slot on any node, counted up to {QUEUED_COUNT_LIMIT} and cached"
            f" {QUEUED_CACHE_SECONDS:g} s.",
            registry=registry,
        )
        self.attempt_duration = Histogram(
            "jobmanager_attempt_duration_seconds",
            "How long each attempt recorded by this node ran, as its exit keeper timed it.",
            buckets=ATTEMPT_DURATION_BUCKETS_SECONDS,
            registry=registry,
        )
        self.start_latency = Histogram(
            "jobmanager_attempt_start_latency_seconds",
            "From the moment an attempt was due (its job's submission or runAt, or the end of a retry backoff) to"
            " its program starting on this node.",
            buckets=START_LATENCY_BUCKETS_SECONDS,
            registry=registry,
        )
        self.claim_duration = Histogram(
            "jobmanager_claim_duration_seconds",
            "Round trip of each claim query this node's supervisor made.",
            buckets=CLAIM_BUCKETS_SECONDS,
            registry=registry,
        )
        self.attempts_claimed = Counter(
            "jobmanager_attempts_claimed", "Attempts this node's claim queries took.", registry=registry
        )
        self.database_errors = Counter(
            "jobmanager_database_errors",
            "Statements of this node that failed because the database could not be reached.",
            registry=registry,
        )
        self._queued_counted_at: float | None = None

    # The supervisor's observer (service.supervisor.observer.SupervisorObserver).
    def claim_round(self, seconds: float, claimed: int) -> None:
        self.claim_duration.observe(seconds)
        self.attempts_claimed.inc(claimed)

    def attempt_started(self, program_name: str, waited_seconds: float | None) -> None:
        del program_name
        if waited_seconds is not None:
            self.start_latency.observe(max(0.0, waited_seconds))

    def attempt_finished(self, program_name: str, outcome: AttemptOutcome, duration_seconds: float | None) -> None:
        self.attempts_finished.labels(outcome=outcome.value, program=program_name).inc()
        if duration_seconds is not None:
            self.attempt_duration.observe(duration_seconds)

    def database_error(self) -> None:
        self.database_errors.inc()

    async def count_database_error(self, error: Exception, scope: Scope) -> None:
        """The app's after-exception hook: a request that failed for want of the database is counted too."""
        del scope
        if isinstance(error, DatabaseUnavailableError) or is_transient(error):
            self.database_errors.inc()

    async def refresh(self, supervisor: NodeSlots, job_store: JobStore) -> None:
        """Read the gauges' values: this node's slots now, the queue when its count is older than the cache."""
        self.attempts_running.set(supervisor.running_count)
        self.free_slots.set(supervisor.free_slots)
        now = time.monotonic()
        if self._queued_counted_at is not None and now - self._queued_counted_at < self._queued_cache_seconds:
            return
        try:
            self.jobs_queued.set(await job_store.count_due_jobs(at_most=QUEUED_COUNT_LIMIT))
        except DatabaseUnavailableError:
            self.database_errors.inc()  # the last count stays; the scrape still answers
        self._queued_counted_at = now

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class MetricsController(Controller):
    path = "/metrics"
    include_in_schema = False  # Prometheus' text format, not a JSON resource of the API

    @get(summary="Prometheus metrics")
    async def metrics(
        self,
        metrics: NamedDependency[ServiceMetrics],
        supervisor: NamedDependency[Any],
        job_store: NamedDependency[JobStore],
    ) -> Response[bytes]:
        await metrics.refresh(supervisor, job_store)
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
