"""Schemathesis against the real server: for a bounded time, generated requests to every documented operation must
never get a 5xx, and every response must conform to the OpenAPI document the server publishes.

Part of `make test`; FUZZ_SECONDS sets the budget, and SKIP_FUZZ=1 leaves the test out (it is the slowest one).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.server import ServerStarter, free_port, service_environment

pytestmark = [pytest.mark.e2e, pytest.mark.fuzz]

DEFAULT_FUZZ_SECONDS = 120
# Far beyond the fuzzing budget: schemathesis stops itself when the budget is spent; this only catches a hang.
TIMEOUT_MARGIN_SECONDS = 240
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
)
# A job that ends at once: the fuzzer submits many, and the supervisor runs them all.
JOB_SCRIPT = "import sys\nsys.exit(len(sys.argv) % 2)\n"


def _budget_seconds() -> int:
    return int(os.environ.get("FUZZ_SECONDS", DEFAULT_FUZZ_SECONDS))


@pytest.mark.skipif(os.environ.get("SKIP_FUZZ") == "1", reason="SKIP_FUZZ=1 leaves the fuzzing run out")
@pytest.mark.timeout(DEFAULT_FUZZ_SECONDS + TIMEOUT_MARGIN_SECONDS)
def test_generated_requests_get_no_server_error_and_conforming_answers(
    database_url: str, start_server: ServerStarter, tmp_path: Path
) -> None:
    script = tmp_path / "job.py"
    script.write_text(JOB_SCRIPT, encoding="utf-8")
    server = start_server(
        service_environment(
            PORT=str(free_port()),
            DATABASE_URL=database_url,
            DATA_DIR=str(tmp_path / "data"),
            LOG_FILE=str(tmp_path / "logs" / "app.log"),
            JOB_SCRIPT_PATH=str(script),
            MAX_CONCURRENT_JOBS="4",
        )
    )
    server.wait_until_healthy()
    command = shutil.which("st", path=str(Path(sys.executable).parent)) or "st"

    completed = subprocess.run(
        [
            command,
            "run",
            f"{server.base_url}/schema/openapi.json",
            "--max-time",
            str(_budget_seconds()),
            "--checks",
            ",".join(CHECKS),
            # One worker: schemathesis's threads trip a CPython 3.11 bug in ast.parse ("recursion depth mismatch").
            "--workers",
            "1",
            "--request-timeout",
            "30",
            "--seed",
            os.environ.get("FUZZ_SEED", "1"),
            "--no-color",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=_budget_seconds() + TIMEOUT_MARGIN_SECONDS,
        check=False,
    )

    report = f"{completed.stdout}\n{completed.stderr}"
    assert completed.returncode == 0, (
        f"schemathesis found failures:\n{report}\n--- server ---\n{server.output()[-20000:]}"
    )
    assert server.is_running(), server.output()
