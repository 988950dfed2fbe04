"""Where an attempt's files live: DATA_DIR/output/job-<id>/attempt-<n>/{stdout,stderr,exit-status.json}.

Shared by the supervisor (which writes them through the runner) and the API (which serves the output).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from service.domain.identifiers import format_job_id

OutputStream = Literal["stdout", "stderr"]


@dataclass(frozen=True, slots=True)
class AttemptFiles:
    directory: Path

    @property
    def stdout(self) -> Path:
        return self.directory / "stdout"

    @property
    def stderr(self) -> Path:
        return self.directory / "stderr"

    def output(self, stream: OutputStream) -> Path:
        return self.stdout if stream == "stdout" else self.stderr

    @property
    def exit_status(self) -> Path:
        """Written by the exit keeper when the program ends; it outlives the service."""
        return self.directory / "exit-status.json"


def attempt_files(output_dir: Path, job_id: int, attempt_number: int) -> AttemptFiles:
    return AttemptFiles(output_dir / format_job_id(job_id) / f"attempt-{attempt_number}")
