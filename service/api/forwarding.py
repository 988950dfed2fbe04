"""Reading a running attempt's output through any node: the request is forwarded to the node that runs it (its
`api_url` in the nodes table), whose files hold the output, and the answer, a followed stream included, is passed
back as it comes. The Authorization header goes along, so the owner applies the same access rules.

A request that was already forwarded is never forwarded again (a node whose api_url points at the wrong node then
answers 409 rather than loop).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx
from litestar import Request
from litestar.response import Stream

from service.api.dependencies import OutputAccess
from service.api.errors import ProblemError
from service.api.nodes import NodeAccess
from service.domain.records import AttemptRecord
from service.domain.status import AttemptOutcome

logger = logging.getLogger(__name__)

FORWARDED_BY_HEADER = "X-Jobmanager-Forwarded-By"
# Passed on from the client's request: access, resuming a followed stream, what the client accepts.
FORWARDED_REQUEST_HEADERS = ("authorization", "last-event-id", "accept")
# Passed back from the owner's answer.
FORWARDED_RESPONSE_HEADERS = ("output-source", "cache-control")
FORWARD_CONNECT_SECONDS = 3.0
# A whole read is bounded by the output limit; a followed stream lasts as long as the attempt (no read timeout).
FORWARD_READ_SECONDS = 60.0


class OwnerUnreachableError(Exception):
    """The node that runs the attempt did not answer."""


async def forward_output(
    api_url: str,
    path: str,
    query: Mapping[str, str],
    request_headers: Mapping[str, str],
    *,
    this_node: str,
    follow: bool,
) -> Stream:
    """GET `path` on the owner node and stream its answer back unchanged (status, body, content type)."""
    headers = {name: request_headers[name] for name in FORWARDED_REQUEST_HEADERS if name in request_headers}
    headers[FORWARDED_BY_HEADER] = this_node
    timeout = httpx.Timeout(
        FORWARD_READ_SECONDS, connect=FORWARD_CONNECT_SECONDS, read=None if follow else FORWARD_READ_SECONDS
    )
    client = httpx.AsyncClient(base_url=api_url, timeout=timeout)
    try:
        upstream = await client.send(
            client.build_request("GET", path, params=dict(query), headers=headers), stream=True
        )
    except httpx.HTTPError as error:
        await client.aclose()
        raise OwnerUnreachableError(f"{api_url} did not answer ({error.__class__.__name__})") from error

    async def body() -> AsyncIterator[bytes]:
        try:
            async for chunk in upstream.aiter_raw():
                yield chunk
        except httpx.HTTPError as error:
            logger.warning("forwarded output from %s ended early: %s", api_url, error)
        finally:
            await upstream.aclose()
            await client.aclose()

    passed_back = {name: upstream.headers[name] for name in FORWARDED_RESPONSE_HEADERS if name in upstream.headers}
    return Stream(
        body(),
        status_code=upstream.status_code,
        media_type=upstream.headers.get("content-type"),
        headers=passed_back,
    )


async def forward_if_running_elsewhere(
    request: Request[Any, Any, Any],
    attempt: AttemptRecord,
    access: OutputAccess,
    nodes: NodeAccess,
    *,
    follow: bool,
) -> Stream | None:
    """The owner's answer when the attempt runs on another node that can be asked; None to answer here."""
    if attempt.node_id == access.node_id or attempt.outcome is not AttemptOutcome.RUNNING:
        return None
    if FORWARDED_BY_HEADER.lower() in request.headers:
        return None  # already forwarded once: answer what this node knows
    owner = await nodes.store.find_node(attempt.node_id)
    if owner is None or not owner.api_url:
        return None
    try:
        return await forward_output(
            owner.api_url,
            request.url.path,
            dict(request.query_params),
            dict(request.headers),
            this_node=access.node_id,
            follow=follow,
        )
    except OwnerUnreachableError as error:
        raise ProblemError(
            status_code=503,
            detail=(
                f"attempt {attempt.attempt_number} runs on node {attempt.node_id!r}, which keeps its output and did "
                f"not answer: {error}; its tail is stored here once it ends"
            ),
        ) from None
