"""GET /jobs/{jobId}/attempts and GET /jobs/{jobId}/attempts/{n}/output (whole, or followed live as SSE)."""

from __future__ import annotations

import asyncio
import codecs
import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from litestar import Controller, MediaType, Response, get
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, HeaderParameter, PathParameter, QueryParameter
from litestar.response import ServerSentEvent, ServerSentEventMessage, Stream

from service.api.dependencies import OutputAccess
from service.api.errors import ProblemError, problem_response
from service.api.schemas import AttemptRead
from service.db.job_store import JobStore
from service.domain.identifiers import parse_job_id
from service.domain.paths import OutputStream, attempt_files
from service.domain.records import AttemptRecord
from service.domain.status import AttemptOutcome
from service.runner.output import read_from

# Followers look at the file this often for new bytes, and at the database this often for the attempt's end.
FOLLOW_FILE_POLL_SECONDS = 0.1
FOLLOW_END_POLL_SECONDS = 0.5
# A comment line this often keeps proxies from closing a quiet stream.
FOLLOW_KEEPALIVE_SECONDS = 15.0
FOLLOW_CHUNK_BYTES = 64 * 1024
# A whole read goes out this much at a time: however big the file, a reader holds about one chunk.
OUTPUT_CHUNK_BYTES = 256 * 1024
OUTPUT_SOURCE_HEADER = "Output-Source"
MAX_ATTEMPT_NUMBER = 32767
"""attempts.attempt_number is a smallint."""
# An event id is a byte offset in the output file: digits only, and within a 64-bit file offset.
EVENT_ID_PATTERN = r"^[0-9]{1,18}$"
TEXT_PLAIN = MediaType.TEXT


@dataclass(frozen=True, slots=True)
class _Output:
    """Where an attempt's output is to be read: this node's file, or (elsewhere) the tail on the attempt row."""

    attempt: AttemptRecord
    path: Path | None
    """None: the attempt ran on another node; only its stored tail is at hand."""


async def _attempt_or_404(job_store: JobStore, job_id: str, attempt_number: int) -> AttemptRecord:
    database_id = parse_job_id(job_id)
    if database_id is None or await job_store.find_job(database_id) is None:
        raise ProblemError(status_code=404, detail=f"no job with jobId {job_id!r}")
    attempt = await job_store.find_attempt(database_id, attempt_number)
    if attempt is None:
        raise ProblemError(status_code=404, detail=f"job {job_id} has no attempt {attempt_number}")
    return attempt


def _locate(attempt: AttemptRecord, stream: OutputStream, access: OutputAccess) -> _Output:
    if attempt.node_id == access.node_id:
        path = attempt_files(access.output_dir, attempt.job_id, attempt.attempt_number).output(stream)
        # An ended attempt's file may be gone (empty, or past OUTPUT_RETENTION_DAYS): its row keeps the tail.
        if attempt.outcome is AttemptOutcome.RUNNING or path.exists():
            return _Output(attempt, path)
        return _Output(attempt, None)
    if attempt.outcome is AttemptOutcome.RUNNING:
        raise ProblemError(
            status_code=409,
            detail=(
                f"attempt {attempt.attempt_number} runs on node {attempt.node_id!r}, which keeps its output; "
                "ask that node (its tail is stored here once it ends)"
            ),
        )
    return _Output(attempt, None)


def _end_event(attempt: AttemptRecord) -> ServerSentEventMessage:
    return ServerSentEventMessage(
        event="end",
        data=json.dumps({"outcome": attempt.outcome.value, "exitCode": attempt.exit_code, "signal": attempt.signal}),
    )


async def _follow(
    job_store: JobStore, output: _Output, stream: OutputStream, start_offset: int
) -> AsyncIterator[ServerSentEventMessage]:
    """`output` events with the text as it is written (each event's id is its end offset in the file, so a
    client reconnecting with Last-Event-ID resumes there), then one `end` event when the attempt has ended."""
    attempt = output.attempt
    if output.path is None:
        tail = await job_store.attempt_output_tail(attempt.id, stream)
        if tail:
            yield ServerSentEventMessage(event="output", data=tail)
        yield _end_event(attempt)
        return
    loop = asyncio.get_running_loop()
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    offset = start_offset
    held_back = ""
    ended = attempt.outcome is not AttemptOutcome.RUNNING
    last_end_check = last_sent = loop.time()
    while True:
        chunk = await asyncio.to_thread(read_from, output.path, offset, FOLLOW_CHUNK_BYTES)
        if chunk:
            offset += len(chunk)
            text = held_back + decoder.decode(chunk)
            # SSE ends a data line at CR, LF or CRLF alike: a CR sent at the end of one event and its LF at the
            # start of the next would be two line breaks. A trailing CR waits for what follows it.
            held_back = "\r" if text.endswith("\r") else ""
            text = text.removesuffix("\r")
            if text:
                # Bytes of a character cut at the chunk's end wait in the decoder; the id points before them.
                pending = len(decoder.getstate()[0]) + len(held_back)
                yield ServerSentEventMessage(event="output", data=text, id=offset - pending)
                last_sent = loop.time()
            continue
        if ended:
            rest = held_back + decoder.decode(b"", final=True)
            if rest:
                yield ServerSentEventMessage(event="output", data=rest, id=offset)
            yield _end_event(attempt)
            return
        now = loop.time()
        if now - last_end_check >= FOLLOW_END_POLL_SECONDS:
            last_end_check = now
            current = await job_store.find_attempt(attempt.job_id, attempt.attempt_number)
            if current is not None and current.outcome is not AttemptOutcome.RUNNING:
                attempt, ended = current, True
                continue  # read what the program wrote last, then end
        if now - last_sent >= FOLLOW_KEEPALIVE_SECONDS:
            yield ServerSentEventMessage(comment="still running")
            last_sent = now
        await asyncio.sleep(FOLLOW_FILE_POLL_SECONDS)


class AttemptController(Controller):
    path = "/jobs/{job_id:str}/attempts"
    tags = ["jobs"]  # noqa: RUF012  (Litestar reads it as a class attribute)

    @get(summary="A job's attempts, oldest first", responses={404: problem_response("No such job.")})
    async def list_attempts(self, job_id: FromPath[str], job_store: NamedDependency[JobStore]) -> list[AttemptRead]:
        database_id = parse_job_id(job_id)
        if database_id is None or await job_store.find_job(database_id) is None:
            raise ProblemError(status_code=404, detail=f"no job with jobId {job_id!r}")
        return [AttemptRead.from_record(attempt) for attempt in await job_store.list_attempts(database_id)]

    @get(
        "/{attempt:int}/output",
        summary="An attempt's stdout or stderr, whole or followed live (SSE)",
        responses={
            200: ResponseSpec(
                data_container=str,
                media_type="text/plain",
                generate_examples=False,
                description=(
                    "The output as text/plain; with follow=true, a text/event-stream of `output` events and one "
                    "`end` event."
                ),
            ),
            400: problem_response(
                f"An attempt number outside 1 to {MAX_ATTEMPT_NUMBER}, an unknown stream, or a Last-Event-ID that "
                "is not a byte offset."
            ),
            404: problem_response("No such job, or no such attempt of it."),
            409: problem_response("The attempt runs on another node, which keeps its output."),
        },
    )
    async def get_output(
        self,
        *,
        job_id: FromPath[str],
        attempt: Annotated[
            int, PathParameter(ge=1, le=MAX_ATTEMPT_NUMBER, description="The attempt's number, 1 for the first.")
        ],
        job_store: NamedDependency[JobStore],
        output_access: NamedDependency[OutputAccess],
        stream: Annotated[
            Literal["stdout", "stderr"], QueryParameter(description="Which output: stdout or stderr.")
        ] = "stdout",
        follow: Annotated[
            bool,
            QueryParameter(
                description=(
                    "true: a text/event-stream of `output` events while the attempt runs, and one `end` event "
                    "(outcome, exitCode, signal) when it has ended."
                )
            ),
        ] = False,
        last_event_id: Annotated[
            str | None,
            HeaderParameter(
                name="Last-Event-ID",
                pattern=EVENT_ID_PATTERN,
                description="Resume a followed stream after this event id (a byte offset, as the events give it).",
            ),
        ] = None,
    ) -> Response[Any]:
        """The output as text/plain (at most OUTPUT_LIMIT_BYTES plus the kept tail and the truncation markers).

        Output lives on the node that ran the attempt. Another node answers with the tail stored on the attempt
        row once the attempt has ended (header `Output-Source: database-tail`), and 409 while it still runs.
        """
        record = await _attempt_or_404(job_store, job_id, attempt)
        output = _locate(record, stream, output_access)
        if follow:
            start = int(last_event_id) if last_event_id else 0
            return ServerSentEvent(_follow(job_store, output, stream, start))
        if output.path is None:
            tail = await job_store.attempt_output_tail(record.id, stream)
            return Response(
                (tail or "").encode(), media_type=TEXT_PLAIN, headers={OUTPUT_SOURCE_HEADER: "database-tail"}
            )
        return Stream(_file_chunks(output.path), media_type=TEXT_PLAIN, headers={OUTPUT_SOURCE_HEADER: "file"})


async def _file_chunks(path: Path) -> AsyncIterator[bytes]:
    """The file as long as it is when the read begins, one chunk at a time; nothing if the program never got to
    write. Open, it stays readable even if the file is removed meanwhile."""
    try:
        file = await asyncio.to_thread(path.open, "rb")
    except FileNotFoundError:
        return
    try:
        remaining = os.fstat(file.fileno()).st_size
        while remaining > 0:
            chunk = await asyncio.to_thread(file.read, min(OUTPUT_CHUNK_BYTES, remaining))
            if not chunk:
                return  # cut short under us: what was there has been sent
            remaining -= len(chunk)
            yield chunk
    finally:
        file.close()
