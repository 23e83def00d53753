"""Periodic upkeep, apart from the work itself: jobs whose consumer died (lease), jobs queued
whose message never arrived (RELAY__QUEUED_TIMEOUT_SECONDS), and retention. The relay process
runs it once a second; retention hourly: partitions made ahead (every process also makes them
at its start), expired ones dropped (first a minute after the start). The backlog gauges are
read on /metrics (runtime)."""

from __future__ import annotations

import asyncio
import logging
import time

from relayforge import retention
from relayforge.db.pool import on_connection_error
from relayforge.jobs import JobStatus
from relayforge.observability import metrics
from relayforge.settings import Settings
from relayforge.stores import Stores

log = logging.getLogger(__name__)

INTERVAL_SECONDS = 1.0
PRUNE_INTERVAL_SECONDS = 3600.0
FIRST_PRUNE_AFTER_SECONDS = 60.0
RECOVER_BATCH = 500


class Upkeep:
    def __init__(self, stores: Stores, settings: Settings) -> None:
        self._stores = stores
        self._settings = settings
        self._next_prune = time.monotonic() + FIRST_PRUNE_AFTER_SECONDS
        # the process made them at its start (runtime): next, an hour on
        self._next_partitions = time.monotonic() + PRUNE_INTERVAL_SECONDS
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="upkeep")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            try:
                await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database is away: try again next round
                await on_connection_error(self._stores.db, exc)
                log.warning("upkeep failed", extra={"error": repr(exc)})
            await asyncio.sleep(INTERVAL_SECONDS)

    async def run_once(self) -> None:
        await self.recover_expired_leases()
        await self.republish_stranded()
        if time.monotonic() >= self._next_partitions:
            self._next_partitions = time.monotonic() + PRUNE_INTERVAL_SECONDS
            await retention.ensure_partitions(self._stores, self._settings.retention)
        if time.monotonic() >= self._next_prune:
            self._next_prune = time.monotonic() + PRUNE_INTERVAL_SECONDS
            db = self._settings.database
            await retention.prune(self._settings, db.listen_url or db.url)

    async def recover_expired_leases(self) -> None:
        for job in await self._stores.jobs.recover_expired(limit=RECOVER_BATCH):
            metrics.JOBS_RECOVERED.inc()
            if job.status is JobStatus.DEAD_LETTERED:
                metrics.DLQ_MESSAGES.inc()
            log.warning("job lease expired", extra={"job_id": str(job.id), "now": job.status})
        recovered = await self._stores.deliveries.recover_expired(
            limit=RECOVER_BATCH, event_attempts=self._settings.worker.max_attempts)
        if recovered:
            metrics.JOBS_RECOVERED.inc(recovered)
            log.warning("delivery leases expired; retried", extra={"count": recovered})

    async def republish_stranded(self) -> None:
        stranded = await self._stores.jobs.republish_stranded(
            queued_for_seconds=float(self._settings.relay.queued_timeout_seconds),
            limit=RECOVER_BATCH)
        if stranded:
            metrics.JOBS_REPUBLISHED.inc(len(stranded))
            log.warning("queued jobs had no message; published again",
                        extra={"count": len(stranded), "job_id": str(stranded[0])})
        deliveries = await self._stores.deliveries.republish_stranded(
            older_than_seconds=float(self._settings.relay.queued_timeout_seconds),
            limit=RECOVER_BATCH)
        if deliveries:
            metrics.JOBS_REPUBLISHED.inc(deliveries)
            log.warning("queued deliveries had no message; published again",
                        extra={"count": deliveries})
