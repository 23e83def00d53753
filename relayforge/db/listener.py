"""One LISTEN connection per process, for every channel its parts watch (the relay's outbox,
the secret and tenant-source caches). It comes back by itself: after PostgreSQL restarts, a
failover, or `pg_terminate_backend`, it reconnects with a growing pause, and on each new
connection calls every callback once, since a notification sent while it was away is lost:
caches clear and the relay looks for due work, as if each had been told."""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Callable

import asyncpg

log = logging.getLogger(__name__)

FIRST_RETRY_SECONDS = 0.5
MAX_RETRY_SECONDS = 10.0
# How its connection shows in pg_stat_activity.
APPLICATION_NAME = "relayforge listener"
# A peer that vanished without closing the socket (a host gone, a cut network) is found by a
# query that gets no answer: one this often.
HEARTBEAT_SECONDS = 15.0


class Listener:
    def __init__(self, url: str) -> None:
        self._url = url
        self._callbacks: dict[str, list[Callable[[], None]]] = defaultdict(list)
        self._conn: asyncpg.Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self.connects = 0  # successful (re)connections so far

    def on(self, channel: str, callback: Callable[[], None]) -> None:
        """Call `callback()` on each notification on `channel`, and after each reconnection.
        Channels are registered before `start`."""
        self._callbacks[channel].append(callback)

    @property
    def connected(self) -> bool:
        return self._conn is not None and not self._conn.is_closed()

    async def start(self) -> None:
        """Connect (a failure is logged and retried in the background: the callers' TTLs and
        polls cover the wait) and keep the connection."""
        if not self._callbacks:
            return
        lost = await self._connect()
        self._task = asyncio.create_task(self._keep(lost), name="listener")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._conn is not None:
            self._conn.terminate()
            self._conn = None

    async def _connect(self) -> asyncio.Event | None:
        """A listening connection and the event set when it is lost, or None."""
        lost = asyncio.Event()
        try:
            conn = await asyncpg.connect(
                self._url, server_settings={"application_name": APPLICATION_NAME})
        except Exception as exc:  # noqa: BLE001 - any failure to connect means: retry later
            log.warning("listener unavailable, retrying", extra={"error": repr(exc)})
            return None
        try:
            conn.add_termination_listener(lambda _: lost.set())
            for channel in self._callbacks:
                await conn.add_listener(channel, self._notified)
        except Exception as exc:  # noqa: BLE001
            conn.terminate()
            log.warning("listener unavailable, retrying", extra={"error": repr(exc)})
            return None
        self._conn = conn
        self.connects += 1
        if self.connects > 1:
            log.warning("listener reconnected", extra={"channels": sorted(self._callbacks)})
            for callbacks in self._callbacks.values():  # what was missed meanwhile
                for callback in callbacks:
                    callback()
        return lost

    def _notified(self, _conn: object, _pid: int, channel: str, _payload: str) -> None:
        for callback in self._callbacks.get(channel, ()):
            callback()

    async def _keep(self, lost: asyncio.Event | None) -> None:
        retry = FIRST_RETRY_SECONDS
        while True:
            if lost is not None:
                retry = FIRST_RETRY_SECONDS
                await self._until_lost(lost)
                if self._conn is not None:
                    self._conn.terminate()
                    self._conn = None
                log.warning("listener connection lost, reconnecting")
            else:
                await asyncio.sleep(retry)
                retry = min(retry * 2, MAX_RETRY_SECONDS)
            lost = await self._connect()

    async def _until_lost(self, lost: asyncio.Event) -> None:
        while True:
            try:
                await asyncio.wait_for(lost.wait(), HEARTBEAT_SECONDS)
                return
            except TimeoutError:
                pass
            conn = self._conn
            if conn is None or conn.is_closed():
                return
            try:
                await conn.execute("SELECT 1", timeout=HEARTBEAT_SECONDS)
            except Exception:  # noqa: BLE001 - no answer: the connection is gone
                return
