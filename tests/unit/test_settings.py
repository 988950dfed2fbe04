"""Configuration: the defaults, each variable read by its name, and bad values refused with the variable named."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError
from pydantic_settings import SettingsError

from service.settings import DEFAULT_CHILD_ENVIRONMENT, Settings, describe_settings_error

# Every setting's name; each is read from the environment.
SETTING_NAMES = {name.upper() for name in Settings.model_fields}
START_UP_TIMEOUT_SECONDS = 30
PROJECT_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No setting of the developer's shell leaks in (names are matched case-insensitively, hence lower())."""
    for name in list(os.environ):
        if name.upper() in SETTING_NAMES:
            monkeypatch.delenv(name)


def _settings() -> Settings:
    return Settings(_env_file=None)


def _error_for(monkeypatch: pytest.MonkeyPatch, **variables: str) -> str:
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError) as raised:
        _settings()
    return describe_settings_error(raised.value)


def test_every_setting_has_a_default() -> None:
    settings = _settings()

    assert settings.port == 3000
    assert settings.host == "127.0.0.1"
    assert settings.max_attempts == 2
    assert settings.database_url is None  # the embedded PostgreSQL
    assert settings.job_script_path is None  # the bundled sample job
    assert settings.log_file == Path("logs/app.log")
    assert settings.data_dir == Path("data")
    assert settings.node_id is None  # generated once and kept in DATA_DIR
    assert settings.max_concurrent_jobs >= 1
    assert settings.child_environment_names == DEFAULT_CHILD_ENVIRONMENT


def test_each_variable_is_read_by_its_name(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    program = tmp_path / "job.sh"
    program.write_text("#!/bin/sh\nexit 0\n")
    variables = {
        "PORT": "8081",
        "HOST": "0.0.0.0",
        "MAX_ATTEMPTS": "5",
        "MAX_CONCURRENT_JOBS": "3",
        "DATABASE_URL": "postgresql://jobs:secret@db.example:5433/jobs",
        "JOB_SCRIPT_PATH": str(program),
        "DATA_DIR": str(tmp_path / "data"),
        "LOG_FILE": str(tmp_path / "service.log"),
        "LOG_LEVEL": "debug",
        "NODE_ID": "node-a.1",
        "RETRY_BACKOFF_BASE_SECONDS": "0.5",
        "POLL_INTERVAL_SECONDS": "2",
        "SHUTDOWN_GRACE_SECONDS": "7",
        "JOB_ENV_PASSTHROUGH": '["EXTRA_ONE", "EXTRA_TWO"]',
    }
    for name, value in variables.items():
        monkeypatch.setenv(name, value)

    settings = _settings()

    assert settings.port == 8081
    assert settings.host == "0.0.0.0"
    assert settings.max_attempts == 5
    assert settings.max_concurrent_jobs == 3
    assert settings.database_url == "postgresql://jobs:secret@db.example:5433/jobs"
    assert settings.job_script_path == program.resolve()
    assert settings.data_dir == tmp_path / "data"
    assert settings.log_file == tmp_path / "service.log"
    assert settings.log_level == "DEBUG"
    assert settings.node_id == "node-a.1"
    assert settings.retry_backoff_base == 0.5
    assert settings.poll_interval_seconds == 2.0
    assert settings.shutdown_grace_seconds == 7.0
    assert settings.child_environment_names == (*DEFAULT_CHILD_ENVIRONMENT, "EXTRA_ONE", "EXTRA_TWO")


def test_a_dotenv_file_is_read_and_the_environment_wins_over_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("PORT=4000\nMAX_ATTEMPTS=3\n", encoding="utf-8")
    monkeypatch.setenv("MAX_ATTEMPTS", "4")

    settings = Settings(_env_file=env_file)

    assert settings.port == 4000
    assert settings.max_attempts == 4


@pytest.mark.parametrize("name", ["JOB_SCRIPT_PATH", "DATABASE_URL", "NODE_ID", "PORT"])
def test_an_empty_variable_means_unset(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    # .env.example lists every variable; one left as `NAME=` must give the default, not a start-up failure.
    monkeypatch.setenv(name, "")
    assert getattr(_settings(), name.lower()) == Settings.model_fields[name.lower()].default


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PORT", "abc"),
        ("PORT", "0"),
        ("PORT", "65536"),
        ("PORT", "-1"),
        ("MAX_ATTEMPTS", "0"),
        ("MAX_ATTEMPTS", "two"),
        ("MAX_CONCURRENT_JOBS", "0"),
        ("DATABASE_URL", "mysql://root@localhost/jobs"),
        ("DATABASE_URL", "sqlite:///jobs.db"),
        ("LOG_LEVEL", "LOUD"),
        ("NODE_ID", "bad node/id"),
        ("RETRY_BACKOFF_BASE_SECONDS", "-1"),
        ("POLL_INTERVAL_SECONDS", "0"),
    ],
)
def test_a_bad_value_is_refused_naming_its_variable(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    message = _error_for(monkeypatch, **{name: value})

    assert message.startswith("invalid configuration:")
    problem_lines = message.splitlines()[1:]
    assert len(problem_lines) == 1, message
    assert problem_lines[0].strip().startswith(f"{name}: "), message
    assert repr(value) in problem_lines[0], message


def test_a_list_that_is_not_json_is_refused_naming_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    # pydantic-settings fails before validation here, with its own exception type.
    monkeypatch.setenv("JOB_ENV_PASSTHROUGH", "EXTRA_ONE,EXTRA_TWO")
    with pytest.raises(SettingsError) as raised:
        _settings()

    message = describe_settings_error(raised.value)

    assert message.startswith("invalid configuration:")
    assert "JOB_ENV_PASSTHROUGH: " in message


def test_a_missing_job_script_is_refused_naming_the_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-job.sh"

    message = _error_for(monkeypatch, JOB_SCRIPT_PATH=str(missing))

    assert "JOB_SCRIPT_PATH: " in message
    assert str(missing) in message


def test_a_directory_is_not_a_job_script(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert "JOB_SCRIPT_PATH: " in _error_for(monkeypatch, JOB_SCRIPT_PATH=str(tmp_path))


def test_every_bad_value_is_reported_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    message = _error_for(monkeypatch, PORT="abc", MAX_ATTEMPTS="0", DATABASE_URL="mysql://x@y/z")

    named = sorted(line.strip().split(":", 1)[0] for line in message.splitlines()[1:])
    assert named == ["DATABASE_URL", "MAX_ATTEMPTS", "PORT"]


@pytest.mark.parametrize(
    ("name", "value"), [("PORT", "abc"), ("JOB_ENV_PASSTHROUGH", "not json")], ids=["PORT", "JOB_ENV_PASSTHROUGH"]
)
def test_a_bad_value_stops_start_up_with_exit_code_2_and_the_variable_named(
    tmp_path: Path, name: str, value: str
) -> None:
    environment = {key: item for key, item in os.environ.items() if key.upper() not in SETTING_NAMES}
    # A valid-looking database URL, so that the only complaint is the bad value; nothing may connect to it.
    environment |= {name: value, "DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"}
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), environment.get("PYTHONPATH")]))

    completed = subprocess.run(
        [sys.executable, "-m", "service"],
        cwd=tmp_path,  # no .env here
        env=environment,
        capture_output=True,
        text=True,
        timeout=START_UP_TIMEOUT_SECONDS,
        check=False,
    )

    assert completed.returncode == 2, completed.stderr
    assert f"{name}: " in completed.stderr
    assert "DATABASE_URL" not in completed.stderr
    assert "Traceback" not in completed.stderr
