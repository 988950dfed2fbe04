"""Settings of this node among the nodes that share one database: its name, its lease, where others reach it."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings

from service.domain.lease import MIN_LEASE_SECONDS

MAX_LEASE_SECONDS = 3600.0


class NodeSettings(BaseSettings):
    """This node's name and lease among the nodes."""

    node_id: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$",
        description=(
            "This node's name in the `attempts` table. Must stay the same across restarts and differ between"
            " nodes. Letters, digits, `.`, `_`, `-`; at most 63 characters, starting with a letter or a digit."
            " Unset: generated once as `<hostname>-<8 hex digits>` and kept in `DATA_DIR/node-id`."
        ),
    )
    node_lease_seconds: float = Field(
        default=30.0,
        description=(
            "With `DATABASE_URL`: how long a node's lease lasts, 0 or 3 to 3600. The node renews it every third of"
            " it; one whose lease ran out is declared dead by another node, which reruns its jobs, and its own exit"
            " keepers end its programs first (see Nodes in docs/operations.md). 0: no lease, no rescue. Ignored with"
            " the embedded PostgreSQL (one node)."
        ),
    )
    shutdown_lease_seconds: Annotated[
        float,
        Field(
            ge=0,
            le=30 * 86400,
            description=(
                "The lease a node keeps after a graceful stop, 0 to 2592000: its running jobs keep running that long"
                " for its return (a planned restart), before another node may declare it dead."
            ),
        ),
    ] = 600.0
    node_api_url: str | None = Field(
        default=None,
        pattern=r"^https?://[^\s/]+(/\S*)?$",
        description=(
            "Where the other nodes reach this node's API (to read the output of an attempt running here)."
            " Unset: `http://HOST:PORT`, with the machine's host name when `HOST` is a wildcard address."
        ),
    )

    @field_validator("node_lease_seconds")
    @classmethod
    def _lease_off_or_long_enough(cls, value: float) -> float:
        if value != 0 and not MIN_LEASE_SECONDS <= value <= MAX_LEASE_SECONDS:
            raise ValueError(
                f"is {value:g} s; use 0 (no lease) or {MIN_LEASE_SECONDS:g} to {MAX_LEASE_SECONDS:g} seconds"
            )
        return value
