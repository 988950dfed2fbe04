"""The fork server: keepers forked many at a time, their exits reported back, and nothing lost when it or the
service is killed."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path

import pytest

from service.runner.exit_status import read_exit_status
from service.runner.fork_server import ForkServer, Served, SpawnRequest
from service.runner.identity import process_start_time, start_ticks_from_stat
from service.runner.keeper import KeeperKind, keeper_command
from service.runner.launcher import ProcessLauncher, ProcessSpec, RunningProcess, SpawnError, StartNotMadeError
from tests.support.processes import WAIT_SECONDS, wait_until, write_script

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the fork server's tests read /proc")


@pytest.fixture
async def served(keeper_build_dir: Path) -> AsyncIterator[ProcessLauncher]:
    command = keeper_command(KeeperKind.NATIVE, keeper_build_dir)
    launcher = ProcessLauncher(command, fork_server=True)
    assert launcher.uses_fork_server
    yield launcher
    await launcher.close()


def spec(folder: Path, name: str, argv: list[str]) -> ProcessSpec:
    return ProcessSpec(
        argv=argv,
        environment={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "JOB_NAME": name},
        stdout_path=folder / name / "stdout",
        stderr_path=folder / name / "stderr",
        status_path=folder / name / "exit-status.json",
    )


async def start_all(launcher: ProcessLauncher, specs: list[ProcessSpec]) -> list[RunningProcess]:
    started = await launcher.start_many(specs)
    processes = [process for process in started if isinstance(process, RunningProcess)]
    assert len(processes) == len(specs), started
    return processes


def start_ticks_of(pid: int) -> int:
    return start_ticks_from_stat(Path(f"/proc/{pid}/stat").read_bytes())


def parent_of(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_bytes()
    return int(stat[stat.rfind(b")") + 2 :].split()[1])


async def test_exit_codes_signals_and_output_come_back(served: ProcessLauncher, tmp_path: Path) -> None:
    exits_3 = write_script(tmp_path, "exits.sh", 'echo "out $JOB_NAME"; echo err >&2; exit 3\n')
    killed = write_script(tmp_path, "killed.sh", "kill -TERM $$\n")
    processes = await start_all(
        served,
        [spec(tmp_path, "a", [str(exits_3)]), spec(tmp_path, "b", [str(killed)]), spec(tmp_path, "c", ["/bin/true"])],
    )
    for process in processes:
        process.release()

    first, second, third = [await asyncio.wait_for(process.wait(), WAIT_SECONDS) for process in processes]

    assert (first.exit_code, first.signal, first.stdout_bytes, first.stderr_bytes) == (3, None, 6, 4)
    assert (tmp_path / "a" / "stdout").read_text() == "out a\n"
    assert (tmp_path / "a" / "stderr").read_text() == "err\n"
    assert (second.exit_code, second.signal) == (None, signal.SIGTERM)
    assert (third.exit_code, third.signal) == (0, None)
    assert [process.returncode for process in processes] == [3, 128 + signal.SIGTERM, 0]


async def test_a_keeper_leads_its_session_and_its_start_time_is_its_identity(
    served: ProcessLauncher, tmp_path: Path
) -> None:
    [process] = await start_all(served, [spec(tmp_path, "a", ["/bin/sleep", "30"])])
    try:
        assert os.getsid(process.pid) == process.pid
        assert os.getpgid(process.pid) == process.pid
        assert process.started_at == process_start_time(process.pid)
        assert isinstance(process.started_at, datetime)
        adopted = RunningProcess.adopt(
            pid=process.pid, started_at=process.started_at, program="/bin/sleep", status_path=Path("unused")
        )
        assert adopted is not None
    finally:
        process.abandon()
    ending = await asyncio.wait_for(process.wait(), WAIT_SECONDS)
    assert ending.abandoned
    assert process.returncode == 124


async def test_the_server_reports_each_keepers_start_time_itself(keeper_build_dir: Path, tmp_path: Path) -> None:
    command = keeper_command(KeeperKind.NATIVE, keeper_build_dir)
    assert command is not None
    server = ForkServer(command)
    try:
        [reply] = await server.spawn(
            [
                SpawnRequest(
                    status_path=tmp_path / "a" / "exit-status.json",
                    stdout_path=tmp_path / "a" / "stdout",
                    stderr_path=tmp_path / "a" / "stderr",
                    options=[],
                    argv=["/bin/true"],
                    environment={},
                )
            ]
        )
        assert isinstance(reply, Served), reply
        assert reply.start_ticks == start_ticks_of(reply.pid), (
            "the start time comes with the reply: the service need not read /proc for it"
        )
        reply.connection.abandon(reply.request_id)
        assert await asyncio.wait_for(reply.exit_status, WAIT_SECONDS) is not None
    finally:
        await server.close()


async def test_refusals_are_spawn_errors_and_the_rest_of_the_batch_starts(
    served: ProcessLauncher, tmp_path: Path
) -> None:
    not_executable = write_script(tmp_path, "plain.sh", "exit 0\n", executable=False)
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    specs = [
        spec(tmp_path, "missing", [str(tmp_path / "missing")]),
        spec(tmp_path, "plain", [str(not_executable)]),
        spec(blocked, "output", ["/bin/true"]),  # its folder would be inside a file
        spec(tmp_path, "fine", ["/bin/true"]),
    ]

    missing, plain, output, fine = await served.start_many(specs)

    assert isinstance(missing, SpawnError)
    assert "program not found" in str(missing)
    assert isinstance(plain, SpawnError)
    assert "permission denied" in str(plain)
    assert isinstance(output, SpawnError)
    assert "could not prepare the output files" in str(output)
    assert isinstance(fine, RunningProcess)
    fine.release()
    assert (await asyncio.wait_for(fine.wait(), WAIT_SECONDS)).exit_code == 0


async def test_a_batch_of_many_is_forked_by_one_server(served: ProcessLauncher, tmp_path: Path) -> None:
    count = 100
    processes = await start_all(served, [spec(tmp_path, str(n), ["/bin/sleep", "0.5"]) for n in range(count)])
    servers = {parent_of(process.pid) for process in processes}
    assert len(servers) == 1
    assert servers != {os.getpid()}
    assert len({process.pid for process in processes}) == count
    for process in processes:
        process.release()

    endings = await asyncio.wait_for(asyncio.gather(*(process.wait() for process in processes)), 3 * WAIT_SECONDS)

    assert [ending.exit_code for ending in endings] == [0] * count


async def test_a_killed_fork_server_loses_nothing(served: ProcessLauncher, tmp_path: Path) -> None:
    released = write_script(tmp_path, "ends.sh", "sleep 1; exit 7\n")
    marker = tmp_path / "ran"
    unreleased = write_script(tmp_path, "marks.sh", f"touch {marker}\n")
    running, waiting = await start_all(
        served, [spec(tmp_path, "running", [str(released)]), spec(tmp_path, "waiting", [str(unreleased)])]
    )
    running.release()
    await asyncio.sleep(0.2)  # the go-ahead has reached the keeper
    server = parent_of(running.pid)

    os.kill(server, signal.SIGKILL)

    ran, never_ran = await asyncio.wait_for(asyncio.gather(running.wait(), waiting.wait()), WAIT_SECONDS)
    assert (ran.exit_code, ran.abandoned) == (7, False), "a released keeper outlives the server"
    assert never_ran.abandoned, "a keeper without its go-ahead exits without running the program"
    assert not marker.exists()
    waiting.release()  # too late: the go-ahead went with the server; nothing is sent anywhere
    # The next start gets a new server.
    [after] = await start_all(served, [spec(tmp_path, "after", ["/bin/true"])])
    assert parent_of(after.pid) != server
    after.release()
    assert (await asyncio.wait_for(after.wait(), WAIT_SECONDS)).exit_code == 0
    assert not (Path("/proc") / str(server)).exists(), "the dead server was reaped"


async def test_a_frozen_fork_server_is_ended_and_its_unanswered_starts_are_not_made(
    keeper_build_dir: Path, tmp_path: Path
) -> None:
    launcher = ProcessLauncher(
        keeper_command(KeeperKind.NATIVE, keeper_build_dir), fork_server=True, fork_server_reply_timeout_seconds=1.0
    )
    try:
        [waiting] = await start_all(launcher, [spec(tmp_path, "waiting", ["/bin/true"])])
        server = parent_of(waiting.pid)
        os.kill(server, signal.SIGSTOP)

        [frozen] = await asyncio.wait_for(launcher.start_many([spec(tmp_path, "frozen", ["/bin/true"])]), WAIT_SECONDS)

        assert isinstance(frozen, StartNotMadeError), frozen
        await wait_until(lambda: not Path(f"/proc/{server}").exists(), "the frozen server was ended and reaped")
        assert (await asyncio.wait_for(waiting.wait(), WAIT_SECONDS)).abandoned, "its go-ahead went with the server"
        [after] = await start_all(launcher, [spec(tmp_path, "after", ["/bin/true"])])
        assert parent_of(after.pid) != server
        after.release()
        assert (await asyncio.wait_for(after.wait(), WAIT_SECONDS)).exit_code == 0
    finally:
        await launcher.close()


def test_an_abandoned_keeper_never_overwrites_a_real_status_only_an_abandoned_one(
    keeper_build_dir: Path, tmp_path: Path
) -> None:
    """A keeper left from a start the fork server never answered may exit abandoned after the start made instead
    has recorded its program's end in the same status file."""
    command = keeper_command(KeeperKind.NATIVE, keeper_build_dir)
    assert command is not None
    [keeper] = command
    status = tmp_path / "exit-status.json"
    recorded = '{"program_pid":1,"exit_code":0,"signal":null}\n'
    status.write_text(recorded)

    late = subprocess.run([keeper, str(status), "/bin/true"], stdin=subprocess.DEVNULL, check=False)

    assert late.returncode == 124, "abandoned: end-of-file before any go-ahead"
    assert status.read_text() == recorded
    status.write_text('{"abandoned":true,"keeper_pid":1,"duration_ns":0,"finished_at_ns":0}\n')
    abandoned_again = subprocess.Popen([keeper, str(status), "/bin/true"], stdin=subprocess.DEVNULL)
    assert abandoned_again.wait(WAIT_SECONDS) == 124
    assert json.loads(status.read_text())["keeper_pid"] == abandoned_again.pid, "an abandoned record is replaced"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["exit-status.json"], "no temporary file is left"


SERVICE_LIFE = """
    import asyncio, json, sys
    from pathlib import Path
    from service.runner.launcher import ProcessLauncher, ProcessSpec

    async def main():
        folder, keeper, program = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
        launcher = ProcessLauncher([keeper], fork_server=True)
        specs = [
            ProcessSpec(argv=[program, name], environment={"PATH": "/usr/bin:/bin"},
                        stdout_path=folder / name / "stdout", stderr_path=folder / name / "stderr",
                        status_path=folder / name / "exit-status.json")
            for name in ("released", "waiting")
        ]
        released, waiting = await launcher.start_many(specs)
        released.release()
        await asyncio.sleep(0.2)
        print(json.dumps([[p.pid, p.started_at.isoformat()] for p in (released, waiting)]), flush=True)
        await asyncio.sleep(60)  # killed here

    asyncio.run(main())
"""


async def test_keepers_outlive_a_killed_service_and_can_be_adopted(keeper_build_dir: Path, tmp_path: Path) -> None:
    keeper = keeper_command(KeeperKind.NATIVE, keeper_build_dir)
    assert keeper is not None
    program = write_script(tmp_path, "job.sh", 'touch "$0.$1"; sleep 1; exit 5\n')
    service = subprocess.Popen(  # noqa: ASYNC220  (returns at once; the test reads its output in a thread)
        [sys.executable, "-c", textwrap.dedent(SERVICE_LIFE), str(tmp_path), keeper[0], str(program)],
        stdout=subprocess.PIPE,
        cwd=Path(__file__).parents[2],
    )
    assert service.stdout is not None
    line = await asyncio.wait_for(asyncio.to_thread(service.stdout.readline), WAIT_SECONDS)
    (released_pid, released_start), (waiting_pid, _) = json.loads(line)

    service.kill()
    service.wait()
    service.stdout.close()

    adopted = RunningProcess.adopt(
        pid=released_pid,
        started_at=datetime.fromisoformat(released_start),
        program=str(program),
        status_path=tmp_path / "released" / "exit-status.json",
    )
    assert adopted is not None, "the released keeper runs on, and is the same process by pid and start time"
    ending = await asyncio.wait_for(adopted.wait(), WAIT_SECONDS)
    assert ending.exit_code == 5
    await wait_until((tmp_path / "waiting" / "exit-status.json").exists, "the unreleased keeper wrote its status")
    abandoned = read_exit_status(tmp_path / "waiting" / "exit-status.json", str(program), keeper_pid=waiting_pid)
    assert abandoned is not None
    assert abandoned.abandoned
    assert not (tmp_path / "job.sh.waiting").exists(), "the unreleased keeper never ran its program"
    assert (tmp_path / "job.sh.released").exists()
