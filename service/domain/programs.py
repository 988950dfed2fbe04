"""Programs a job may run are named: clients choose a name, never a path (ALLOWED_PROGRAMS maps names to paths)."""

from __future__ import annotations

DEFAULT_PROGRAM_NAME = "default"
"""The name of JOB_SCRIPT_PATH (or of the bundled sample job when it is unset): what a job runs unless it says."""
PROGRAM_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"
"""Letters, digits, '.', '_', '-'; at most 63 characters, starting with a letter or a digit."""
