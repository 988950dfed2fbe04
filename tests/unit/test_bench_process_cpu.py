"""The bench's CPU accounting from /proc/<pid>/stat, on real processes: names that hold spaces and parentheses,
children of any thread, and the split between a process, what it reaped and a long-lived child of its own."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench import process_cpu

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux's /proc")

BURN_SECONDS = 0.15
# Spends BURN_SECONDS of CPU, then exits.
BURN = f"import time\nend = time.process_time() + {BURN_SECONDS}\nwhile time.process_time() < end: pass\n"
# A long-lived child, as a fork server is: on each line it reads, it runs a burner, reaps it and says so.
HELPER = (
    "import subprocess, sys\n"
    "for line in sys.stdin:\n"
    f"    subprocess.run([sys.executable, '-c', {BURN!r}], check=True)\n"
    "    print('reaped', flush=True)\n"
)
# The process under measurement, as the service is (the test process has children of its own): it runs a burner
# itself, or starts, drives and stops a helper, one command a line, and answers each with "ok".
PARENT = (
    "import subprocess, sys\n"
    "helper = None\n"
    "for line in sys.stdin:\n"
    "    command = line.strip()\n"
    "    if command == 'burn':\n"
    f"        subprocess.run([sys.executable, '-c', {BURN!r}], check=True)\n"
    "    elif command == 'start helper':\n"
    f"        helper = subprocess.Popen([sys.executable, '-c', {HELPER!r}], stdin=subprocess.PIPE,\n"
    "                                  stdout=subprocess.PIPE, text=True)\n"
    "    elif command == 'helper burns':\n"
    "        helper.stdin.write('go\\n'); helper.stdin.flush(); helper.stdout.readline()\n"
    "    elif command == 'stop helper':\n"
    "        helper.stdin.close(); helper.wait()\n"
    "    print('ok', flush=True)\n"
)
TICK = 1 / process_cpu.CLOCK_TICKS_PER_SECOND


class Parent:
    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", PARENT], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def do(self, command: str) -> None:
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        assert self.process.stdout.readline() == "ok\n"

    def close(self) -> None:
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self.process.stdin.close()
        self.process.wait(10)
        self.process.stdout.close()


@pytest.fixture
def parent() -> Iterator[Parent]:
    started = Parent()
    try:
        yield started
    finally:
        started.close()


def test_a_name_with_spaces_and_parentheses_is_read_whole(tmp_path: Path) -> None:
    odd = tmp_path / "sl ee) (p"
    odd.symlink_to("/bin/sleep")
    with subprocess.Popen([str(odd), "5"]) as sleeper:
        try:
            times = process_cpu.read_times(sleeper.pid)
        finally:
            sleeper.kill()
    assert times is not None
    assert times.name == "sl ee) (p"
    assert times.pid == sleeper.pid
    assert times.start_ticks > 0


def test_own_times_agree_with_the_kernels_other_account() -> None:
    times = process_cpu.read_times(os.getpid())
    kernel = os.times()
    assert times is not None
    assert times.user == pytest.approx(kernel.user, abs=2 * TICK)
    assert times.system == pytest.approx(kernel.system, abs=2 * TICK)


def test_a_process_that_is_gone_has_no_times() -> None:
    finished = subprocess.run(["/bin/true"], check=True)
    assert finished.returncode == 0
    with subprocess.Popen(["/bin/true"]) as child:
        child.wait()
        assert process_cpu.read_times(child.pid) is None


def test_children_of_every_thread_are_found() -> None:
    started: list[subprocess.Popen[bytes]] = []
    thread = threading.Thread(target=lambda: started.append(subprocess.Popen(["sleep", "5"])))
    thread.start()
    thread.join()
    try:
        assert started[0].pid in process_cpu.direct_children(os.getpid())
    finally:
        started[0].kill()
        started[0].wait()


def test_what_a_reaped_child_spent_counts_below_the_process(parent: Parent) -> None:
    before = process_cpu.settled_snapshot(parent.pid)
    parent.do("burn")
    after = process_cpu.settled_snapshot(parent.pid)
    spent = process_cpu.tree_cpu(before, after)
    assert spent.descendants >= BURN_SECONDS - 2 * TICK
    assert spent.helpers == []


def test_a_long_lived_child_is_reported_apart_with_what_it_reaped(parent: Parent) -> None:
    parent.do("start helper")
    before = process_cpu.settled_snapshot(parent.pid)
    parent.do("helper burns")
    after = process_cpu.settled_snapshot(parent.pid)
    spent = process_cpu.tree_cpu(before, after)
    parent.do("stop helper")
    assert [entry.name for entry in spent.helpers] == [Path(sys.executable).name[:15]]
    assert spent.helpers[0].reaped >= BURN_SECONDS - 2 * TICK
    assert spent.helpers[0].own < BURN_SECONDS
    # What the helper reaped is below the process; the helper's own time is not part of that figure.
    assert spent.descendants == pytest.approx(spent.helpers[0].reaped, abs=2 * TICK)


def test_a_child_reaped_between_the_snapshots_counts_only_for_the_interval(parent: Parent) -> None:
    parent.do("start helper")
    parent.do("helper burns")
    before = process_cpu.settled_snapshot(parent.pid)
    parent.do("helper burns")
    parent.do("stop helper")
    after = process_cpu.settled_snapshot(parent.pid)
    spent = process_cpu.tree_cpu(before, after)
    assert spent.helpers == []
    # One burn of the two falls in the interval (with the helper's own time in it, a small part).
    assert BURN_SECONDS - 2 * TICK <= spent.descendants < 2 * BURN_SECONDS - 2 * TICK


def test_snapshots_of_different_processes_are_refused() -> None:
    mine = process_cpu.snapshot(os.getpid())
    parent = process_cpu.snapshot(os.getppid())
    with pytest.raises(ValueError, match="different processes"):
        process_cpu.tree_cpu(mine, parent)
