"""The lease file: where a node tells its exit keepers until when their programs may run (see exit_keeper.c).

One line, the deadline in milliseconds since the epoch, replaced atomically. The service writes it after each
lease renewal, and once more, further ahead, when it stops gracefully leaving its jobs to run.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

LEASE_FILE_NAME = "lease"


class LeaseFile:
    def __init__(self, path: Path) -> None:
        self.path = path

    def extend_until(self, deadline_epoch_seconds: float) -> None:
        """Programs may run until then (wall clock); blocking file write, small."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        temporary.write_text(f"{int(deadline_epoch_seconds * 1000)}\n", encoding="ascii")
        os.replace(temporary, self.path)

    def extend_for(self, seconds: float, *, since: float | None = None) -> None:
        """Programs may run for `seconds` from `since` (a `time.time()`, by default now)."""
        self.extend_until((time.time() if since is None else since) + seconds)
