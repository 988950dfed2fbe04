"""Settings of the service itself: where it listens, where it keeps its files and logs, who may call it."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings

from service.logs import LogFormat


class ServerSettings(BaseSettings):
    """Where the service listens, keeps its files and logs, and whom it serves."""

    host: str = Field(
        default="127.0.0.1",
        min_length=1,
        description=(
            "Address the API binds to. Any address but a loopback one needs `API_TOKEN` or `API_TOKENS_FILE`"
            " (start-up is refused otherwise, unless `ALLOW_UNAUTHENTICATED=true`)."
        ),
    )
    port: Annotated[int, Field(ge=1, le=65535, description="TCP port of the API, 1 to 65535.")] = 3000
    data_dir: Path = Field(
        default=Path("data"),
        description=(
            "This node's folder: the embedded PostgreSQL (`postgres/`), the node id (`node-id`), every attempt's"
            " output and exit status (`output/`), the compiled exit keeper (`bin/`). One folder per node."
        ),
    )
    log_file: Path = Field(
        default=Path("logs/app.log"),
        description="The log file (also written to the console), rotated at 10 MiB, 5 old files kept.",
    )
    log_level: str = Field(default="INFO", description="`DEBUG`, `INFO`, `WARNING` or `ERROR`, any case.")
    log_format: LogFormat = Field(
        default=LogFormat.TEXT,
        description=(
            "`text`: readable lines (time, level, logger, message). `json`: one JSON object per line (`time`, `level`,"
            " `logger`, `message`, and `requestId` on every line a request caused). Both go to the console and"
            " `LOG_FILE`."
        ),
    )
    api_token: SecretStr | None = Field(
        default=None,
        min_length=16,
        description=(
            "A bearer token every request but `/health` and `/ready` must carry (`Authorization: Bearer <token>`),"
            " at least 16 characters. Jobs it submits are recorded as submitted by `default`. Unset, with"
            " `API_TOKENS_FILE` unset too: no authentication (loopback only)."
        ),
    )
    api_tokens_file: Path | None = Field(
        default=None,
        description=(
            "A file of several tokens, one `name:token` a line (`#` starts a comment), each token at least 16"
            " characters; the name is recorded on the jobs it submits. Read at start-up and again on `SIGHUP`"
            " (a file that no longer reads keeps the tokens already loaded). Works alongside `API_TOKEN`."
        ),
    )
    allow_unauthenticated: bool = Field(
        default=False,
        description=(
            "`true` lets the service serve a non-loopback `HOST` with no token (something in front of it must"
            " authenticate); otherwise such a start is refused."
        ),
    )

    @field_validator("log_level")
    @classmethod
    def _known_log_level(cls, value: str) -> str:
        level = value.upper()
        if level not in logging.getLevelNamesMapping():
            raise ValueError(f"unknown log level {value!r}; use DEBUG, INFO, WARNING or ERROR")
        return level
