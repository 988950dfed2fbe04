"""The process runner with real OS processes: exits, signals, spawn errors, sessions, environment, reaping."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from pathlib import Path

import psutil
import pytest

from service.runner.environment import child_environment
from service.runner.exit_status import ProcessExit
from service.runner.identity import HAS_PIDFD, process_start_time
from service.runner.keeper import KeeperKind, keeper_command
from service.runner.launcher import ProcessLauncher, ProcessSpec, RunningProcess, SpawnError
from service.settings import DEFAULT_CHILD_ENVIRONMENT
from tests.support.processes import WAIT_SECONDS, wait_until, write_script

pytestmark = pytest.mark.skipif(
    sys.platform == "win32", reason="uses /bin/sh scripts, POSIX signals and process groups"
)


def is_gone(pid: int, create_time: float) -> bool:
    """True once the process has ended: no such pid, a different process under that pid, or a zombie."""
    try:
        process = psutil.Process(pid)
        # A dead orphan stays a zombie until init reaps it, which some container inits do late.
        return bool(process.create_time() != create_time or process.status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


def read_pid_file(path: Path) -> int | None:
    try:
        return int(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return None


class ProcessTracker:
    """Starts processes for a test and makes sure none outlives it."""

    def __init__(self, folder: Path, launcher: ProcessLauncher) -> None:
        self._folder = folder
        self._launcher = launcher
        self._started: list[RunningProcess] = []
        self._adopted: list[tuple[int, float]] = []
        self._count = 0

    def spec(self, argv: list[str], environment: Mapping[str, str] | None = None) -> ProcessSpec:
        self._count += 1
        return ProcessSpec(
            argv=argv,
            environment=dict(os.environ) if environment is None else environment,
            stdout_path=self._folder / "output" / f"{self._count}.stdout",
            stderr_path=self._folder / "output" / f"{self._count}.stderr",
            status_path=self._folder / "output" / f"{self._count}.exit-status.json",
        )

    def start(self, spec: ProcessSpec) -> RunningProcess:
        process = self._launcher.start(spec)
        self._started.append(process)
        process.release()
        return process

    def adopt(self, pid: int) -> float:
        """Also end `pid` (a grandchild) at teardown, if it is still that process; returns its create time."""
        create_time = float(psutil.Process(pid).create_time())
        self._adopted.append((pid, create_time))
        return create_time

    def cleanup(self) -> None:
        for process in self._started:
            # Only a leader not yet reaped guarantees that its pid still names our group.
            if process.returncode is None:
                process.kill_group()
                os.waitpid(process.pid, 0)
        for pid, create_time in self._adopted:
            if not is_gone(pid, create_time):
                psutil.Process(pid).kill()


@pytest.fixture(params=[KeeperKind.NATIVE, KeeperKind.PYTHON, KeeperKind.NONE])
def launcher(request: pytest.FixtureRequest, keeper_build_dir: Path) -> ProcessLauncher:
    """Every runner test runs under the compiled exit keeper, its Python twin, and no keeper at all."""
    kind: KeeperKind = request.param
    return ProcessLauncher(keeper_command(kind, keeper_build_dir))


@pytest.fixture
def processes(tmp_path: Path, launcher: ProcessLauncher) -> Iterator[ProcessTracker]:
    tracker = ProcessTracker(tmp_path, launcher)
    yield tracker
    tracker.cleanup()


RUNS_FOR_MS = 300


async def wait_for_exit(process: RunningProcess) -> ProcessExit:
    return await asyncio.wait_for(process.wait(), WAIT_SECONDS)


@pytest.mark.parametrize("code", [0, 7])
async def test_exit_code_is_reported(processes: ProcessTracker, tmp_path: Path, code: int) -> None:
    script = write_script(tmp_path, "exits.sh", f"sleep {RUNS_FOR_MS / 1000}\nexit {code}\n")

    process_exit = await wait_for_exit(processes.start(processes.spec([str(script)])))

    assert process_exit.exit_code == code
    assert process_exit.signal is None
    # The program's own run, measured by whoever watched it: at least its sleep, and not the whole wait.
    assert RUNS_FOR_MS <= process_exit.duration_ms < WAIT_SECONDS * 1000


@pytest.mark.parametrize("signal_name", ["SIGKILL", "SIGTERM"])
async def test_death_by_signal_is_reported_as_the_signal(
    processes: ProcessTracker, tmp_path: Path, signal_name: str
) -> None:
    script = write_script(tmp_path, "dies.sh", f"kill -{signal_name.removeprefix('SIG')} $$\nsleep 30\n")

    process_exit = await wait_for_exit(processes.start(processes.spec([str(script)])))

    assert process_exit.signal == signal.Signals[signal_name].value
    assert process_exit.exit_code is None


def test_missing_program_is_a_spawn_error(processes: ProcessTracker, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-program"

    with pytest.raises(SpawnError, match="not found") as raised:
        processes.start(processes.spec([str(missing)]))

    assert str(missing) in str(raised.value)


def test_program_without_exec_bit_is_a_spawn_error(processes: ProcessTracker, tmp_path: Path) -> None:
    script = write_script(tmp_path, "not-executable.sh", "exit 0\n", executable=False)

    with pytest.raises(SpawnError, match="permission denied"):
        processes.start(processes.spec([str(script)]))


async def test_stdout_and_stderr_land_in_their_files(processes: ProcessTracker, tmp_path: Path) -> None:
    script = write_script(tmp_path, "talks.sh", 'echo "to stdout $1"\necho "to stderr $2" >&2\n')
    spec = processes.spec([str(script), "one", "two words"])

    process_exit = await wait_for_exit(processes.start(spec))

    assert process_exit.exit_code == 0
    assert spec.stdout_path.read_text(encoding="utf-8") == "to stdout one\n"
    assert spec.stderr_path.read_text(encoding="utf-8") == "to stderr two words\n"


async def test_child_leads_its_own_session_and_process_group(processes: ProcessTracker, tmp_path: Path) -> None:
    script = write_script(tmp_path, "sleeps.sh", "exec sleep 30\n")
    process = processes.start(processes.spec([str(script)]))

    assert os.getpgid(process.pid) == process.pid
    assert os.getsid(process.pid) == process.pid
    assert os.getsid(process.pid) != os.getsid(0)

    process.terminate_group()
    process_exit = await wait_for_exit(process)
    assert process_exit.signal == signal.SIGTERM


@pytest.mark.parametrize(
    ("end_group", "expected_signal"),
    [(RunningProcess.terminate_group, signal.SIGTERM), (RunningProcess.kill_group, signal.SIGKILL)],
)
async def test_ending_the_group_reaches_a_grandchild(
    processes: ProcessTracker,
    tmp_path: Path,
    end_group: Callable[[RunningProcess], None],
    expected_signal: signal.Signals,
) -> None:
    pid_file = tmp_path / "grandchild.pid"
    script = write_script(
        tmp_path,
        "spawns.sh",
        """
        sleep 30 &
        echo $! > "$1.tmp" && mv "$1.tmp" "$1"
        wait
        """,
    )
    process = processes.start(processes.spec([str(script), str(pid_file)]))
    await wait_until(lambda: read_pid_file(pid_file) is not None, "the script never wrote its background child's pid")
    grandchild = read_pid_file(pid_file)
    assert grandchild is not None
    grandchild_created = processes.adopt(grandchild)
    assert os.getpgid(grandchild) == process.pid

    end_group(process)

    process_exit = await wait_for_exit(process)
    assert process_exit.signal == expected_signal
    await wait_until(lambda: is_gone(grandchild, grandchild_created), f"grandchild {grandchild} still runs")


async def test_child_environment_holds_only_allowlisted_names_and_job_variables(
    processes: ProcessTracker,
) -> None:
    env_program = shutil.which("env")
    assert env_program is not None
    parent = {
        **os.environ,
        "DATABASE_URL": "postgresql://service:hunter2@db/jobs",
        "SOME_TOKEN": "s3cr3t",
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
    }
    job_variables = {"JOB_ID": "job-1", "JOB_NAME": "task-1", "JOB_ATTEMPT": "1"}
    environment = child_environment(parent, DEFAULT_CHILD_ENVIRONMENT, job_variables)
    # `env` run directly (no shell, which would add variables of its own) prints exactly what it received.
    spec = processes.spec([env_program], environment)

    process_exit = await wait_for_exit(processes.start(spec))

    assert process_exit.exit_code == 0
    received = dict(line.split("=", 1) for line in spec.stdout_path.read_text(encoding="utf-8").splitlines())
    assert "DATABASE_URL" not in received
    assert "SOME_TOKEN" not in received
    expected_names = {name for name in DEFAULT_CHILD_ENVIRONMENT if name in parent} | set(job_variables)
    assert set(received) == expected_names
    assert received["PATH"] == parent["PATH"]
    assert {name: received[name] for name in job_variables} == job_variables


async def test_process_start_time_identifies_a_live_process(processes: ProcessTracker, tmp_path: Path) -> None:
    script = write_script(tmp_path, "sleeps.sh", "exec sleep 30\n")
    process = processes.start(processes.spec([str(script)]))

    first = process_start_time(process.pid)
    second = process_start_time(process.pid)

    assert isinstance(first, datetime)
    assert first == second == process.started_at
    assert first.tzinfo is not None

    process.kill_group()
    await wait_for_exit(process)
    assert process_start_time(process.pid) is None


async def test_wait_reaps_the_child(processes: ProcessTracker, tmp_path: Path) -> None:
    script = write_script(tmp_path, "exits.sh", "exit 3\n")
    process = processes.start(processes.spec([str(script)]))

    process_exit = await wait_for_exit(process)

    assert process_exit.exit_code == 3
    assert process.returncode == 3
    with pytest.raises(ChildProcessError):
        # Reaped: the pid is no longer our child at all, not even a zombie.
        os.waitpid(process.pid, os.WNOHANG)  # noqa: ASYNC222  (WNOHANG never blocks)


@pytest.mark.skipif(not HAS_PIDFD, reason="thread-free waiting needs os.pidfd_open (Linux)")
async def test_waiting_on_many_children_starts_no_thread_per_child(processes: ProcessTracker, tmp_path: Path) -> None:
    script = write_script(tmp_path, "sleeps.sh", "exec sleep 30\n")
    threads_before = threading.active_count()
    started = [processes.start(processes.spec([str(script)])) for _ in range(50)]
    waits = [asyncio.create_task(process.wait()) for process in started]
    await asyncio.sleep(0)  # every wait task runs up to the point where it is parked on the loop

    threads_while_waiting = threading.active_count()
    for process in started:
        process.terminate_group()
    exits = await asyncio.wait_for(asyncio.gather(*waits), WAIT_SECONDS)

    assert threads_while_waiting <= threads_before + 1
    assert [process_exit.signal for process_exit in exits] == [signal.SIGTERM] * len(started)
