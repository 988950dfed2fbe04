"""From a claimed attempt to what the runner starts: no shell, the job's own environment, the attempt's files."""

from __future__ import annotations

from pathlib import Path

from service.domain.identifiers import format_job_id
from service.domain.paths import attempt_files
from service.domain.records import ClaimedAttempt
from service.runner.environment import child_environment
from service.runner.launcher import ProcessSpec
from service.runner.program import command_prefix
from service.supervisor.config import SupervisorConfig


def process_spec(config: SupervisorConfig, attempt: ClaimedAttempt) -> ProcessSpec:
    """What to run for a claimed attempt: its command, its environment, its files and its limits."""
    files = attempt_files(config.output_dir, attempt.job_id, attempt.attempt_number)
    environment = child_environment(
        config.parent_environment,
        config.inherited_environment,
        {
            "JOB_ID": format_job_id(attempt.job_id),
            "JOB_NAME": attempt.job_name,
            "JOB_ATTEMPT": str(attempt.attempt_number),
        },
    )
    return ProcessSpec(
        argv=[*command_prefix(Path(attempt.program)), *attempt.arguments],
        environment=environment,
        stdout_path=files.stdout,
        stderr_path=files.stderr,
        status_path=files.exit_status,
        output_limit_bytes=config.output_limit_bytes,
        output_tail_bytes=config.output_tail_bytes,
        limits=attempt.limits,
        lease_path=config.lease_path,
    )
