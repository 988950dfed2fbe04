"""Fencing by lease: a write on behalf of a node is made only while that node holds its lease.

Checked inside the very statement that writes (claims, process starts, outcomes), so no pause of the writer between
a check and its write can let a node whose lease ran out record anything. A node with no `nodes` row (one that
never registered) or with no lease (`lease_until` NULL: the embedded database, NODE_LEASE_SECONDS=0) is not fenced.
"""

from __future__ import annotations

from typing import Final

from service.db.errors import DatabaseUnavailableError


def lease_held(node_id_sql: str) -> str:
    """A SQL condition, true unless the node named by the SQL expression `node_id_sql` has a row that does not hold
    a lease (declared dead, left, or its `lease_until` passed)."""
    return (
        f"NOT EXISTS (SELECT FROM nodes fence WHERE fence.id = {node_id_sql}"
        " AND (fence.state <> 'alive' OR fence.lease_until <= now()))"
    )


class LeaseLapsedError(DatabaseUnavailableError):
    """This node's lease has lapsed: nothing it writes counts until it renews it (or another node declares it dead
    and takes its attempts over). The same call may succeed later, as after a database hiccup."""


class Fenced:
    """The result of a write refused by the lease fence (the store turns it into `LeaseLapsedError`)."""

    __slots__ = ()


FENCED: Final = Fenced()
