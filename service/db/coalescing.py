"""Group commit: concurrent calls of one write are coalesced into batches, each a single statement and commit.

Under load, the per-statement costs (a round trip, parsing, a statement-level trigger, the commit) dominate a
one-row write, for the service and for PostgreSQL alike; a batch pays them once for all its rows.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

logger = logging.getLogger(__name__)

ItemT = TypeVar("ItemT")
ResultT = TypeVar("ResultT")

DEFAULT_MAX_BATCH = 256


class Coalescer(Generic[ItemT, ResultT]):
    """`await coalescer(item)` writes `item` through `write_batch`, together with whatever else is waiting.

    No timer: the first call starts a write at once, and the calls that arrive while it runs go together in the
    next one. Alone, a call costs what a single write costs; under load, batches grow by themselves.

    `write_batch` returns one result per item, in order. When a batch of several fails, its items are written
    again one at a time, so that one bad item (or a hiccup) fails its own caller only. A caller that stops waiting
    (cancelled) does not take its item back: a write already handed over may still be committed.
    """

    def __init__(
        self,
        write_batch: Callable[[Sequence[ItemT]], Awaitable[Sequence[ResultT]]],
        *,
        name: str,
        max_batch: int = DEFAULT_MAX_BATCH,
    ) -> None:
        self._write_batch = write_batch
        self._name = name
        self._max_batch = max_batch
        self._pending: list[tuple[ItemT, asyncio.Future[ResultT]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def __call__(self, item: ItemT) -> ResultT:
        loop = asyncio.get_running_loop()
        result: asyncio.Future[ResultT] = loop.create_future()
        self._pending.append((item, result))
        if self._writer is None:
            self._writer = loop.create_task(self._write_pending(), name=f"coalescer:{self._name}")
            self._writer.add_done_callback(self._writer_ended)
        return await result

    async def _write_pending(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[: self._max_batch], self._pending[self._max_batch :]
            try:
                await self._write(batch)
            except BaseException as error:  # cancelled with the loop, say: nobody may be left waiting forever
                for _, result in batch:
                    _fail(result, error)
                for _, result in self._pending:
                    _fail(result, error)
                self._pending = []
                raise

    async def _write(self, batch: list[tuple[ItemT, asyncio.Future[ResultT]]]) -> None:
        try:
            results = await self._write_batch([item for item, _ in batch])
        except Exception as error:
            if len(batch) == 1:
                _fail(batch[0][1], error)
                return
            logger.debug("a batch of %d %s writes failed (%s); writing them one by one", len(batch), self._name, error)
            for item, result in batch:
                try:
                    (single,) = await self._write_batch([item])
                except Exception as item_error:
                    _fail(result, item_error)
                else:
                    _resolve(result, single)
            return
        if len(results) != len(batch):
            raise RuntimeError(f"{self._name}: {len(results)} results for a batch of {len(batch)}")
        for (_, result), value in zip(batch, results, strict=True):
            _resolve(result, value)

    def _writer_ended(self, task: asyncio.Task[None]) -> None:
        self._writer = None
        if not task.cancelled() and task.exception() is not None:
            logger.error("the %s writer failed", self._name, exc_info=task.exception())
        if self._pending:  # arrived after the last batch was taken, and before the task ended
            loop = task.get_loop()
            if not loop.is_closed():
                self._writer = loop.create_task(self._write_pending(), name=f"coalescer:{self._name}")
                self._writer.add_done_callback(self._writer_ended)


def _resolve(future: asyncio.Future[ResultT], value: ResultT) -> None:
    if not future.done():  # done: its caller stopped waiting
        future.set_result(value)


def _fail(future: asyncio.Future[ResultT], error: BaseException) -> None:
    if future.done():
        return
    if isinstance(error, asyncio.CancelledError):
        future.cancel()
    else:
        future.set_exception(error)
