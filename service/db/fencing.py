"""Fencing by lease: a write on behalf of a node is made only while that node holds its lease.

Checked inside the very statement that writes (claims, process starts, outcomes), so no pause of the writer between
a check and its write can let a node whose lease ran out record anything. A node with no `nodes` row (one that
never registered) or with no lease (`lease_until` NULL: the embedded database, NODE_LEASE_SECONDS=0) is not fenced.
"""

from __future__ import annotations

from typing import Final

from service.db.errors import DatabaseUnavailableError

# A transaction that locks rows of jobs and attempts and then goes quiet this long is aborted by the server: a node
# frozen (or cut off) half-way through one must not keep another node from declaring it dead. Such a transaction is
# never legitimately idle for more than milliseconds.
TRANSACTION_IDLE_LIMIT_MS = 5000
LIMIT_TRANSACTION_IDLE = f"SET LOCAL idle_in_transaction_session_timeout = {TRANSACTION_IDLE_LIMIT_MS}"


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
