"""Real processes in integration tests: job scripts on disk, polling with a deadline, ending what a test started."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import signal
import textwrap
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path

import pytest

WAIT_SECONDS = 10.0
POLL_SECONDS = 0.02


def write_script(folder: Path, name: str, body: str, *, executable: bool = True) -> Path:
    """`folder/name`: a /bin/sh script running `body` (dedented); not executable (0644) when told so."""
    path = folder / name
    path.write_text("#!/bin/sh\n" + textwrap.dedent(body).lstrip(), encoding="utf-8")
    path.chmod(0o755 if executable else 0o644)
    return path


async def wait_until(
    condition: Callable[[], bool | Awaitable[bool]], message: str, timeout: float = WAIT_SECONDS
) -> None:
    """Poll `condition` (plain or async) until it holds; fail with `message` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        outcome = condition()
        held = await outcome if inspect.isawaitable(outcome) else outcome
        if held:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"after {timeout} s: {message}")
        await asyncio.sleep(POLL_SECONDS)


async def kill_and_reap_groups(leaders: Iterable[int]) -> None:
    """SIGKILL the process group of each leader and reap the leader, a child of this test process.

    Groups already gone, and leaders already reaped, are passed over.
    """
    for pgid in leaders:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            await asyncio.to_thread(os.waitpid, pgid, 0)


async def until_reaped(pid: int) -> None:
    """Reap `pid` if it is a child of this test process; else (a keeper the fork server forked) wait until its
    parent has reaped it, as init would reap an orphan."""
    try:
        await asyncio.to_thread(os.waitpid, pid, 0)
    except ChildProcessError:
        await wait_until(lambda: not Path(f"/proc/{pid}").exists(), f"process {pid} was reaped")
