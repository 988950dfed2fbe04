"""Removing what a recorded attempt leaves on disk, in a thread of its own.

An unlink or rmdir waits on the disk; on the event loop that wait held up every request and every start (in a
profile under load it was the largest share of the service's samples). One thread takes the removals in order.
A new attempt's folder may be made while its job's folder is being removed: whoever makes folders retries when a
parent vanishes under it (the launcher, the fork server's keepers), so removing only empty folders stays safe.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from dataclasses import dataclass

from service.domain.paths import AttemptFiles
from service.runner.output import remove_after_recording

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _Flush:
    loop: asyncio.AbstractEventLoop
    done: asyncio.Future[None]


def _resolve(done: asyncio.Future[None]) -> None:
    if not done.done():
        done.set_result(None)


class AttemptFileCleaner:
    """`remove(files)` returns at once; the thread starts on first use. `flush()` waits for what was handed over;
    `close()` finishes the queue and ends the thread; after it, removals happen in the caller."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[AttemptFiles | _Flush | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._closed = False
        self.removed = 0
        """Entries removed so far (files and folders)."""

    def remove(self, files: AttemptFiles) -> None:
        """Remove the attempt's spent files and empty folders (see `remove_after_recording`), soon."""
        if self._closed:
            self._remove_now(files)
            return
        if self._thread is None:
            # A daemon: a process that ends without close() loses nothing but leftovers the pruner removes later.
            self._thread = threading.Thread(target=self._run, name="attempt-file-cleaner", daemon=True)
            self._thread.start()
        self._queue.put(files)

    async def flush(self) -> None:
        """Wait until everything handed over so far has been removed."""
        if self._thread is None:
            return
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        self._queue.put(_Flush(loop, done))
        await done

    async def close(self) -> None:
        """Remove what is queued, then end the thread."""
        self._closed = True
        thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(None)
            await asyncio.to_thread(thread.join)

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            if isinstance(item, _Flush):
                with contextlib.suppress(RuntimeError):  # its event loop has closed: nobody waits any more
                    item.loop.call_soon_threadsafe(_resolve, item.done)
            else:
                self._remove_now(item)

    def _remove_now(self, files: AttemptFiles) -> None:
        try:
            self.removed += remove_after_recording(files)
        except OSError as error:
            logger.warning("could not remove the spent files of %s: %s", files.directory, error)
