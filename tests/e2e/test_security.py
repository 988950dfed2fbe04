"""A real server holding secrets, and a real job trying every route to them: its environment, the service's /proc
files, DATA_DIR, the `.env` file and the token file. Also: tokens over HTTP, SIGHUP, and the start-up refusal.

As root (CI), jobs run as JOB_USER=nobody; the JOB_USER tests skip only where the tests are not root.
"""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import make_url

from service.runner.exit_status import read_exit_status
from service.runner.keeper import PYTHON_KEEPER, KeeperKind, keeper_command
from tests.support.jobs import wait_until_final
from tests.support.server import ServerProcess, ServerStarter, free_port, service_environment, wait_until

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(sys.platform != "linux", reason="/proc, users and the keeper's switch are Linux's here"),
]

DATABASE_PASSWORD = "database-password-5f1c2e"
PG_PASSWORD = "pgpassword-secret-9a7d41"
ENV_FILE_TOKEN = "env-file-token-0c6b3f2a91"
ALICE_TOKEN = "alice-file-token-77e2d0b4"
BOB_TOKEN = "bob-file-token-3d9a51c8e0"
SECRETS = (DATABASE_PASSWORD, PG_PASSWORD, ENV_FILE_TOKEN, ALICE_TOKEN, BOB_TOKEN)
NOBODY_UID = 65534
RELOAD_SECONDS = 15.0

# Each probe prints one "PROBE <name>: read|denied" line, and what it read: the test looks for secrets in all of it.
PROBING_JOB = """#!/bin/sh
# $1 the service's pid, $2 its DATA_DIR, $3 its working directory (with .env and the token file)
echo "UID $(id -u)"
probe() {
    name=$1; shift
    if output=$("$@" 2>/dev/null); then echo "PROBE $name: read"; printf '%s\\n' "$output" | tr '\\000' '\\n'
    else echo "PROBE $name: denied"; fi
}
echo "--- environment"; env
probe environ cat "/proc/$1/environ"
probe cmdline cat "/proc/$1/cmdline"
probe data-dir-list ls -la "$2"
probe node-id cat "$2/node-id"
probe output-list ls "$2/output"
probe keeper-list ls "$2/bin"
probe data-dir-write touch "$2/planted-by-a-job"
probe output-write touch "$2/output/planted-by-a-job"
probe env-file cat "$3/.env"
probe tokens-file cat "$3/tokens"
echo "--- done"
"""
DENIED_PROBES = (
    "environ", "data-dir-list", "node-id", "output-list", "keeper-list", "data-dir-write", "output-write",
    "env-file", "tokens-file",
)  # fmt: skip


@dataclass
class SecretHoldingService:
    server: ServerProcess
    data_dir: Path
    working_dir: Path

    def client(self, token: str = ENV_FILE_TOKEN) -> httpx.Client:
        return httpx.Client(base_url=self.server.base_url, timeout=10.0, headers={"Authorization": f"Bearer {token}"})


@pytest.fixture
def public_folder() -> Iterator[Path]:
    """A folder every user can pass through (pytest's tmp folders are root's alone), so only our modes protect."""
    folder = Path(tempfile.mkdtemp(prefix="jobmanager-test-security-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def probing_job(public_folder: Path) -> Path:
    script = public_folder / "probe.sh"
    script.write_text(PROBING_JOB, encoding="utf-8")
    script.chmod(0o755)
    return script


def start_secret_holding_service(
    start_server: ServerStarter, database_url: str, folder: Path, program: Path, **variables: str
) -> SecretHoldingService:
    working_dir = folder / "service"
    working_dir.mkdir(mode=0o755)
    working_dir.chmod(0o755)
    env_file = working_dir / ".env"
    env_file.write_text(f"API_TOKEN={ENV_FILE_TOKEN}\n", encoding="utf-8")
    env_file.chmod(0o600)
    tokens = working_dir / "tokens"
    tokens.write_text(f"alice:{ALICE_TOKEN}\n", encoding="utf-8")
    tokens.chmod(0o600)
    data_dir = working_dir / "data"
    environment = service_environment(
        PORT=str(free_port()),
        DATABASE_URL=make_url(database_url).set(password=DATABASE_PASSWORD).render_as_string(hide_password=False),
        PGPASSWORD=PG_PASSWORD,
        API_TOKENS_FILE=str(tokens),
        DATA_DIR=str(data_dir),
        LOG_FILE=str(working_dir / "logs" / "app.log"),
        JOB_SCRIPT_PATH=str(program),
        **variables,
    )
    server = ServerProcess(environment, working_dir, folder / "server.out")
    start_server.started.append(server)  # killed at teardown with the others
    server.wait_until_healthy()
    return SecretHoldingService(server, data_dir, working_dir)


def run_probe(service: SecretHoldingService) -> tuple[dict[str, object], str]:
    with service.client() as client:
        response = client.post(
            "/jobs",
            json={"jobName": "probe", "arguments": [str(service.server.pid), str(service.data_dir),
                                                    str(service.working_dir)]},
        )  # fmt: skip
        assert response.status_code == 201, response.text
        job_id = response.json()["jobId"]
        job = wait_until_final(client, [job_id])[job_id]
        output = client.get(f"/jobs/{job_id}/attempts/1/output")
        assert output.status_code == 200, output.text
        return job, output.text


def probe_results(output: str) -> dict[str, str]:
    results = {}
    for line in output.splitlines():
        if line.startswith("PROBE "):
            name, _, result = line.removeprefix("PROBE ").partition(": ")
            results[name] = result
    return results


def assert_no_secret_anywhere(service: SecretHoldingService, *texts: str) -> None:
    log_file = service.working_dir / "logs" / "app.log"
    for text in (*texts, service.server.output(), log_file.read_text(encoding="utf-8")):
        for secret in SECRETS:
            assert secret not in text, f"a secret ({secret[:8]}...) appears in:\n{text}"


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="switching jobs to JOB_USER needs a root service")


@needs_root
@pytest.mark.parametrize("keeper", ["native", "python"])
def test_a_job_run_as_job_user_reaches_no_secret_of_the_service(
    start_server: ServerStarter, database_url: str, public_folder: Path, probing_job: Path, keeper: str
) -> None:
    service = start_secret_holding_service(
        start_server, database_url, public_folder, probing_job, JOB_USER="nobody", EXIT_KEEPER=keeper
    )
    job, output = run_probe(service)
    assert job["status"] == "completed", (job, output)
    assert job["submittedBy"] == "default"
    assert f"UID {NOBODY_UID}" in output.splitlines(), output
    assert "--- done" in output, output  # the whole output was captured though the job could not open any file
    results = probe_results(output)
    assert {name: results.get(name) for name in DENIED_PROBES} == dict.fromkeys(DENIED_PROBES, "denied"), output
    assert results["cmdline"] == "read"  # world-readable by design: it must hold no secret (checked below)
    environment = output.split("--- environment", 1)[1].split("PROBE ", 1)[0]
    for name in ("DATABASE_URL", "PGPASSWORD", "API_TOKEN", "API_TOKENS_FILE"):
        assert f"{name}=" not in environment, environment
    assert_no_secret_anywhere(service, output)
    assert not (service.data_dir / "planted-by-a-job").exists()
    assert stat.S_IMODE(service.data_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((service.data_dir / "output").stat().st_mode) == 0o700
    assert "RUNNING AS ROOT WITHOUT JOB_USER" not in service.server.output()


@needs_root
def test_a_root_service_without_job_user_warns_loudly(
    start_server: ServerStarter, database_url: str, public_folder: Path, probing_job: Path
) -> None:
    service = start_secret_holding_service(start_server, database_url, public_folder, probing_job)
    assert "RUNNING AS ROOT WITHOUT JOB_USER" in service.server.output()


def _python_nobody_can_run() -> str | None:
    """This interpreter, or the system's: the Python keeper needs the standard library only."""
    for candidate in (sys.executable, "/usr/bin/python3"):
        try:
            subprocess.run([candidate, "-c", ""], user=NOBODY_UID, check=True, capture_output=True)
        except (OSError, subprocess.CalledProcessError):
            continue
        return candidate
    return None


@needs_root
@pytest.mark.parametrize("keeper", ["native", "python"])
def test_a_job_that_cannot_be_switched_to_job_user_does_not_run(public_folder: Path, keeper: str) -> None:
    """The keeper, not root here, asked to switch to another user: the switch fails, and the program never runs."""
    public_folder.chmod(0o777)  # the keeper runs as nobody here and writes its status file in it
    marker = public_folder / "ran"
    program = public_folder / "program.sh"
    program.write_text(f"#!/bin/sh\ntouch {marker}\n", encoding="utf-8")
    program.chmod(0o755)
    if keeper == "native":
        command = keeper_command(KeeperKind.NATIVE, public_folder / "bin")
        assert command is not None
        (public_folder / "bin").chmod(0o755)
    else:
        interpreter = _python_nobody_can_run()
        if interpreter is None:
            pytest.skip("no Python interpreter that user nobody may run")
        command = [interpreter, "-I", "-S", str(PYTHON_KEEPER)]
    status = public_folder / "exit-status.json"
    completed = subprocess.run(
        [*command, "--run-as=0:0:0", str(status), str(program)],
        input=b"g",
        capture_output=True,
        user=NOBODY_UID,
        group=NOBODY_UID,
        extra_groups=[],
        check=False,
        cwd=public_folder,
    )
    recorded = read_exit_status(status, str(program))
    assert recorded is not None, completed.stderr.decode()
    assert recorded.spawn_error is not None
    assert "could not switch to JOB_USER" in recorded.spawn_error
    assert recorded.exit_code is None
    assert not marker.exists(), "the keeper ran the program without switching"


def test_sighup_rereads_the_token_file_of_a_running_server(
    start_server: ServerStarter, database_url: str, public_folder: Path, probing_job: Path
) -> None:
    service = start_secret_holding_service(start_server, database_url, public_folder, probing_job)
    with service.client(ALICE_TOKEN) as alice, service.client(BOB_TOKEN) as bob:
        assert alice.get("/jobs").status_code == 200
        assert bob.get("/jobs").status_code == 401
        (service.working_dir / "tokens").write_text(f"bob:{BOB_TOKEN}\n", encoding="utf-8")
        os.kill(service.server.pid, signal.SIGHUP)
        wait_until(
            lambda: True if bob.get("/jobs").status_code == 200 else None,
            timeout=RELOAD_SECONDS,
            message=lambda: f"bob's token accepted after SIGHUP\n{service.server.output()}",
        )
        assert alice.get("/jobs").status_code == 401
        assert service.server.is_running()
        response = bob.post("/jobs", json={"jobName": "by-bob", "arguments": ["0", "/nonexistent", "/nonexistent"]})
        assert response.json()["submittedBy"] == "bob"
        wait_until(
            lambda: True if "submitted by bob" in service.server.output() else None,
            timeout=RELOAD_SECONDS,
            message=lambda: f"the accepted line names bob\n{service.server.output()}",
        )
    assert_no_secret_anywhere(service)


def test_a_server_on_a_network_address_without_a_token_refuses_to_start(
    start_server: ServerStarter, tmp_path: Path
) -> None:
    server = start_server(service_environment(PORT=str(free_port()), HOST="0.0.0.0", DATA_DIR=str(tmp_path / "d")))
    assert server.process.wait(timeout=30) == 2
    output = server.output()
    assert "ALLOW_UNAUTHENTICATED=true" in output
    assert "HOST=0.0.0.0" in output
    assert not (tmp_path / "d").exists()  # refused before it touched anything
