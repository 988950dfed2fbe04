"""Start-up hardening: non-dumpable against a same-user reader, a private DATA_DIR, the refusal to serve the network
unauthenticated, and settings errors that never show a secret."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from service.hardening import (
    PR_SET_DUMPABLE,
    is_loopback_host,
    make_non_dumpable,
    secure_data_dir,
    unauthenticated_network_refusal,
)
from service.settings import Settings, describe_settings_error

NOBODY_UID = NOBODY_GID = 65534
SECRET = "environment-secret-0123456789"


def _environ_readable_by_same_user(*, non_dumpable: bool) -> bool:
    """A forked process, and `cat` of its /proc environ (what it was started with) by a process of the same user.

    As root both run as nobody: root may read any process's /proc files, whatever their dumpable flag.
    """
    is_root = os.geteuid() == 0
    ready_read, ready_write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover  (the forked stand-in for the service)
        try:
            if is_root:
                os.setgroups([])
                os.setgid(NOBODY_GID)
                os.setuid(NOBODY_UID)
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_DUMPABLE, 1, 0, 0, 0)  # as any freshly started program is (setuid cleared it)
            if non_dumpable:
                make_non_dumpable()
            os.write(ready_write, b"r")
            signal.pause()
        finally:
            os._exit(0)
    os.close(ready_write)
    try:
        assert os.read(ready_read, 1) == b"r"
        switch = {"user": NOBODY_UID, "group": NOBODY_GID, "extra_groups": []} if is_root else {}
        reader = subprocess.run(["cat", f"/proc/{child}/environ"], capture_output=True, check=False, **switch)  # type: ignore[call-overload]
        readable: bool = reader.returncode == 0
        if readable:
            assert b"PATH=" in reader.stdout  # the control: the environment the process was started with
        return readable
    finally:
        os.close(ready_read)
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)


@pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_DUMPABLE is Linux's")
def test_a_non_dumpable_process_hides_its_environment_from_its_own_user() -> None:
    assert _environ_readable_by_same_user(non_dumpable=False)
    assert not _environ_readable_by_same_user(non_dumpable=True)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX modes")
@pytest.mark.parametrize(("embedded_server_user", "mode"), [(False, 0o700), (True, 0o710)])
def test_data_dir_and_what_the_service_keeps_in_it_are_private(
    tmp_path: Path, embedded_server_user: bool, mode: int
) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o755)
    (data_dir / "node-id").write_text("node\n")
    (data_dir / "node-id").chmod(0o644)
    (data_dir / "output").mkdir(mode=0o755)
    (data_dir / "output").chmod(0o755)
    secure_data_dir(data_dir, embedded_server_user=embedded_server_user)
    assert stat.S_IMODE(data_dir.stat().st_mode) == mode
    assert stat.S_IMODE((data_dir / "node-id").stat().st_mode) == 0o600
    assert stat.S_IMODE((data_dir / "output").stat().st_mode) == 0o700
    assert stat.S_IMODE((data_dir / "bin").stat().st_mode) == 0o700


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.1.2.3", True), ("::1", True), ("[::1]", True), ("localhost", True),
     ("0.0.0.0", False), ("::", False), ("192.168.1.10", False), ("example.org", False)],
)  # fmt: skip
def test_loopback_hosts(host: str, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback


def test_a_network_host_without_a_token_is_refused_naming_the_way_out() -> None:
    refusal = unauthenticated_network_refusal(Settings(_env_file=None, host="0.0.0.0"))
    assert refusal is not None
    assert "HOST=0.0.0.0" in refusal
    assert "ALLOW_UNAUTHENTICATED=true" in refusal
    assert unauthenticated_network_refusal(Settings(_env_file=None, host="0.0.0.0", api_token=SECRET)) is None
    assert unauthenticated_network_refusal(Settings(_env_file=None, host="0.0.0.0", allow_unauthenticated=True)) is None
    assert unauthenticated_network_refusal(Settings(_env_file=None)) is None


def test_a_settings_error_never_shows_a_token_or_a_password() -> None:
    with pytest.raises(ValidationError) as too_short:
        Settings(_env_file=None, api_token="hunter2-short")
    message = describe_settings_error(too_short.value)
    assert "API_TOKEN" in message
    assert "hunter2" not in message
    with pytest.raises(ValidationError) as not_postgres:
        Settings(_env_file=None, database_url="mysql://app:hunter2@db.example/app")
    message = describe_settings_error(not_postgres.value)
    assert "DATABASE_URL" in message
    assert "hunter2" not in message
    assert "mysql://app:***@db.example/app" in message
