"""This node among the nodes, as the app's lifespan drives it: join (register, fence, end leftovers), heartbeat,
rescue dead nodes, and leave. With no lease (the embedded database, NODE_LEASE_SECONDS=0) only the registration
and a slow heartbeat remain, for GET /nodes."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from service.db.connections import Database
from service.db.node_store import NodeRegistration, NodeStore
from service.domain.lease import LeaseTimeline
from service.domain.retry import RetryPolicy
from service.runner.lease_file import LEASE_FILE_NAME, LeaseFile
from service.supervisor.heartbeat import Heartbeat
from service.supervisor.rescuer import Rescuer
from service.supervisor.supervisor import Supervisor

logger = logging.getLogger(__name__)


def lease_path_for(data_dir: Path, lease_seconds: float) -> Path | None:
    """The lease file the exit keepers watch, or None when there is no lease."""
    return data_dir / LEASE_FILE_NAME if lease_seconds > 0 else None


class Membership:
    def __init__(
        self,
        database: Database,
        supervisor: Supervisor,
        registration: NodeRegistration,
        *,
        lease_seconds: float,
        shutdown_lease_seconds: float,
        data_dir: Path,
        retry_policy: RetryPolicy,
    ) -> None:
        self.nodes = NodeStore(database)
        self._supervisor = supervisor
        lease = LeaseTimeline(lease_seconds) if lease_seconds > 0 else None
        lease_path = lease_path_for(data_dir, lease_seconds)
        self.heartbeat = Heartbeat(
            self.nodes,
            supervisor,
            registration,
            lease=lease,
            shutdown_lease_seconds=shutdown_lease_seconds,
            lease_file=LeaseFile(lease_path) if lease_path is not None else None,
            output_dir=data_dir / "output",
        )
        self.rescuer = (
            Rescuer(
                self.nodes, node_id=registration.id, lease=lease, retry_policy=retry_policy, on_rescued=supervisor.wake
            )
            if lease is not None
            else None
        )

    async def join(self) -> NodeStore:
        """Register (ending what is left of attempts taken over while away), then heartbeat and rescue; returns the
        nodes table's store, for the node routes."""
        await self.heartbeat.register()
        await self.heartbeat.start()
        if self.rescuer is not None:
            await self.rescuer.start()
        return self.nodes

    async def leave_after(self, stop_supervisor: Callable[[], Awaitable[None]]) -> None:
        """Stop rescuing others, let the supervisor stop (the heartbeat keeps the lease meanwhile: its last writes
        need it), then stop renewing and keep the node's place for the programs left running."""
        if self.rescuer is not None:
            await self.rescuer.stop()
        try:
            await stop_supervisor()
        finally:
            await self.heartbeat.stop(leaving=True)
