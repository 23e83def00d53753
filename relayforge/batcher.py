"""Group commit, in general: concurrent callers each submit one item and wait; a few writer
tasks take up to `max_size` waiting items at a time and write them with one call. How many
writes happen grows with batches, not with items. Knows nothing of databases or webhooks."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class GroupCommitBatcher(Generic[T]):
    def __init__(self, write: Callable[[list[T]], Awaitable[None]], *, max_size: int,
                 writers: int) -> None:
        self._write = write
        self._max_size = max_size
        self._writers = writers
        self._waiting: list[tuple[T, asyncio.Future[None]]] = []
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        # Kept: get_running_loop() costs a getpid() system call per call on Python 3.11.
        self._loop = asyncio.get_running_loop()
        self._tasks = [asyncio.create_task(self._writer(), name=f"group-commit-{i}")
                       for i in range(self._writers)]

    async def close(self) -> None:
        """Write what is waiting, then stop the writers."""
        self._closing = True
        self._wake.set()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def submit(self, item: T) -> None:
        """Returns once the batch holding `item` is written; raises what that write raised."""
        if self._closing or self._loop is None:
            raise RuntimeError("the batcher is closed" if self._closing else
                               "the batcher is not started")
        future: asyncio.Future[None] = self._loop.create_future()
        self._waiting.append((item, future))
        self._wake.set()
        await future

    async def _writer(self) -> None:
        while True:
            if not self._waiting:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = self._waiting[: self._max_size]
            del self._waiting[: self._max_size]
            error: BaseException | None = None
            try:
                await self._write([item for item, _ in batch])
            except Exception as exc:
                error = exc
            for _, future in batch:
                if future.done():  # the caller went away; its item was written anyway
                    continue
                if error is None:
                    future.set_result(None)
                else:
                    future.set_exception(error)
