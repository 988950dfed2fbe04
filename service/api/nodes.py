"""GET /nodes (every node sharing the database, its lease and what runs on it) and DELETE /nodes/{nodeId} (forget
a node that will never return: its running attempts become lost and their jobs run again elsewhere)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import msgspec
from litestar import Controller, delete, get
from litestar.di import NamedDependency
from litestar.params import FromPath

from service.api.dependencies import SupervisorHandle
from service.api.errors import ProblemError, problem_response
from service.db.node_store import NodeNotFoundError, NodeRecord, NodeStillAliveError, NodeStore
from service.domain.retry import RetryPolicy


@dataclass(frozen=True, slots=True)
class NodeAccess:
    """What the node routes (and output forwarding) are given: the nodes table, and the retry policy that the jobs
    of a forgotten node follow."""

    store: NodeStore
    retry_policy: RetryPolicy


class NodeRead(msgspec.Struct, rename="camel"):
    node_id: str
    hostname: str
    pid: int
    version: str
    api_url: str | None
    state: str
    """alive, leaving (stopped gracefully; its jobs wait for its return) or dead (declared dead by another node)."""
    started_at: datetime
    last_heartbeat: datetime
    lease_until: datetime | None
    """null: the node has no lease (the embedded database, or NODE_LEASE_SECONDS=0)."""
    slots: int
    running: int
    """Attempts the database says run on the node."""
    declared_dead_at: datetime | None
    declared_dead_by: str | None

    @classmethod
    def from_record(cls, node: NodeRecord) -> NodeRead:
        return cls(
            node_id=node.id,
            hostname=node.hostname,
            pid=node.pid,
            version=node.version,
            api_url=node.api_url,
            state=node.state,
            started_at=node.started_at,
            last_heartbeat=node.last_heartbeat,
            lease_until=node.lease_until,
            slots=node.slots,
            running=node.running,
            declared_dead_at=node.declared_dead_at,
            declared_dead_by=node.declared_dead_by,
        )


class NodeForgotten(msgspec.Struct, rename="camel"):
    node_id: str
    lost_attempts: int
    """Attempts that were still running under the node, now `lost`."""
    retried_jobs: int
    """Jobs among theirs that will run again (the others had no attempt left, or a cancel was asked for)."""


class NodeController(Controller):
    path = "/nodes"
    tags = ["nodes"]  # noqa: RUF012  (Litestar reads it as a class attribute)

    @get(summary="Every node sharing the database, with its lease and running attempts")
    async def list_nodes(self, node_access: NamedDependency[NodeAccess]) -> list[NodeRead]:
        return [NodeRead.from_record(node) for node in await node_access.store.list_nodes()]

    @delete(
        "/{node_id:str}",
        status_code=200,
        summary="Forget a node that will never return; its running jobs run again elsewhere",
        responses={
            404: problem_response("No such node."),
            409: problem_response("The node holds its lease: it is alive."),
        },
    )
    async def forget_node(
        self,
        node_id: FromPath[str],
        node_access: NamedDependency[NodeAccess],
        supervisor: NamedDependency[SupervisorHandle],
    ) -> NodeForgotten:
        if node_id == supervisor.node_id:
            raise ProblemError(status_code=409, detail=f"nodeId {node_id!r} is this node, which is alive")
        try:
            report = await node_access.store.forget(
                node_id, by=f"node {supervisor.node_id!r}", retry_policy=node_access.retry_policy
            )
        except NodeNotFoundError as error:
            raise ProblemError(status_code=404, detail=f"nodeId {node_id!r}: {error}") from None
        except NodeStillAliveError as error:
            raise ProblemError(status_code=409, detail=f"nodeId {node_id!r}: {error}") from None
        supervisor.wake()
        return NodeForgotten(node_id=node_id, lost_attempts=report.lost, retried_jobs=report.retried)
