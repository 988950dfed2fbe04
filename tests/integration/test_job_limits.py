"""Per-job limits on real processes under both exit keepers: a spinning program is killed at its CPU limit, one
that opens too many files gets EMFILE, one that allocates too much fails; and the API only lets a job lower them."""

from __future__ import annotations

import signal
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from litestar.testing import AsyncTestClient

from service.app import create_app
from service.domain.limits import JobLimits
from service.domain.status import AttemptOutcome, JobStatus
from service.runner.keeper import KeeperKind, keeper_command
from service.runner.launcher import ProcessLauncher
from service.settings import Settings
from service.supervisor.supervisor import Supervisor
from tests.support.api import Client
from tests.support.stores import Stores
from tests.support.supervision import Supervisors, submit, supervisor_config, wait_for_final

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="setrlimit and POSIX signals")

SPIN = "while True:\n    pass\n"
OPEN_FILES = """\
import errno, sys
held = []
try:
    while True:
        held.append(open("/dev/null"))
except OSError as error:
    print(errno.errorcode[error.errno], len(held))
    sys.exit(3)
"""
ALLOCATE = "block = bytearray(512 * 1024 * 1024)\nprint('allocated', len(block))\n"
SEGFAULT = "import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)\n"
MEBIBYTE = 1024 * 1024
CPU_LIMIT_SECONDS = 1
# A spinning program is stopped at its limit: well before this much longer.
CPU_LIMIT_WAIT_SECONDS = 30.0


@pytest.fixture(params=[KeeperKind.NATIVE, KeeperKind.PYTHON])
def keeper_launcher(request: pytest.FixtureRequest, keeper_build_dir: Path) -> ProcessLauncher:
    return ProcessLauncher(keeper_command(request.param, keeper_build_dir))


@pytest.fixture
async def supervisor(stores: Stores, keeper_launcher: ProcessLauncher, tmp_path: Path) -> AsyncIterator[Supervisor]:
    supervisors = Supervisors(stores, keeper_launcher)
    created = supervisors.create(supervisor_config("limits-node", tmp_path / "output"))
    await created.start()
    yield created
    await supervisors.cleanup()


def program(folder: Path, name: str, body: str) -> Path:
    path = folder / name
    path.write_text(body, encoding="utf-8")
    return path


async def test_a_program_that_spins_is_killed_at_its_cpu_limit(
    stores: Stores, supervisor: Supervisor, tmp_path: Path
) -> None:
    del supervisor  # it runs the job
    job = await submit(
        stores, program(tmp_path, "spin.py", SPIN), limits=JobLimits(cpu_seconds=CPU_LIMIT_SECONDS), name="spin"
    )
    final = await wait_for_final(stores, job.id, timeout=CPU_LIMIT_WAIT_SECONDS)
    [attempt] = await stores.jobs.list_attempts(job.id)
    assert final.status is JobStatus.CRASHED
    assert attempt.outcome is AttemptOutcome.KILLED
    assert attempt.signal == signal.SIGXCPU
    assert attempt.error == f"exceeded its CPU limit of {CPU_LIMIT_SECONDS} s"
    assert (attempt.user_cpu_ms or 0) + (attempt.system_cpu_ms or 0) >= CPU_LIMIT_SECONDS * 1000 // 2


async def test_a_program_that_opens_many_files_fails_with_emfile(
    stores: Stores, supervisor: Supervisor, tmp_path: Path
) -> None:
    del supervisor
    job = await submit(stores, program(tmp_path, "files.py", OPEN_FILES), limits=JobLimits(open_files=32))
    await wait_for_final(stores, job.id)
    [attempt] = await stores.jobs.list_attempts(job.id)
    assert (attempt.outcome, attempt.exit_code) == (AttemptOutcome.FAILED, 3)
    tail = await stores.jobs.attempt_output_tail(attempt.id, "stdout")
    assert tail is not None
    name, held = tail.split()
    assert name == "EMFILE"
    assert int(held) < 32  # the descriptors the interpreter holds count too


async def test_a_program_that_allocates_past_its_memory_limit_fails(
    stores: Stores, supervisor: Supervisor, tmp_path: Path
) -> None:
    del supervisor
    job = await submit(stores, program(tmp_path, "big.py", ALLOCATE), limits=JobLimits(memory_bytes=128 * MEBIBYTE))
    await wait_for_final(stores, job.id)
    [attempt] = await stores.jobs.list_attempts(job.id)
    assert (attempt.outcome, attempt.exit_code) == (AttemptOutcome.FAILED, 1)
    assert "MemoryError" in (await stores.jobs.attempt_output_tail(attempt.id, "stderr") or "")
    assert await stores.jobs.attempt_output_tail(attempt.id, "stdout") == ""


async def test_the_same_program_without_limits_is_unhindered(
    stores: Stores, supervisor: Supervisor, tmp_path: Path
) -> None:
    del supervisor
    job = await submit(stores, program(tmp_path, "big.py", ALLOCATE))
    assert (await wait_for_final(stores, job.id)).status is JobStatus.COMPLETED


async def test_a_crash_under_a_memory_limit_says_it_may_have_hit_it(
    stores: Stores, supervisor: Supervisor, tmp_path: Path
) -> None:
    del supervisor
    limits = JobLimits(memory_bytes=256 * MEBIBYTE)
    job = await submit(stores, program(tmp_path, "segv.py", SEGFAULT), limits=limits)
    await wait_for_final(stores, job.id)
    [attempt] = await stores.jobs.list_attempts(job.id)
    assert (attempt.outcome, attempt.signal) == (AttemptOutcome.KILLED, signal.SIGSEGV)
    assert (
        attempt.error
        == f"killed by signal {signal.SIGSEGV}; it may have hit its memory limit of {256 * MEBIBYTE} bytes"
    )


# --- POST /jobs: a job may lower the settings' limits, never raise them ----------------------------------------


@pytest.fixture
async def client(make_settings: Callable[..., Settings], tmp_path: Path) -> AsyncIterator[Client]:
    settings = make_settings(
        job_script_path=program(tmp_path, "quiet.py", "pass\n"),
        job_memory_limit_bytes=512 * MEBIBYTE,
        job_cpu_limit_seconds=60,
        shutdown_mode="drain",
    )
    async with AsyncTestClient(app=create_app(settings)) as test_client:
        yield test_client


async def test_a_job_gets_the_settings_limits_and_may_lower_them(client: Client) -> None:
    defaults = (await client.post("/jobs", json={"jobName": "defaults"})).json()
    assert (defaults["memoryLimitBytes"], defaults["cpuLimitSeconds"], defaults["openFilesLimit"]) == (
        512 * MEBIBYTE,
        60,
        None,
    )
    lowered = await client.post(
        "/jobs",
        json={"jobName": "lowered", "memoryLimitBytes": 64 * MEBIBYTE, "cpuLimitSeconds": 5, "openFilesLimit": 50},
    )
    assert lowered.status_code == 201, lowered.text
    stored = (await client.get(f"/jobs/{lowered.json()['jobId']}")).json()
    assert (stored["memoryLimitBytes"], stored["cpuLimitSeconds"], stored["openFilesLimit"]) == (64 * MEBIBYTE, 5, 50)


@pytest.mark.parametrize(
    ("field", "value", "detail"),
    [
        ("memoryLimitBytes", 1024 * MEBIBYTE, f"memoryLimitBytes is {1024 * MEBIBYTE}; the limit is {512 * MEBIBYTE}"),
        ("cpuLimitSeconds", 61, "cpuLimitSeconds is 61; the limit is 60"),
    ],
)
async def test_asking_for_more_than_a_setting_is_a_422_naming_the_field_and_the_limit(
    client: Client, field: str, value: int, detail: str
) -> None:
    response = await client.post("/jobs", json={"jobName": "greedy", field: value})
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["detail"].startswith(detail)
    assert (await client.get("/jobs")).json() == []
