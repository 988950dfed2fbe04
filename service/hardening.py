"""What the entry point does so that a job reaches none of the service's secrets, and nobody reaches an open API.

The service process is made non-dumpable (its /proc/<pid>/environ, mem and the like become root's only, and no
process of the same user may ptrace it), forgets its secrets from the environment its children inherit, keeps
DATA_DIR private, and refuses to serve the network without a token.
"""

from __future__ import annotations

import ctypes
import ipaddress
import logging
import os
import stat
import sys
from pathlib import Path

from service.settings import Settings

logger = logging.getLogger(__name__)

PR_SET_DUMPABLE = 4  # from <linux/prctl.h>
PRIVATE_DIRECTORY_MODE = 0o700
# DATA_DIR when the embedded PostgreSQL runs as its own user (the service is root): that user, in the service's
# group, must still pass through DATA_DIR to reach DATA_DIR/postgres; nobody else may.
EMBEDDED_SERVER_DIRECTORY_MODE = 0o710
EMBEDDED_SERVER_FOLDER = "postgres"
# The service's own secrets: read once into Settings, then removed from the environment every child inherits (the
# embedded PostgreSQL, the exit keeper). A job's environment is an allowlist anyway (JOB_ENV_PASSTHROUGH).
SECRET_ENVIRONMENT_NAMES = ("DATABASE_URL", "API_TOKEN", "PGPASSWORD")
UNAUTHENTICATED_SETTING = "ALLOW_UNAUTHENTICATED=true"


def make_non_dumpable() -> bool:
    """prctl(PR_SET_DUMPABLE, 0) on Linux: /proc/<pid>/environ (and mem, maps, fd/) become readable by root only.

    Returns whether it took effect; elsewhere (macOS, Windows) there is no such switch.
    """
    if sys.platform != "linux":
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        logger.warning("could not make the service non-dumpable: %s", os.strerror(ctypes.get_errno()))
        return False
    return True


def forget_secret_environment() -> None:
    """Remove the secrets from `os.environ`, so that no child process inherits them (Settings holds them)."""
    for name in SECRET_ENVIRONMENT_NAMES:
        os.environ.pop(name, None)


def is_loopback_host(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def unauthenticated_network_refusal(settings: Settings) -> str | None:
    """Why the service must not start (an API open to the network), or None."""
    authenticated = settings.api_token is not None or settings.api_tokens_file is not None
    if authenticated or settings.allow_unauthenticated or is_loopback_host(settings.host):
        return None
    return (
        f"HOST={settings.host} is not a loopback address, and no API_TOKEN or API_TOKENS_FILE is set: anyone who "
        f"can reach it could run programs. Set a token, or set {UNAUTHENTICATED_SETTING} if something in front of "
        "the service authenticates."
    )


def _restrict(path: Path, mode: int) -> None:
    if stat.S_IMODE(path.stat().st_mode) != mode:
        path.chmod(mode)


def secure_data_dir(data_dir: Path, *, embedded_server_user: bool) -> None:
    """DATA_DIR, created if need be, private to the service: 0700, or 0710 for an embedded server's own user.

    Everything the service keeps directly in it (node id, lock, output/, bin/) is made private too, so that nothing
    leaks in the moment the embedded server's start-up opens the folder for its user.
    """
    if sys.platform == "win32":
        return
    data_dir.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIRECTORY_MODE)
    _restrict(data_dir, EMBEDDED_SERVER_DIRECTORY_MODE if embedded_server_user else PRIVATE_DIRECTORY_MODE)
    for entry in data_dir.iterdir():
        if entry.name == EMBEDDED_SERVER_FOLDER or entry.is_symlink():
            continue
        _restrict(entry, PRIVATE_DIRECTORY_MODE if entry.is_dir() else entry.stat().st_mode & 0o700)
    for folder in ("output", "bin"):
        (data_dir / folder).mkdir(exist_ok=True, mode=PRIVATE_DIRECTORY_MODE)


def warn_about_root(settings: Settings, *, is_root: bool, job_user_switches: bool) -> None:
    if is_root and not job_user_switches:
        logger.warning(
            "RUNNING AS ROOT WITHOUT JOB_USER: every job runs as root and can read every secret of the service "
            "(its environment through /proc, DATA_DIR, the .env file). Set JOB_USER to an unprivileged user."
        )
    elif not is_root and settings.job_user is not None and job_user_switches:
        logger.warning(
            "JOB_USER=%s is set, but the service is not root and cannot switch users: every job will fail to start",
            settings.job_user,
        )


def warn_if_env_file_exposed(env_file: Path) -> None:
    """A `.env` the service read holds its secrets: other users (JOB_USER among them) must not be able to read it."""
    if sys.platform == "win32" or not env_file.is_file():
        return
    mode = stat.S_IMODE(env_file.stat().st_mode)
    if mode & 0o077:
        logger.warning(
            "%s is readable by other users (mode %03o) and holds the service's settings: chmod 600 %s",
            env_file,
            mode,
            env_file,
        )
