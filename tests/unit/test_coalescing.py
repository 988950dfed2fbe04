"""Group commit: concurrent calls batched into writes, results mapped back, failures and cancellations kept apart."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection, Sequence

import pytest

from service.db.coalescing import Coalescer

# Loop turns enough for every ready task to reach its next await (a task created now runs within one or two).
TURNS = 5
WAIT_SECONDS = 5.0


async def _let_ready_tasks_run() -> None:
    for _ in range(TURNS):
        await asyncio.sleep(0)


class RecordingWriter:
    """A `write_batch`: records each batch it is given, can hold batches open, and refuses items it is told to.

    `refuse_batches_of_several` stands for a hiccup that fails a whole batch although every item alone is fine.
    """

    def __init__(
        self, *, refused: Collection[int] = (), refuse_batches_of_several: bool = False, held: bool = False
    ) -> None:
        self.batches: list[list[int]] = []
        self.refused = set(refused)
        self.refuse_batches_of_several = refuse_batches_of_several
        self.gate = asyncio.Event()
        if not held:
            self.gate.set()

    async def __call__(self, items: Sequence[int]) -> list[str]:
        self.batches.append(list(items))
        await self.gate.wait()
        bad = [item for item in items if item in self.refused]
        if bad:
            raise ValueError(f"refused {bad} of {len(items)}")
        if self.refuse_batches_of_several and len(items) > 1:
            raise ConnectionError(f"hiccup on a batch of {len(items)}")
        return [f"written {item}" for item in items]


def _coalescer(writer: RecordingWriter, *, max_batch: int = 256) -> Coalescer[int, str]:
    return Coalescer(writer, name="test write", max_batch=max_batch)


async def test_the_first_call_writes_at_once_and_calls_arriving_meanwhile_form_the_next_batch() -> None:
    writer = RecordingWriter(held=True)
    coalescer = _coalescer(writer)

    first = asyncio.create_task(coalescer(0))
    await _let_ready_tasks_run()
    # No timer, no waiting for company: the lone call is being written already.
    assert writer.batches == [[0]]
    others = [asyncio.create_task(coalescer(item)) for item in range(1, 6)]
    await _let_ready_tasks_run()
    assert writer.batches == [[0]]  # they wait for the write under way, not start their own
    writer.gate.set()

    async with asyncio.timeout(WAIT_SECONDS):
        results = await asyncio.gather(first, *others)

    assert writer.batches == [[0], [1, 2, 3, 4, 5]]
    assert results == [f"written {item}" for item in range(6)]


async def test_each_caller_gets_the_result_at_its_own_position_in_the_batch() -> None:
    writer = RecordingWriter()
    coalescer = _coalescer(writer)
    items = [7, 3, 11, 0, 42, 5, 19]

    async with asyncio.timeout(WAIT_SECONDS):
        results = await asyncio.gather(*(coalescer(item) for item in items))

    assert writer.batches == [items]  # one batch, in the order the calls were made
    assert results == [f"written {item}" for item in items]


async def test_a_lone_call_is_written_as_a_batch_of_one() -> None:
    writer = RecordingWriter()
    coalescer = _coalescer(writer)

    async with asyncio.timeout(WAIT_SECONDS):
        assert await coalescer(1) == "written 1"
        assert await coalescer(2) == "written 2"

    assert writer.batches == [[1], [2]]


async def test_no_batch_is_larger_than_max_batch() -> None:
    writer = RecordingWriter()
    coalescer = _coalescer(writer, max_batch=3)

    async with asyncio.timeout(WAIT_SECONDS):
        results = await asyncio.gather(*(coalescer(item) for item in range(8)))

    assert writer.batches == [[0, 1, 2], [3, 4, 5], [6, 7]]
    assert results == [f"written {item}" for item in range(8)]


async def test_one_bad_item_in_a_batch_fails_its_own_caller_only() -> None:
    writer = RecordingWriter(refused={2})
    coalescer = _coalescer(writer)

    async with asyncio.timeout(WAIT_SECONDS):
        results = await asyncio.gather(*(coalescer(item) for item in range(5)), return_exceptions=True)

    # The batch failed as a whole, so every item was written again alone.
    assert writer.batches == [[0, 1, 2, 3, 4], [0], [1], [2], [3], [4]]
    assert results[:2] == ["written 0", "written 1"]
    assert results[3:] == ["written 3", "written 4"]
    error = results[2]
    assert isinstance(error, ValueError)
    assert str(error) == "refused [2] of 1"  # its own failure, from writing it alone


async def test_a_batch_that_fails_as_a_whole_still_gives_every_caller_its_result() -> None:
    writer = RecordingWriter(refuse_batches_of_several=True)
    coalescer = _coalescer(writer)

    async with asyncio.timeout(WAIT_SECONDS):
        results = await asyncio.gather(*(coalescer(item) for item in range(3)))

    assert writer.batches == [[0, 1, 2], [0], [1], [2]]
    assert results == ["written 0", "written 1", "written 2"]


async def test_an_item_that_fails_alone_raises_its_error_to_its_caller_without_a_second_try() -> None:
    writer = RecordingWriter(refused={9})
    coalescer = _coalescer(writer)

    with pytest.raises(ValueError, match=r"^refused \[9\] of 1$"):
        async with asyncio.timeout(WAIT_SECONDS):
            await coalescer(9)

    assert writer.batches == [[9]]


async def test_the_coalescer_keeps_writing_and_batching_after_a_failure() -> None:
    writer = RecordingWriter(refused={9}, held=True)
    coalescer = _coalescer(writer)
    failing = asyncio.create_task(coalescer(9))
    await _let_ready_tasks_run()
    later = [asyncio.create_task(coalescer(item)) for item in (1, 2)]
    await _let_ready_tasks_run()
    writer.gate.set()

    async with asyncio.timeout(WAIT_SECONDS):
        with pytest.raises(ValueError, match=r"^refused \[9\] of 1$"):
            await failing
        assert await asyncio.gather(*later) == ["written 1", "written 2"]
        assert list(await asyncio.gather(coalescer(3), coalescer(4))) == ["written 3", "written 4"]

    assert writer.batches == [[9], [1, 2], [3, 4]]


async def test_cancelled_callers_leave_the_writer_and_the_other_callers_unharmed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    writer = RecordingWriter(held=True)
    coalescer = _coalescer(writer)
    being_written = asyncio.create_task(coalescer(0))
    await _let_ready_tasks_run()
    waiting = {item: asyncio.create_task(coalescer(item)) for item in (1, 2, 3)}
    await _let_ready_tasks_run()

    # One caller gives up while its item is being written, another while its item still waits for a batch.
    being_written.cancel()
    waiting[2].cancel()
    await _let_ready_tasks_run()
    writer.gate.set()

    async with asyncio.timeout(WAIT_SECONDS):
        assert await waiting[1] == "written 1"
        assert await waiting[3] == "written 3"
        for cancelled in (being_written, waiting[2]):
            with pytest.raises(asyncio.CancelledError):
                await cancelled
        assert await coalescer(4) == "written 4"

    # A cancelled caller does not take back an item already handed over: it is written with its batch.
    assert writer.batches == [[0], [1, 2, 3], [4]]
    assert [record for record in caplog.records if record.levelno >= logging.WARNING] == []


async def test_a_call_made_just_as_the_writer_finishes_is_written_by_a_new_writer() -> None:
    writer = RecordingWriter(held=True)
    coalescer = _coalescer(writer)
    first = asyncio.create_task(coalescer(0))
    await _let_ready_tasks_run()

    # Released and called in the same turn: the writer finds nothing pending and ends before this call is made,
    # but is still the current writer when it is.
    writer.gate.set()
    straggler = asyncio.create_task(coalescer(1))

    async with asyncio.timeout(WAIT_SECONDS):
        assert await first == "written 0"
        assert await straggler == "written 1"

    assert writer.batches == [[0], [1]]


async def test_a_write_returning_the_wrong_number_of_results_fails_its_callers_and_the_next_call_still_works(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[list[int]] = []

    async def write_one_result_too_few(items: Sequence[int]) -> list[str]:
        calls.append(list(items))
        return [f"written {item}" for item in items][: len(items) - 1] if len(items) > 1 else ["written alone"]

    coalescer: Coalescer[int, str] = Coalescer(write_one_result_too_few, name="short write")

    async with asyncio.timeout(WAIT_SECONDS):
        results = await asyncio.gather(coalescer(1), coalescer(2), return_exceptions=True)
        assert await coalescer(3) == "written alone"

    assert calls == [[1, 2], [3]]
    assert all(isinstance(result, RuntimeError) for result in results), results
    assert any("short write writer failed" in record.getMessage() for record in caplog.records)
