"""What a supervisor is told at start: its node, its slots, its retry policy, and how it ends and records jobs."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from service.domain.retry import RetryPolicy
from service.domain.shutdown import ShutdownMode

DEFAULT_CANCEL_GRACE_SECONDS = 10.0
DEFAULT_OUTPUT_TAIL_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class SupervisorConfig:
    node_id: str
    max_concurrent_jobs: int
    retry_policy: RetryPolicy
    poll_interval_seconds: float
    shutdown_grace_seconds: float
    output_dir: Path
    shutdown_mode: ShutdownMode = ShutdownMode.LEAVE
    inherited_environment: tuple[str, ...] = ()
    parent_environment: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    cancel_grace_seconds: float = DEFAULT_CANCEL_GRACE_SECONDS
    """A cancelled or timed-out attempt's group gets SIGTERM, then SIGKILL this long after if anything still runs."""
    output_limit_bytes: int | None = None
    """Bytes of each output stream kept in its file (by the exit keeper); None: all of them."""
    output_tail_bytes: int = DEFAULT_OUTPUT_TAIL_BYTES
    """The end of each stream that is kept past the limit, and stored on the attempt row when it ends."""
    lease_path: Path | None = None
    """The node's lease file, handed to each exit keeper; None: no lease (the embedded database, one node)."""
