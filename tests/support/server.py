"""The real server for end-to-end tests: `python -m service` in its own session, and the `start_server` fixture.

Registered as a pytest plugin in tests/conftest.py, so any test can ask for `start_server`.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from service.settings import Settings

REPOSITORY_ROOT = Path(__file__).resolve().parents[2]
STARTUP_SECONDS = 30.0
STOP_SECONDS = 15.0
POLL_SECONDS = 0.1

T = TypeVar("T")


def wait_until(
    condition: Callable[[], T | None], *, timeout: float, message: Callable[[], str], interval: float = POLL_SECONDS
) -> T:
    """Poll `condition` until it returns something other than None; fail with `message()` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result is not None:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout:.0f} s: {message()}")
        time.sleep(interval)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def service_environment(**variables: str) -> dict[str, str]:
    """This environment without anything that configures the service (or a job), plus `variables`."""
    configuring = {name.upper() for name in Settings.model_fields}  # DATABASE_URL among them
    environment = {
        name: value
        for name, value in os.environ.items()
        if name.upper() not in configuring and not name.upper().startswith("JOB_")
    }
    # The server must run the code under test, wherever the package happens to be installed from.
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPOSITORY_ROOT), os.environ.get("PYTHONPATH")]))
    environment.update(variables)
    return environment


class ServerProcess:
    """`python -m service` in a session of its own, with its console output (its log lines too) in a file."""

    def __init__(self, environment: dict[str, str], cwd: Path, output_path: Path) -> None:
        self.base_url = f"http://127.0.0.1:{environment['PORT']}"
        self.output_path = output_path
        with output_path.open("wb") as output:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "service"],
                cwd=cwd,  # not the repository: a developer's `.env` there must not configure the server
                env=environment,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                # Its own session: a signal meant for the test run never reaches it, and it never reaches us.
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    def is_running(self) -> bool:
        return self.process.poll() is None

    def output(self) -> str:
        return self.output_path.read_text(encoding="utf-8", errors="replace")

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, timeout=5.0)

    def wait_until_healthy(self, timeout: float = STARTUP_SECONDS) -> dict[str, Any]:
        """Wait for GET /health to answer 200 and return its body; fail at once if the server exits instead."""

        def healthy() -> dict[str, Any] | None:
            if self.process.poll() is not None:
                pytest.fail(f"the server exited with {self.process.returncode} while starting:\n{self.output()}")
            try:
                response = httpx.get(f"{self.base_url}/health", timeout=2.0)
            except httpx.TransportError:
                return None
            body: dict[str, Any] = response.json()
            return body if response.status_code == 200 else None

        return wait_until(healthy, timeout=timeout, message=lambda: f"GET /health is 200\n{self.output()}")

    def stop(self, timeout: float = STOP_SECONDS) -> int:
        """SIGTERM, as a service manager would send it; returns the exit code."""
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the server did not exit within {timeout:.0f} s of SIGTERM:\n{self.output()}")

    def kill_hard(self) -> None:
        """SIGKILL the service process alone, like a crash or `kill -9`; job processes have sessions of their own."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=STOP_SECONDS)


class ServerStarter:
    """Starts servers for one test, each with its output in `folder/server-<n>.out`; remembers them all."""

    def __init__(self, folder: Path) -> None:
        self._folder = folder
        self.started: list[ServerProcess] = []

    def __call__(self, environment: dict[str, str]) -> ServerProcess:
        server = ServerProcess(environment, self._folder, self._folder / f"server-{len(self.started) + 1}.out")
        self.started.append(server)
        return server

    def kill_all(self) -> None:
        for server in self.started:
            server.kill_hard()


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[ServerStarter]:
    """Starts `python -m service` (call it with the environment); whatever is still running at teardown is killed."""
    starter = ServerStarter(tmp_path)
    yield starter
    starter.kill_all()
