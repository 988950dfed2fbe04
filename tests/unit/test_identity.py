"""Start times read straight from /proc agree with psutil's, which earlier releases recorded for adoption."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import psutil
import pytest

from service.runner.identity import is_same_process, process_start_time, start_ticks_from_stat, start_time_from_ticks

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="/proc is Linux's")


def test_start_time_matches_psutil_for_a_live_child() -> None:
    child = subprocess.Popen(["sleep", "5"])
    try:
        recorded_by_psutil = datetime.fromtimestamp(psutil.Process(child.pid).create_time(), tz=UTC)
        assert process_start_time(child.pid) == recorded_by_psutil
        assert is_same_process(child.pid, recorded_by_psutil)
    finally:
        child.kill()
        child.wait()
    assert process_start_time(child.pid) is None
    assert not is_same_process(child.pid, recorded_by_psutil)


def test_ticks_are_field_22_even_when_the_name_holds_parentheses_and_spaces() -> None:
    own = Path("/proc/self/stat").read_bytes()
    fields = own[own.rfind(b")") + 2 :].split()
    forged = b"4242 (a) b (c) d) " + b" ".join(fields) + b"\n"

    assert start_ticks_from_stat(forged) == int(fields[19])
    assert start_time_from_ticks(start_ticks_from_stat(forged)) == process_start_time(int(own.split()[0]))
