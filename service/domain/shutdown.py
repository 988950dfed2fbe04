"""What a graceful stop of the service does with the jobs still running."""

from __future__ import annotations

from enum import StrEnum


class ShutdownMode(StrEnum):
    """What a graceful stop (SIGTERM, SIGINT) does with the jobs still running (setting SHUTDOWN_MODE)."""

    LEAVE = "leave"
    """Leave them running; the next start adopts them and records their real outcome. Nothing is interrupted."""
    DRAIN = "drain"
    """Wait up to SHUTDOWN_GRACE_SECONDS for them to finish; leave any still running for the next start."""
    KILL = "kill"
    """SIGTERM their process groups, wait up to SHUTDOWN_GRACE_SECONDS, then SIGKILL; outcomes are `killed`."""
