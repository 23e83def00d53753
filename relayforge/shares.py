"""This process's share of the deployment's limits.

A tenant's rate limit, the ingress limit and a destination's `rate_limit_per_second` and
`max_concurrency` are promises per deployment, yet enforced in each process's memory (a
database round trip per request would cost more than the request). So each ingest and consume
process holds a lease in PostgreSQL (`process_leases`), renewed every RENEW_SECONDS; with N live
leases of its kind, each process enforces 1/N of every rate and burst, and an exact split of
every concurrency limit (by its rank among them). When processes come and go the shares follow
within a renewal; one that dies gives its share back when its lease expires (LEASE_SECONDS).
Between renewals a share may be spent early, which is what the 10 % tolerance is for."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from relayforge.db.pool import on_connection_error
from relayforge.ids import process_identity
from relayforge.stores import Stores

log = logging.getLogger(__name__)

RENEW_SECONDS = 1.0
# A renewal may wait for a connection (a busy pool, a pooler's queue): a lease outlives a few
# late ones, or the others would count a live process out and the deployment would allow more.
LEASE_SECONDS = 5.0


class Share:
    """1/members of each rate; an exact split of each slot count. Alone: everything."""

    def __init__(self) -> None:
        self.members = 1
        self.rank = 0
        self._changed: list[Callable[[], None]] = []

    def on_change(self, callback: Callable[[], None]) -> None:
        self._changed.append(callback)

    def set(self, members: int, rank: int) -> None:
        members, rank = max(members, 1), min(max(rank, 0), max(members, 1) - 1)
        if (members, rank) == (self.members, self.rank):
            return
        self.members, self.rank = members, rank
        for callback in self._changed:
            callback()

    def of_rate(self, rate: float) -> float:
        return rate / self.members

    def of_slots(self, slots: int) -> int:
        """This process's part of `slots`, the parts of all processes adding up to it exactly:
        below one slot per process, the first ones by rank take one each, the others none."""
        return slots // self.members + (1 if self.rank < slots % self.members else 0)


class ShareLease:
    """Keeps this process's lease and its Share up to date. If the database can't be reached
    the share stays as it was (and the others count this process out once its lease
    expires: for a moment the deployment allows more, never less)."""

    def __init__(self, stores: Stores, kind: str, share: Share) -> None:
        self._stores = stores
        self._kind = kind
        self.share = share
        self.process_id = process_identity()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._renew()
        self._task = asyncio.create_task(self._run(), name=f"{self._kind}-lease")

    async def stop(self) -> None:
        """Give the share back now (the others take it at their next renewal)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        try:
            await self._stores.leases.release(process_id=self.process_id)
        except Exception as exc:  # noqa: BLE001 - it expires anyway
            log.warning("lease not released", extra={"error": repr(exc)})

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(RENEW_SECONDS)
            await self._renew()

    async def _renew(self) -> None:
        try:
            members, rank = await self._stores.leases.renew(
                process_id=self.process_id, kind=self._kind, seconds=LEASE_SECONDS)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the share stays as it was
            await on_connection_error(self._stores.db, exc)
            log.warning("limit share not renewed", extra={"error": repr(exc)})
            return
        if (members, rank) != (self.share.members, self.share.rank):
            log.info("limit share changed", extra={
                "kind": self._kind, "processes": members, "rank": rank})
        self.share.set(members, rank)
