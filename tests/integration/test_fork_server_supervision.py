"""The supervisor over the fork server: a killed server loses no outcome, and a start it never answered is taken
back and run again."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from service.domain.status import AttemptOutcome, JobStatus
from service.runner.launcher import ProcessLauncher
from tests.support.processes import WAIT_SECONDS, wait_until, write_script
from tests.support.stores import Stores
from tests.support.supervision import Supervisors, submit, supervisor_config, wait_for_final

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="finds the fork server through /proc")

NODE_ID = "fork-server-node"


@pytest.fixture
async def supervisors(stores: Stores, launcher: ProcessLauncher) -> AsyncIterator[Supervisors]:
    if not launcher.uses_fork_server:
        pytest.skip("no C compiler: no fork server")
    created = Supervisors(stores, launcher)
    yield created
    await created.cleanup()


def fork_servers() -> list[int]:
    """This test process's fork servers (`exit_keeper --serve`) that still run."""
    found = []
    for entry in os.listdir("/proc"):
        try:
            stat = Path(f"/proc/{entry}/stat").read_bytes()
            command = Path(f"/proc/{entry}/cmdline").read_bytes()
        except (OSError, ValueError):
            continue
        fields = stat[stat.rfind(b")") + 2 :].split()
        if int(fields[1]) == os.getpid() and command.endswith(b"\0--serve\0") and fields[0] != b"Z":
            found.append(int(entry))
    return found


async def test_outcomes_are_recorded_when_the_fork_server_is_killed(
    supervisors: Supervisors, stores: Stores, tmp_path: Path
) -> None:
    script = write_script(tmp_path, "ends.sh", 'touch "$1"; sleep 1; exit 4\n')
    markers = [tmp_path / f"started-{number}" for number in range(3)]
    jobs = [await submit(stores, script, str(marker), name=f"job-{n}") for n, marker in enumerate(markers)]
    supervisor = supervisors.create(supervisor_config(NODE_ID, tmp_path / "output"))
    await supervisor.run_once()
    await wait_until(lambda: all(marker.exists() for marker in markers), "every program started")
    [server] = fork_servers()

    os.kill(server, signal.SIGKILL)

    for job in jobs:
        finished = await wait_for_final(stores, job.id)
        assert (finished.status, finished.exit_code, finished.attempts_count) == (JobStatus.CRASHED, 4, 1)
        [attempt] = await stores.jobs.list_attempts(job.id)
        assert attempt.outcome is AttemptOutcome.FAILED


async def test_a_start_the_dead_server_never_answered_is_withdrawn_and_run_again(
    supervisors: Supervisors, stores: Stores, tmp_path: Path
) -> None:
    supervisor = supervisors.create(supervisor_config(NODE_ID, tmp_path / "output"))
    warm_up = await submit(stores, Path("/bin/true"), name="warm-up")
    await supervisor.run_once()
    assert (await wait_for_final(stores, warm_up.id)).status is JobStatus.COMPLETED
    [server] = fork_servers()
    runs = tmp_path / "runs"
    job = await submit(stores, write_script(tmp_path, "counts.sh", f'echo "$JOB_ATTEMPT" >> {runs}\n'), name="job")

    os.kill(server, signal.SIGSTOP)  # the request waits, unread, in its socket
    claim_round = asyncio.create_task(supervisor.run_once())
    await asyncio.sleep(0.3)
    assert not claim_round.done()
    os.kill(server, signal.SIGKILL)
    assert await asyncio.wait_for(claim_round, WAIT_SECONDS) == 1
    assert await supervisor.wait_until_idle(WAIT_SECONDS)

    withdrawn = await stores.jobs.find_job(job.id)
    assert withdrawn is not None
    assert (withdrawn.status, withdrawn.attempts_count) == (JobStatus.QUEUED, 0), "taken back, not counted"
    assert await stores.jobs.list_attempts(job.id) == []
    assert not runs.exists()

    await supervisor.run_once()  # a new server
    finished = await wait_for_final(stores, job.id)
    assert (finished.status, finished.attempts_count) == (JobStatus.COMPLETED, 1)
    assert runs.read_text() == "1\n"
    assert fork_servers() != [server]
