"""Choosing the exit keeper: the compiled one where a C compiler exists, its Python twin elsewhere.

The keeper is the small parent every job's program runs under; it writes the program's exit status to a file so
the result outlives the service (see exit_keeper.c). The compiled keeper costs about a millisecond and a few hundred
kilobytes per job; the Python twin costs a Python start-up (tens of milliseconds, several megabytes).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import sys
from enum import StrEnum
from pathlib import Path

logger = logging.getLogger(__name__)

KEEPER_SOURCE = Path(__file__).with_name("exit_keeper.c")
# Included by exit_keeper.c (output copying, the switch to JOB_USER, the fork server); part of the source version
# the binary is named after.
KEEPER_HEADERS = tuple(
    Path(__file__).with_name(name) for name in ("exit_keeper_output.h", "exit_keeper_user.h", "exit_keeper_serve.h")
)
PYTHON_KEEPER = Path(__file__).with_name("exit_keeper.py")
COMPILE_TIMEOUT_SECONDS = 120
C_COMPILERS = ("cc", "gcc", "clang")


class KeeperKind(StrEnum):
    """Which keeper runs the jobs (setting EXIT_KEEPER)."""

    AUTO = "auto"
    """The compiled keeper if a C compiler is found, else the Python one."""
    NATIVE = "native"
    """The compiled keeper; start-up fails without a C compiler."""
    PYTHON = "python"
    """The Python keeper, always."""
    NONE = "none"
    """No keeper: programs are children of the service and their exit status dies with it (Windows' only mode)."""


class KeeperUnavailableError(RuntimeError):
    """The configured keeper cannot be provided on this machine."""


def keeper_command(kind: KeeperKind, build_dir: Path) -> list[str] | None:
    """The command line prefix that runs a program under the keeper, or None to run programs directly."""
    if kind is KeeperKind.NONE or sys.platform == "win32":
        return None
    if kind in (KeeperKind.AUTO, KeeperKind.NATIVE):
        compiled = _compiled_keeper(build_dir)
        if compiled is not None:
            return [str(compiled)]
        if kind is KeeperKind.NATIVE:
            raise KeeperUnavailableError("EXIT_KEEPER=native, but no C compiler (cc, gcc or clang) was found")
        logger.warning("no C compiler found; jobs run under the slower Python exit keeper")
    # -I: ignore the environment and the user's site; -S: skip site import. Both make it start faster and safer.
    return [sys.executable, "-I", "-S", str(PYTHON_KEEPER)]


def _compile(command: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=COMPILE_TIMEOUT_SECONDS, check=False)


def _compiled_keeper(build_dir: Path) -> Path | None:
    """Compile once per source version; later starts reuse the binary in `build_dir`."""
    source = b"".join(path.read_bytes() for path in (KEEPER_SOURCE, *KEEPER_HEADERS))
    target = build_dir / f"exit_keeper-{hashlib.sha256(source).hexdigest()[:16]}"
    if target.is_file() and os.access(target, os.X_OK):
        return target
    compiler = next((path for name in C_COMPILERS if (path := shutil.which(name))), None)
    if compiler is None:
        return None
    build_dir.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f"{target.name}.{os.getpid()}.tmp")
    command = [compiler, "-O2", "-Wall", "-Wextra", "-o", str(temporary), str(KEEPER_SOURCE)]
    # Linked statically where the C library allows it: no dynamic loader at each start, about 0.2 ms of CPU less
    # per job (docs/performance.md has the figure); dynamically where it does not (macOS).
    result = _compile([*command, "-static"])
    if result.returncode != 0:
        result = _compile(command)
    if result.returncode != 0:
        logger.warning("compiling the exit keeper failed (%s): %s", compiler, result.stderr.strip())
        temporary.unlink(missing_ok=True)
        return None
    os.replace(temporary, target)  # atomic: two nodes building at once both end with a whole binary
    logger.info("compiled the exit keeper: %s", target)
    return target
