"""Nodes: every service process that shares the database registers here and renews a lease by heartbeat.

Revision ID: 0006_nodes
Revises: 0005
Create Date: 2026-12-04
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006_nodes"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NODE_STATES = ("alive", "leaving", "dead")

COMMENTS = {
    "TABLE nodes": "One row per service process (node) sharing this database; see docs/operations.md, Nodes.",
    "COLUMN nodes.id": "NODE_ID: the name the node's attempts carry in attempts.node_id.",
    "COLUMN nodes.hostname": "The host name of the machine the node runs on.",
    "COLUMN nodes.pid": "The process id of the node's service.",
    "COLUMN nodes.version": "The service's version.",
    "COLUMN nodes.started_at": "When the node (re)joined: its last start, or its return after being declared dead.",
    "COLUMN nodes.api_url": "Where the node's API answers other nodes (forwarded output reads).",
    "COLUMN nodes.last_heartbeat": "When the node last renewed its row.",
    "COLUMN nodes.lease_until": (
        "Until when the node may write outcomes and claim jobs; renewed each heartbeat. NULL: no lease (one node by "
        "construction, or NODE_LEASE_SECONDS=0): never declared dead."
    ),
    "COLUMN nodes.slots": "MAX_CONCURRENT_JOBS of the node.",
    "COLUMN nodes.state": (
        "alive | leaving (stopped gracefully, its jobs left running for its return) | dead (declared dead by "
        "another node once its lease ran out; its running attempts were made lost)."
    ),
    "COLUMN nodes.declared_dead_at": "When another node declared this one dead.",
    "COLUMN nodes.declared_dead_by": "Which node declared it dead.",
}


def upgrade() -> None:
    states = ", ".join(f"'{state}'" for state in NODE_STATES)
    op.execute(f"""
        CREATE TABLE nodes (
            id               text CONSTRAINT pk_nodes PRIMARY KEY,
            hostname         text NOT NULL,
            pid              integer NOT NULL,
            version          text NOT NULL,
            api_url          text,
            started_at       timestamptz NOT NULL DEFAULT now(),
            last_heartbeat   timestamptz NOT NULL DEFAULT now(),
            lease_until      timestamptz,
            slots            integer NOT NULL CONSTRAINT ck_nodes_slots_positive CHECK (slots >= 1),
            state            text NOT NULL DEFAULT 'alive'
                             CONSTRAINT ck_nodes_state_known CHECK (state IN ({states})),
            declared_dead_at timestamptz,
            declared_dead_by text
        )
    """)
    for target, comment in COMMENTS.items():
        escaped = comment.replace("'", "''")
        op.execute(f"COMMENT ON {target} IS '{escaped}'")


def downgrade() -> None:
    op.execute("DROP TABLE nodes")
