"""Configuration, read from the environment or a `.env` file. Built once at the entry point and passed down.

Each setting is one field whose `description=` is its documentation (docs/operations.md's table is generated from
them); the fields live with what they configure, one module each, and `Settings` is all of them together.
"""

from __future__ import annotations

import socket
from pathlib import Path

from pydantic_settings import SettingsConfigDict

from service.settings.database import DatabaseSettings
from service.settings.errors import SECRET_SETTINGS, describe_settings_error, mask_url_password
from service.settings.jobs import DEFAULT_CHILD_ENVIRONMENT, JobSettings
from service.settings.nodes import NodeSettings
from service.settings.running import RunningSettings
from service.settings.server import ServerSettings
from service.settings.upkeep import UpkeepSettings

__all__ = [
    "DEFAULT_CHILD_ENVIRONMENT",
    "ENV_FILE",
    "SECRET_SETTINGS",
    "Settings",
    "describe_settings_error",
    "mask_url_password",
]

ENV_FILE = Path(".env")
WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", ""})  # noqa: S104  (names, not a bind)


# pydantic takes the fields of the last base first: the groups are listed from the last in the table to the first.
class Settings(UpkeepSettings, NodeSettings, RunningSettings, JobSettings, DatabaseSettings, ServerSettings):
    """Every setting of the service; see `.env.example` for each one with its default."""

    model_config = SettingsConfigDict(
        env_file=ENV_FILE,
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
        validate_default=True,
        # `JOB_SCRIPT_PATH=` in a .env file means "unset, use the default", as .env.example shows it.
        env_ignore_empty=True,
    )

    @property
    def advertised_api_url(self) -> str:
        """NODE_API_URL, else this node's HOST and PORT as another node would reach them."""
        if self.node_api_url:
            return self.node_api_url.rstrip("/")
        host = socket.gethostname() if self.host in WILDCARD_HOSTS else self.host
        return f"http://[{host}]:{self.port}" if ":" in host else f"http://{host}:{self.port}"
