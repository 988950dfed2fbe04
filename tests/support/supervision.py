"""Supervisor-level tests: a supervisor's settings, and jobs through the stores (submit, read, wait for)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from service.domain.records import AttemptRecord, JobRecord, NewJob
from service.domain.retry import NO_WAIT
from service.domain.shutdown import ShutdownMode
from service.runner.launcher import ProcessLauncher
from service.settings import DEFAULT_CHILD_ENVIRONMENT
from service.supervisor.config import SupervisorConfig
from service.supervisor.supervisor import Supervisor
from tests.support.processes import WAIT_SECONDS, kill_and_reap_groups, wait_until
from tests.support.stores import Stores


def supervisor_config(node_id: str, output_dir: Path, **overrides: Any) -> SupervisorConfig:
    """A supervisor for tests: a few slots, a quick poll, no wait before a retry, processes ended when it stops."""
    values: dict[str, Any] = {
        "node_id": node_id,
        "max_concurrent_jobs": 4,
        "retry_policy": NO_WAIT,
        "poll_interval_seconds": 0.2,
        "shutdown_grace_seconds": 2.0,
        # Tests end every process they start; leaving jobs to a next start is for the restart tests to ask for.
        "shutdown_mode": ShutdownMode.KILL,
        "output_dir": output_dir,
        "inherited_environment": DEFAULT_CHILD_ENVIRONMENT,
    }
    return SupervisorConfig(**(values | overrides))


class Supervisors:
    """The supervisors a test creates over one database, and the process groups they may leave running.

    `cleanup` stops every supervisor, then kills and reaps each group in `groups`: the exit keepers a supervisor
    stopped in `leave` mode leaves behind are still children of this test process.
    """

    def __init__(self, stores: Stores, launcher: ProcessLauncher) -> None:
        self.stores = stores
        self.launcher = launcher
        self.created: list[Supervisor] = []
        self.groups: set[int] = set()

    def create(self, config: SupervisorConfig, launcher: ProcessLauncher | None = None) -> Supervisor:
        supervisor = Supervisor(self.stores.attempts, config, launcher or self.launcher)
        self.created.append(supervisor)
        return supervisor

    async def cleanup(self) -> None:
        for supervisor in self.created:
            await supervisor.stop()
        await kill_and_reap_groups(self.groups)


async def submit(
    stores: Stores, program: Path, *arguments: str, name: str = "task-1", max_attempts: int = 1, **extra: Any
) -> JobRecord:
    return await stores.jobs.submit_job(
        NewJob(name=name, program=str(program), arguments=list(arguments), max_attempts=max_attempts, **extra)
    )


async def find_job(stores: Stores, job_id: int) -> JobRecord:
    """The job, which must exist."""
    job = await stores.jobs.find_job(job_id)
    assert job is not None
    return job


async def wait_for_pid(stores: Stores, job_id: int) -> AttemptRecord:
    """The job's latest attempt, once the supervisor has recorded which process runs it."""

    async def has_pid() -> bool:
        attempts = await stores.jobs.list_attempts(job_id)
        return bool(attempts) and attempts[-1].pid is not None

    await wait_until(has_pid, f"job {job_id}'s attempt never got a pid")
    return (await stores.jobs.list_attempts(job_id))[-1]


async def wait_for_final(stores: Stores, job_id: int, timeout: float = WAIT_SECONDS) -> JobRecord:
    async def is_final() -> bool:
        return (await find_job(stores, job_id)).status.is_final

    await wait_until(is_final, f"job {job_id} never became final", timeout)
    return await find_job(stores, job_id)
