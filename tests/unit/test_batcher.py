"""The group-commit batcher on its own, without a database: batching, one error for its own
batch only, callers that go away, and close() writing what waits."""

from __future__ import annotations

import asyncio

import pytest

from relayforge.batcher import GroupCommitBatcher


class Recorder:
    def __init__(self, fail_when: int | None = None, pause: float = 0.0) -> None:
        self.batches: list[list[int]] = []
        self._fail_when = fail_when
        self._pause = pause

    async def write(self, batch: list[int]) -> None:
        await asyncio.sleep(self._pause)
        self.batches.append(batch)
        if self._fail_when in batch:
            raise RuntimeError(f"batch with {self._fail_when} failed")


async def test_concurrent_items_are_written_in_batches_of_at_most_max_size():
    recorder = Recorder(pause=0.01)
    batcher = GroupCommitBatcher(recorder.write, max_size=8, writers=2)
    batcher.start()
    await asyncio.gather(*(batcher.submit(i) for i in range(50)))
    await batcher.close()
    assert sorted(i for b in recorder.batches for i in b) == list(range(50))
    assert max(len(b) for b in recorder.batches) == 8
    assert len(recorder.batches) < 50  # grouped, not one write per item


async def test_an_error_reaches_only_the_callers_of_its_batch():
    recorder = Recorder(fail_when=3, pause=0.01)
    batcher = GroupCommitBatcher(recorder.write, max_size=4, writers=1)
    batcher.start()
    results = await asyncio.gather(*(batcher.submit(i) for i in range(12)),
                                   return_exceptions=True)
    await batcher.close()
    failed_batch = next(b for b in recorder.batches if 3 in b)
    for i, result in enumerate(results):
        if i in failed_batch:
            assert isinstance(result, RuntimeError)
        else:
            assert result is None


async def test_a_caller_that_goes_away_does_not_stop_the_write():
    recorder = Recorder(pause=0.05)
    batcher = GroupCommitBatcher(recorder.write, max_size=4, writers=1)
    batcher.start()
    waiting = asyncio.create_task(batcher.submit(1))
    await asyncio.sleep(0)
    waiting.cancel()
    await batcher.submit(2)
    await batcher.close()
    assert sorted(i for b in recorder.batches for i in b) == [1, 2]


async def test_close_writes_what_is_waiting_then_stops():
    recorder = Recorder()
    batcher = GroupCommitBatcher(recorder.write, max_size=100, writers=1)
    batcher.start()
    pending = [asyncio.create_task(batcher.submit(i)) for i in range(5)]
    await asyncio.sleep(0)
    await batcher.close()
    await asyncio.gather(*pending)
    assert sorted(i for b in recorder.batches for i in b) == list(range(5))
    with pytest.raises(RuntimeError, match="closed"):
        await batcher.submit(99)
