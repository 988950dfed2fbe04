"""The exit keeper's self-fencing with real processes, compiled and Python keepers alike: once the deadline in the
node's lease file has passed, the program's whole process group ends (the keeper with it, writing no status); while
the service keeps extending the file, the program runs on."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import psutil
import pytest

from service.runner.keeper import KeeperKind, keeper_command
from service.runner.launcher import ProcessLauncher, ProcessSpec, RunningProcess
from service.runner.lease_file import LeaseFile
from tests.support.processes import kill_and_reap_groups, wait_until, write_script

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="no exit keeper on Windows")

LEASE_SECONDS = 1.0
# The keeper looks at the file every 0.25 s; a loaded machine may add to that.
FENCE_SECONDS = 5.0


@pytest.fixture(params=["native", "python", "fork-server"])
async def launcher(request: pytest.FixtureRequest, keeper_build_dir: Path) -> AsyncIterator[ProcessLauncher]:
    kind = KeeperKind.PYTHON if request.param == "python" else KeeperKind.NATIVE
    if kind is KeeperKind.NATIVE and keeper_command(KeeperKind.AUTO, keeper_build_dir) == keeper_command(
        KeeperKind.PYTHON, keeper_build_dir
    ):
        pytest.skip("no C compiler")
    launcher = ProcessLauncher(keeper_command(kind, keeper_build_dir), fork_server=request.param == "fork-server")
    yield launcher
    await launcher.close()


async def _start(launcher: ProcessLauncher, tmp_path: Path, lease: LeaseFile) -> tuple[RunningProcess, Path]:
    # The program starts a child of its own: the whole group must end, not the program alone.
    script = write_script(tmp_path, "sleeper.sh", 'sleep 60 &\necho "$!" > "$1"\nsleep 60\n')
    child_pid_file = tmp_path / "child.pid"
    [process] = await launcher.start_many(
        [
            ProcessSpec(
                argv=[str(script), str(child_pid_file)],
                environment=dict(os.environ),
                stdout_path=tmp_path / "stdout",
                stderr_path=tmp_path / "stderr",
                status_path=tmp_path / "exit-status.json",
                lease_path=lease.path,
            )
        ]
    )
    assert isinstance(process, RunningProcess), process
    process.release()
    return process, child_pid_file


def _group_alive(pgid: int) -> bool:
    """Whether any live (not zombie) process is in the group."""
    return any(
        _same_group(process.info["pid"], pgid) and process.info["status"] != psutil.STATUS_ZOMBIE
        for process in psutil.process_iter(["pid", "status"])
    )


def _same_group(pid: int, pgid: int) -> bool:
    try:
        return os.getpgid(pid) == pgid
    except ProcessLookupError:
        return False


async def test_the_program_group_ends_once_the_lease_file_deadline_passes(
    launcher: ProcessLauncher, tmp_path: Path
) -> None:
    lease = LeaseFile(tmp_path / "lease")
    lease.extend_for(LEASE_SECONDS)
    process, child_pid_file = await _start(launcher, tmp_path, lease)
    try:
        await wait_until(child_pid_file.exists, "the program started its child")
        started = time.monotonic()
        exit_seen = await process.wait()  # the keeper dies of SIGKILL with the group: nothing recorded
        assert exit_seen.signal == 9
        assert time.monotonic() - started < FENCE_SECONDS
        await wait_until(lambda: not _group_alive(process.pid), "nothing of the group is left", timeout=FENCE_SECONDS)
        assert not (tmp_path / "exit-status.json").exists()
        assert "this node's lease lapsed; the exit keeper ended the program" in (tmp_path / "stderr").read_text()
    finally:
        await kill_and_reap_groups([process.pid])


async def test_the_program_runs_on_while_the_lease_file_is_extended(launcher: ProcessLauncher, tmp_path: Path) -> None:
    lease = LeaseFile(tmp_path / "lease")
    lease.extend_for(LEASE_SECONDS)
    process, child_pid_file = await _start(launcher, tmp_path, lease)
    try:
        await wait_until(child_pid_file.exists, "the program started its child")
        deadline = time.monotonic() + 3 * LEASE_SECONDS
        while time.monotonic() < deadline:
            lease.extend_for(LEASE_SECONDS)
            assert _group_alive(process.pid), "the program ran on while its lease was renewed"
            time.sleep(LEASE_SECONDS / 4)  # noqa: ASYNC251  (the renewals are what is tested, not the loop)
        assert not (tmp_path / "exit-status.json").exists()
    finally:
        await kill_and_reap_groups([process.pid])
