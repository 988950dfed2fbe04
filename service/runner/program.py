"""How a configured program becomes the start of a command line."""

from __future__ import annotations

import sys
from pathlib import Path

BUNDLED_SAMPLE_JOB = Path(__file__).resolve().parent.parent / "samples" / "sample_job.py"


def command_prefix(program: Path) -> list[str]:
    """Python scripts run with this interpreter (they need no exec bit and work on Windows); the rest directly."""
    if program.suffix == ".py":
        return [sys.executable, str(program)]
    return [str(program)]
