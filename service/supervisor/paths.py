"""Where an attempt's files live (the layout itself is in service/domain/paths.py, shared with the API)."""

from __future__ import annotations

from service.domain.paths import AttemptFiles, attempt_files

__all__ = ["AttemptFiles", "attempt_files"]
