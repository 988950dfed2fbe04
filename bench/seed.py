"""`python -m bench seed`: a realistic synthetic history, written by set-based SQL, for benchmarks and psql practice.

    python -m bench seed --database-url URL [--attempts 1000000] [--seed 1] [--days 30] [--into-existing]

The database is always named on the command line (DATABASE_URL is never read), and one that already holds jobs is
refused unless --into-existing is given: a million made-up attempts must never land in a real history by mistake.

Ten job families with their own programs, arguments, run times and odds; more failures at night, with an argument
over 100 characters, and on retries; retries only after a failure, up to each job's max_attempts. The history is
reproducible: the same --seed gives the same rows. Jobs and attempts are generated in chunks by
INSERT ... SELECT over generate_series, never row by row from Python.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TextIO

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from service.db.engine import Timeouts, create_engine
from service.db.migrate import upgrade_to_head
from service.stats.compute import compute_stats

EXIT_REFUSED = 2

CHUNK_ATTEMPTS = 50_000
EXPECTED_ATTEMPTS_PER_JOB = 1.25
"""Close to what the odds below give; a chunk plans a little more jobs than that and keeps what it needs."""
SEED_NODES = ("seed-node-1", "seed-node-2", "seed-node-3")
PROGRESS_BAR_WIDTH = 40

# family, weight, program, base success odds, median run time (ms), SQL for the name, SQL for the arguments.
# `n` is a random number per job and `u` a uniform random draw per job, both usable in the SQL.
_FAMILIES: tuple[tuple[str, float, str, float, int, str, str], ...] = (
    (
        "backup",
        0.10,
        "/opt/jobs/backup.sh",
        0.97,
        45_000,
        "'backup'",
        "CASE WHEN u < 0.3 THEN ARRAY['--full'] ELSE '{}' END",
    ),
    (
        "nightly-report",
        0.12,
        "/opt/jobs/report.py",
        0.90,
        9_000,
        "'nightly-report-' || (ARRAY['eu', 'us', 'apac'])[1 + n % 3]",
        "ARRAY['--format', 'pdf']",
    ),
    (
        "task",
        0.20,
        "/opt/jobs/report.py",
        0.78,
        1_500,
        "'task-' || n % 5000",
        "ARRAY['input' || n % 7, 'output' || n % 11]",
    ),
    (
        "etl",
        0.10,
        "/usr/local/bin/etl",
        0.86,
        70_000,
        "'etl_' || (ARRAY['orders', 'users', 'events', 'payments'])[1 + n % 4] || '_daily'",
        "ARRAY['--source', 's3://warehouse/raw/' || n % 90, '--target', 'analytics']",
    ),
    (
        "render",
        0.14,
        "/usr/local/bin/render",
        0.93,
        4_000,
        "'render-frame-' || n % 20000",
        "ARRAY['--scene', 'scene' || n % 40, '--quality', 'high']",
    ),
    ("sync", 0.06, "/opt/jobs/sync.sh", 0.62, 2_500, "'sync-users'", "ARRAY['--remote', 'ldap://directory.internal']"),
    (
        "import",
        0.08,
        "/usr/local/bin/etl",
        0.84,
        12_000,
        "'import_csv'",
        "ARRAY['--file', CASE WHEN u < 0.4 THEN '/data/incoming/' || repeat('partner-export-', 7) || n || '.csv' "
        "ELSE '/data/incoming/' || n || '.csv' END]",
    ),
    ("cleanup", 0.07, "/opt/jobs/backup.sh", 0.99, 300, "'cleanup'", "'{}'"),
    ("thumbnail", 0.09, "/usr/local/bin/render", 0.95, 250, "'thumb' || n % 100000", "ARRAY['img' || n || '.png']"),
    ("ping", 0.04, "/bin/true", 0.995, 15, "'ping'", "'{}'"),
)
# How the odds move: a retry after a failure, a start at night (00:00-06:00), an argument over 100 characters.
RETRY_ODDS_FACTOR = 0.75
NIGHT_ODDS_FACTOR = 0.85
LONG_ARGUMENT_ODDS_FACTOR = 0.70


def _families_sql() -> str:
    """The families as rows, each owning the slice [low, high) of a uniform draw (its weight)."""
    rows, low = [], 0.0
    for family, weight, program, odds, median_ms, _name, _arguments in _FAMILIES:
        high = low + weight
        rows.append(
            f"SELECT '{family}' AS family, {low} AS low, {high} AS high, '{program}' AS program, "
            f"{odds} AS odds, {median_ms} AS median_ms"
        )
        low = high
    return "\nUNION ALL ".join(rows)


def _case(column: str, family_to_sql: dict[str, str]) -> str:
    branches = " ".join(f"WHEN '{family}' THEN {sql}" for family, sql in family_to_sql.items())
    return f"CASE {column} {branches} END"


# One job per row of generate_series, with every random draw it needs made up front (three attempts at most).
_PLAN = f"""
    CREATE TEMPORARY TABLE seed_plan ON COMMIT DROP AS
    WITH families AS ({_families_sql()}),
    drawn AS (
        SELECT nextval(pg_get_serial_sequence('jobs', 'id')) AS job_id,
               random() AS family_draw, (random() * 1e9)::bigint AS n, random() AS u,
               random() AS day_draw, random() AS hour_draw, random() AS second_draw, random() AS limit_draw,
               ARRAY[random(), random(), random()] AS success_draws,
               ARRAY[random(), random(), random()] AS failure_draws,
               -- Box-Muller: a standard normal per attempt, for log-normal run times.
               ARRAY[sqrt(-2 * ln(1 - random())) * cos(2 * pi() * random()),
                     sqrt(-2 * ln(1 - random())) * cos(2 * pi() * random()),
                     sqrt(-2 * ln(1 - random())) * cos(2 * pi() * random())] AS normals
        FROM generate_series(1, :jobs)
    ),
    shaped AS (
        SELECT d.*, f.family, f.program, f.odds, f.median_ms,
               {_case("f.family", {family: name for family, *_rest, name, _args in _FAMILIES})} AS name,
               {_case("f.family", {family: args for family, *_rest, args in _FAMILIES})} AS arguments,
               CASE WHEN d.limit_draw < 0.1 THEN 1 WHEN d.limit_draw < 0.85 THEN 2 ELSE 3 END AS max_attempts,
               -- Most jobs are submitted during the working day; a third at any hour.
               date_trunc('day', CAST(:now AS timestamptz) - make_interval(days => (d.day_draw * :days)::int))
                 + make_interval(hours => CASE WHEN d.hour_draw < 0.67 THEN 8 + (d.hour_draw / 0.67 * 10)::int % 10
                                               ELSE ((d.hour_draw - 0.67) / 0.33 * 24)::int % 24 END)
                 + make_interval(secs => d.second_draw * 3600) AS planned_at
        FROM drawn d JOIN families f ON d.family_draw >= f.low AND d.family_draw < f.high
    ),
    dated AS MATERIALIZED (
        -- Today's hours that are still to come happened yesterday instead: no history in the future.
        SELECT s.*, CASE WHEN s.planned_at > CAST(:now AS timestamptz) THEN s.planned_at - interval '1 day'
                         ELSE s.planned_at END AS created_at
        FROM shaped s
    ),
    odds AS (
        SELECT s.*,
               s.odds
                 * CASE WHEN extract(hour FROM s.created_at) < 6 THEN {NIGHT_ODDS_FACTOR} ELSE 1 END
                 * CASE WHEN EXISTS (SELECT 1 FROM unnest(s.arguments) AS a WHERE char_length(a) > 100)
                        THEN {LONG_ARGUMENT_ODDS_FACTOR} ELSE 1 END AS first_odds
        FROM dated s
    ),
    outcomes AS MATERIALIZED (
        SELECT o.*,
               ARRAY[o.success_draws[1] < o.first_odds,
                     o.success_draws[2] < o.first_odds * {RETRY_ODDS_FACTOR},
                     o.success_draws[3] < o.first_odds * {RETRY_ODDS_FACTOR}] AS succeeded,
               ARRAY(SELECT greatest(1, (o.median_ms * exp(0.8 * z))::bigint)
                     FROM unnest(o.normals) WITH ORDINALITY AS normal (z, number) ORDER BY number) AS durations
        FROM odds o
    ),
    counted AS MATERIALIZED (
        SELECT c.*,
               CASE WHEN c.succeeded[1] OR c.max_attempts = 1 THEN 1
                    WHEN c.succeeded[2] OR c.max_attempts = 2 THEN 2 ELSE 3 END AS natural_attempts
        FROM outcomes c
    ),
    kept AS (
        SELECT k.*, sum(k.natural_attempts) OVER (ORDER BY k.job_id) AS through_this_job
        FROM counted k
    )
    SELECT kept.*,
           least(natural_attempts, :remaining - (through_this_job - natural_attempts))::int AS attempts,
           natural_attempts > :remaining - (through_this_job - natural_attempts) AS cut_short
    FROM kept
    WHERE through_this_job - natural_attempts < :remaining
"""

# When attempt k starts: after the queue delay, the earlier attempts' run times and a 1 s backoff between them.
_STARTED = """p.created_at + make_interval(secs => 0.5 + (k - 1)
                 + (SELECT coalesce(sum(d), 0) FROM unnest(p.durations[1:k - 1]) AS d) / 1000.0)"""
# Failures: exit 1 mostly, some exit 2, signals 9 and 15, lost, and a few programs that could not start.
_FAILURE = """CASE WHEN f < 0.70 THEN 'failed' WHEN f < 0.82 THEN 'failed' WHEN f < 0.90 THEN 'killed'
                   WHEN f < 0.94 THEN 'killed' WHEN f < 0.97 THEN 'lost' ELSE 'spawn_failed' END"""
_FAILURE_EXIT_CODE = "CASE WHEN f < 0.70 THEN 1 WHEN f < 0.82 THEN 2 END"
_FAILURE_SIGNAL = "CASE WHEN f >= 0.82 AND f < 0.90 THEN 9 WHEN f >= 0.90 AND f < 0.94 THEN 15 END"

_INSERT_ATTEMPTS = f"""
    INSERT INTO attempts (job_id, attempt_number, node_id, pid, process_started_at, outcome, exit_code, signal,
                          started_at, finished_at, duration_ms, error)
    SELECT p.job_id, k, (CAST(:nodes AS text[]))[1 + (p.n + k) % cardinality(CAST(:nodes AS text[]))],
           CASE WHEN outcome <> 'spawn_failed' THEN (1000 + (p.n + k) % 4000000)::int END,
           CASE WHEN outcome <> 'spawn_failed' THEN started END,
           outcome,
           CASE outcome WHEN 'succeeded' THEN 0 WHEN 'failed' THEN {_FAILURE_EXIT_CODE} END,
           CASE WHEN outcome = 'killed' THEN {_FAILURE_SIGNAL} END,
           started,
           CASE WHEN outcome <> 'running' THEN started + make_interval(secs => duration / 1000.0) END,
           CASE WHEN outcome NOT IN ('running', 'lost') THEN
                CASE WHEN outcome = 'spawn_failed' THEN 0 ELSE duration END END,
           CASE outcome WHEN 'spawn_failed' THEN 'No such file or directory'
                        WHEN 'lost' THEN 'the process was gone after a restart' END
    FROM seed_plan p
    CROSS JOIN LATERAL generate_series(1, p.attempts) AS k
    CROSS JOIN LATERAL (
        SELECT {_STARTED} AS started, p.durations[k] AS duration, p.failure_draws[k] AS f
    ) AS timing
    CROSS JOIN LATERAL (
        SELECT CASE WHEN p.cut_short AND k = p.attempts THEN 'running'
                    WHEN p.succeeded[k] THEN 'succeeded'
                    ELSE {_FAILURE} END AS outcome
    ) AS ending
"""

# A job's status and final fields follow from its last attempt, exactly as the state machine would have left them.
_INSERT_JOBS = f"""
    INSERT INTO jobs (id, name, program, arguments, status, max_attempts, attempts_count, next_attempt_at,
                      created_at, started_at, finished_at, exit_code)
    OVERRIDING SYSTEM VALUE
    SELECT p.job_id, p.name, p.program, p.arguments,
           CASE WHEN p.cut_short THEN CASE WHEN p.attempts = 1 THEN 'running' ELSE 'retried' END
                WHEN p.succeeded[p.attempts] THEN 'completed' ELSE 'crashed' END,
           p.max_attempts, p.attempts, NULL, p.created_at, p.created_at + interval '0.5 s',
           CASE WHEN NOT p.cut_short THEN last.started + make_interval(secs => p.durations[p.attempts] / 1000.0) END,
           CASE WHEN p.cut_short THEN NULL WHEN p.succeeded[p.attempts] THEN 0
                ELSE (SELECT {_FAILURE_EXIT_CODE} FROM (SELECT p.failure_draws[p.attempts] AS f) AS draw) END
    FROM seed_plan p
    CROSS JOIN LATERAL (SELECT k, {_STARTED} AS started FROM (SELECT p.attempts AS k) AS last_number) AS last
"""


@dataclass(frozen=True, slots=True)
class SeedResult:
    jobs: int
    attempts: int
    seconds: float
    rollup_seconds: float


class ProgressBar:
    """A one-line progress bar on a terminal; plain lines, now and then, when the output is a file."""

    def __init__(self, total: int, stream: TextIO, label: str) -> None:
        self.total, self.stream, self.label = total, stream, label
        self.started = time.perf_counter()
        self._interactive = stream.isatty()
        self._last_percent = -1

    def update(self, done: int) -> None:
        fraction = done / self.total if self.total else 1.0
        percent = int(fraction * 100)
        elapsed = time.perf_counter() - self.started
        filled = int(fraction * PROGRESS_BAR_WIDTH)
        line = (
            f"{self.label} [{'#' * filled}{'.' * (PROGRESS_BAR_WIDTH - filled)}] {percent:3d}% "
            f"{done:,}/{self.total:,} attempts, {elapsed:.1f} s"
        )
        if self._interactive:
            self.stream.write("\r" + line)
        elif percent // 10 != self._last_percent // 10 or done == self.total:
            self.stream.write(line + "\n")
        self._last_percent = percent
        self.stream.flush()

    def finish(self) -> None:
        if self._interactive:
            self.stream.write("\n")
            self.stream.flush()


async def seed_history(
    engine: AsyncEngine,
    attempts: int,
    *,
    seed: int = 1,
    days: int = 30,
    on_progress: Callable[[int], None] | None = None,
) -> SeedResult:
    """Add `attempts` attempts (and their jobs) to the database, then bring the /stats rollup up to date."""
    if attempts < 1:
        raise ValueError(f"attempts is {attempts}; it must be at least 1")
    if days < 1:
        raise ValueError(f"days is {days}; it must be at least 1")
    started = time.perf_counter()
    now = datetime.now(UTC)
    done = jobs = 0
    async with engine.connect() as connection:
        # random() is deterministic after setseed() within this session: the same seed, the same history.
        await connection.execute(text("SELECT setseed(:value)"), {"value": math.sin(seed)})
        # These statements are costly to the planner's eye, so JIT would compile them, for longer than they run.
        await connection.execute(text("SET jit = off"))
        await connection.commit()
        while done < attempts:
            remaining = attempts - done
            planned_jobs = math.ceil(min(remaining, CHUNK_ATTEMPTS) / EXPECTED_ATTEMPTS_PER_JOB * 1.1) + 1
            await connection.execute(
                text(_PLAN), {"jobs": planned_jobs, "remaining": remaining, "now": now, "days": days}
            )
            chunk_jobs = (await connection.execute(text(_INSERT_JOBS))).rowcount
            chunk_attempts = (await connection.execute(text(_INSERT_ATTEMPTS), {"nodes": list(SEED_NODES)})).rowcount
            await connection.commit()
            done += chunk_attempts
            jobs += chunk_jobs
            if on_progress is not None:
                on_progress(done)
        await connection.execute(text("RESET jit"))
        await connection.commit()
        # As autovacuum would, some time later: statistics for the planner, and a visibility map for index-only scans.
        autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
        await autocommit.execute(text("VACUUM (ANALYZE) jobs, attempts"))
    rollup_started = time.perf_counter()
    await compute_stats(engine)
    finished = time.perf_counter()
    return SeedResult(jobs=jobs, attempts=done, seconds=finished - started, rollup_seconds=finished - rollup_started)


class SeedRefusedError(Exception):
    """The target database already holds jobs and --into-existing was not given."""


async def _holds_jobs(engine: AsyncEngine) -> bool:
    """Whether the database has a jobs table with at least one row (a database never migrated has none)."""
    async with engine.connect() as connection:
        if (await connection.execute(text("SELECT to_regclass('jobs') IS NOT NULL"))).scalar_one() is not True:
            return False
        return (await connection.execute(text("SELECT EXISTS (SELECT FROM jobs)"))).scalar_one() is True


def run_seed(
    database_url: str,
    attempts: int,
    *,
    seed: int,
    days: int,
    into_existing: bool = False,
    stream: TextIO = sys.stderr,
) -> SeedResult:
    """Refuse a database with jobs (unless `into_existing`), then migrate, seed with a progress bar, report."""

    async def _run() -> SeedResult:
        # A bulk load: a chunk on a busy machine may take longer than the service's per-statement bound.
        engine = create_engine(database_url, pool_size=1, timeouts=Timeouts(statement_seconds=None))
        try:
            if not into_existing and await _holds_jobs(engine):
                raise SeedRefusedError(
                    "the database already holds jobs; give --into-existing to add the synthetic history to them"
                )
            await upgrade_to_head(engine)
            bar = ProgressBar(attempts, stream, "seeding")
            result = await seed_history(engine, attempts, seed=seed, days=days, on_progress=bar.update)
            bar.finish()
            return result
        finally:
            await engine.dispose()

    return asyncio.run(_run())


def _positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive whole number")
    return number


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m bench seed`; returns the exit status (EXIT_REFUSED, with one line on stderr, when it will not)."""
    parser = argparse.ArgumentParser(prog="python -m bench seed", description="Add a realistic synthetic history.")
    parser.add_argument("--database-url", help="the PostgreSQL database to fill (required; DATABASE_URL is not read)")
    parser.add_argument("--into-existing", action="store_true", help="add to a database that already holds jobs")
    parser.add_argument("--attempts", type=_positive_int, default=1_000_000, help="attempts to add (default 1000000)")
    parser.add_argument("--seed", type=int, default=1, help="the same seed gives the same history (default 1)")
    parser.add_argument("--days", type=_positive_int, default=30, help="how far back the history reaches (default 30)")
    arguments = parser.parse_args(argv)
    if not arguments.database_url:
        print(f"{parser.prog}: refused: name the database to fill with --database-url", file=sys.stderr)
        return EXIT_REFUSED
    try:
        result = run_seed(
            arguments.database_url,
            arguments.attempts,
            seed=arguments.seed,
            days=arguments.days,
            into_existing=arguments.into_existing,
        )
    except SeedRefusedError as error:
        print(f"{parser.prog}: refused: {error}", file=sys.stderr)
        return EXIT_REFUSED
    print(
        f"seeded {result.attempts:,} attempts of {result.jobs:,} jobs in {result.seconds:.1f} s "
        f"(the /stats rollup took {result.rollup_seconds:.1f} s of it)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
