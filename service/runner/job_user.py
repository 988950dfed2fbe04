"""JOB_USER: the user, group and supplementary groups a job's program runs as, resolved once at start-up."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

# The exit keeper's table of supplementary groups holds this many (exit_keeper_user.h, MAX_RUN_AS_GROUPS).
MAX_JOB_USER_GROUPS = 1024


class JobUserError(ValueError):
    """JOB_USER names no user of this machine, or cannot be used here."""


@dataclass(frozen=True, slots=True)
class JobUser:
    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]

    @property
    def keeper_option(self) -> str:
        """The exit keeper's `--run-as=UID:GID:G1,G2,...` (numbers: the static keeper cannot look names up)."""
        return f"--run-as={self.uid}:{self.gid}:{','.join(str(group) for group in self.groups)}"


def resolve_job_user(name: str | None) -> JobUser | None:
    """The user jobs are switched to; None when there is nothing to switch (unset, or the service's own user)."""
    if name is None:
        return None
    if sys.platform == "win32":
        raise JobUserError("JOB_USER is not supported on Windows")
    import pwd  # noqa: PLC0415  (POSIX only)

    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise JobUserError(f"JOB_USER {name!r}: there is no such user on this machine") from None
    if entry.pw_uid == os.geteuid() and entry.pw_gid == os.getegid():
        return None
    groups = tuple(os.getgrouplist(name, entry.pw_gid))
    if len(groups) > MAX_JOB_USER_GROUPS:
        raise JobUserError(f"JOB_USER {name!r} is in {len(groups)} groups; the limit is {MAX_JOB_USER_GROUPS}")
    return JobUser(name=name, uid=entry.pw_uid, gid=entry.pw_gid, groups=groups)


def running_as_root() -> bool:
    return sys.platform != "win32" and os.geteuid() == 0
