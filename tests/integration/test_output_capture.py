"""Output through the exit keeper (compiled and Python twin): bounded files, a truncation marker, the true tail,
byte counts, and a program that neither blocks nor dies because of the limit."""

from __future__ import annotations

import asyncio
import os
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.runner.exit_status import ProcessExit
from service.runner.keeper import KeeperKind, keeper_command
from service.runner.launcher import ProcessLauncher, ProcessSpec, RunningProcess
from service.runner.output import read_tail, tail_text
from tests.support.processes import wait_until

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="the exit keeper is POSIX only")

WAIT_SECONDS = 20.0
LIMIT = 64 * 1024
TAIL = 4 * 1024
# Markers are a line each; this bounds both with room to spare.
MARKERS_BYTES = 512


@pytest.fixture(params=[KeeperKind.NATIVE, KeeperKind.PYTHON])
def launcher(request: pytest.FixtureRequest, keeper_build_dir: Path) -> ProcessLauncher:
    kind: KeeperKind = request.param
    return ProcessLauncher(keeper_command(kind, keeper_build_dir))


@pytest.fixture
def started(launcher: ProcessLauncher) -> Iterator[list[RunningProcess]]:
    processes: list[RunningProcess] = []
    yield processes
    for process in processes:
        if process.returncode is None:
            process.kill_group()


def python_program(folder: Path, name: str, body: str) -> list[str]:
    path = folder / name
    path.write_text(textwrap.dedent(body), encoding="utf-8")
    return [sys.executable, str(path)]


def spec(folder: Path, argv: list[str], limit: int | None = LIMIT, tail: int = TAIL) -> ProcessSpec:
    output = folder / "output"
    return ProcessSpec(
        argv=argv,
        environment=dict(os.environ),
        stdout_path=output / "stdout",
        stderr_path=output / "stderr",
        status_path=output / "exit-status.json",
        output_limit_bytes=limit,
        output_tail_bytes=tail,
    )


async def run(launcher: ProcessLauncher, started: list[RunningProcess], process_spec: ProcessSpec) -> ProcessExit:
    process = launcher.start(process_spec)
    started.append(process)
    process.release()
    return await asyncio.wait_for(process.wait(), WAIT_SECONDS)


# Numbered lines, so any gap or repeat in what is kept would show; 16 lines per KiB.
LINES_PROGRAM = """
    import sys
    count = int(sys.argv[1])
    for number in range(count):
        sys.stdout.write(f"line {number:09d} {'.' * 48}\\n")
    sys.stdout.write("the very last line\\n")
    sys.stderr.write("a few words on stderr\\n")
"""
LINE_BYTES = 64


async def test_output_over_the_limit_is_cut_with_a_marker_and_ends_with_its_true_tail(
    launcher: ProcessLauncher, started: list[RunningProcess], tmp_path: Path
) -> None:
    lines = 50_000  # 3.2 MB: fifty times the limit
    process_spec = spec(tmp_path, [*python_program(tmp_path, "lines.py", LINES_PROGRAM), str(lines)])

    process_exit = await run(launcher, started, process_spec)

    assert (process_exit.exit_code, process_exit.signal) == (0, None)
    written = lines * LINE_BYTES + len("the very last line\n")
    assert process_exit.stdout_bytes == written
    assert process_exit.stderr_bytes == len("a few words on stderr\n")
    kept = process_spec.stdout_path.read_bytes()
    assert LIMIT + TAIL <= len(kept) <= LIMIT + TAIL + MARKERS_BYTES
    # The head, byte for byte, up to the limit.
    expected_head = b"".join(f"line {n:09d} {'.' * 48}\n".encode() for n in range(LIMIT // LINE_BYTES))
    assert kept[:LIMIT] == expected_head
    assert f"[jobmanager: output truncated at {LIMIT} bytes".encode() in kept
    assert f"bytes discarded; the last {TAIL} bytes follow]".encode() in kept
    # The end of the file is the end of what the program wrote.
    expected_end = (
        b"".join(f"line {n:09d} {'.' * 48}\n".encode() for n in range(lines - 70, lines)) + b"the very last line\n"
    )
    assert kept.endswith(expected_end[-TAIL:])
    assert read_tail(process_spec.stdout_path, 19) == b"the very last line\n"
    assert process_spec.stderr_path.read_bytes() == b"a few words on stderr\n"


async def test_output_within_the_limit_is_kept_whole_without_a_marker(
    launcher: ProcessLauncher, started: list[RunningProcess], tmp_path: Path
) -> None:
    lines = LIMIT // LINE_BYTES - 1
    process_spec = spec(tmp_path, [*python_program(tmp_path, "lines.py", LINES_PROGRAM), str(lines)])

    process_exit = await run(launcher, started, process_spec)

    kept = process_spec.stdout_path.read_bytes()
    assert process_exit.exit_code == 0
    assert len(kept) == process_exit.stdout_bytes == lines * LINE_BYTES + len("the very last line\n")
    assert b"[jobmanager:" not in kept


async def test_a_fast_writer_is_never_blocked_by_the_limit(
    launcher: ProcessLauncher, started: list[RunningProcess], tmp_path: Path
) -> None:
    # 64 MB as fast as the program can write it, against a 64 KiB limit: the keeper must drain and discard.
    program = python_program(
        tmp_path,
        "floods.py",
        """
        import os
        block = b"x" * 65536
        for _ in range(1024):
            os.write(1, block)
        """,
    )
    process_spec = spec(tmp_path, program)
    begun = time.monotonic()

    process_exit = await run(launcher, started, process_spec)

    assert (process_exit.exit_code, process_exit.signal) == (0, None)
    assert process_exit.stdout_bytes == 64 * 1024 * 1024
    assert process_spec.stdout_path.stat().st_size <= LIMIT + TAIL + MARKERS_BYTES
    assert time.monotonic() - begun < WAIT_SECONDS


async def test_without_a_limit_everything_is_kept(
    launcher: ProcessLauncher, started: list[RunningProcess], tmp_path: Path
) -> None:
    lines = 3 * LIMIT // LINE_BYTES
    process_spec = spec(tmp_path, [*python_program(tmp_path, "lines.py", LINES_PROGRAM), str(lines)], limit=None)

    process_exit = await run(launcher, started, process_spec)

    assert process_spec.stdout_path.stat().st_size == process_exit.stdout_bytes


async def test_output_of_a_process_left_behind_is_still_captured(
    launcher: ProcessLauncher, started: list[RunningProcess], tmp_path: Path
) -> None:
    later = tmp_path / "later"
    program = python_program(
        tmp_path,
        "leaves.py",
        f"""
        import os, sys, time
        print("from the program", flush=True)
        if os.fork() == 0:  # a child that outlives the program and writes to the same stdout
            give_up = time.monotonic() + {WAIT_SECONDS}
            while not os.path.exists({str(later)!r}) and time.monotonic() < give_up:
                time.sleep(0.02)
            print("from the child left behind", flush=True)
            os._exit(0)
        """,
    )
    process_spec = spec(tmp_path, program)

    process_exit = await run(launcher, started, process_spec)

    assert process_exit.exit_code == 0  # the keeper reported the program's end without waiting for the child
    assert process_spec.stdout_path.read_text(encoding="utf-8") == "from the program\n"
    later.touch()
    await wait_until(
        lambda: "left behind" in process_spec.stdout_path.read_text(encoding="utf-8"),
        "the child's late output never reached the file",
        WAIT_SECONDS,
    )
    assert process_spec.stdout_path.read_text(encoding="utf-8") == "from the program\nfrom the child left behind\n"


def test_a_tail_for_the_database_is_text_without_nul(tmp_path: Path) -> None:
    path = tmp_path / "stdout"
    path.write_bytes(b"binary \x00 and \xff then \xc3\xa9t\xc3\xa9\n")

    assert tail_text(path, 1000) == "binary \ufffd and \ufffd then été\n"
    # A character cut by the tail's start shows as one replacement character.
    assert tail_text(path, 5) == "\ufffdt\xe9\n"
    assert tail_text(tmp_path / "missing", 10) is None
