"""Assembles the parts a process runs for its mode, and starts and stops them in order.

    ingest   pool, secret store, ingest writer            (never talks to the broker)
    relay    pool, broker, outbox relay, upkeep (job lease recovery, stranded jobs, retention)
    consume  pool, broker, job consumer
    all      all of the above; the in-process broker when AMQP__URL is unset
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field

import asyncpg

from relayforge import deliveries, jobs, retention
from relayforge.broker import Broker
from relayforge.consumer import Consumer
from relayforge.db.listener import Listener
from relayforge.db.pool import create_pool
from relayforge.ingest import IngestWriter
from relayforge.ingest.sources import TenantSources
from relayforge.jobs import HandlerRegistry
from relayforge.observability import metrics
from relayforge.relay import Relay
from relayforge.security.secrets import SecretCipher, SecretVerifiers
from relayforge.settings import MODES, Settings, master_key
from relayforge.shares import Share, ShareLease
from relayforge.stores import Stores
from relayforge.upkeep import Upkeep

log = logging.getLogger(__name__)

CLOSE_TIMEOUT_SECONDS = 5.0
LAG_REFRESH_SECONDS = 5.0  # no more often than a scrape interval (15 s) needs
POOL_SAMPLE_SECONDS = 1.0


async def _bounded(closing: Awaitable[object], what: str) -> bool:
    """Await a close step for a few seconds at most; say whether it finished."""
    try:
        await asyncio.wait_for(closing, CLOSE_TIMEOUT_SECONDS)
        return True
    except Exception as exc:  # stopping anyway: log and go on
        log.warning("close step did not finish", extra={"what": what, "error": repr(exc)})
        return False


@dataclass
class Runtime:
    settings: Settings
    mode: str
    pool: asyncpg.Pool | None = None
    stores: Stores | None = None
    cipher: SecretCipher | None = None
    verifiers: SecretVerifiers | None = None
    sources: TenantSources | None = None
    writer: IngestWriter | None = None
    broker: Broker | None = None
    relay: Relay | None = None
    upkeep: Upkeep | None = None
    consumer: Consumer | None = None
    listener: Listener | None = None
    # this process's share of the deployment's limits (shares.py)
    ingest_share: Share = field(default_factory=Share)
    ingest_lease: ShareLease | None = None
    consume_lease: ShareLease | None = None
    _lag_due: float = 0.0
    _pool_sampler: asyncio.Task[None] | None = None

    @property
    def ingests(self) -> bool:
        return "ingest" in MODES[self.mode]

    @property
    def relays(self) -> bool:
        return "relay" in MODES[self.mode]

    @property
    def consumes(self) -> bool:
        return "consume" in MODES[self.mode]

    async def start(self) -> None:
        s = self.settings
        # bad handlers fail fast
        registry = HandlerRegistry(s.worker.handlers) if self.consumes else None
        self.pool = await create_pool(
            s.database.url, s.database.max_connections,
            count_statement=lambda name: metrics.child(metrics.DB_STATEMENTS, name).inc(),
            statement_cache=s.database.statement_cache)
        self.stores = stores = Stores(self.pool)
        # a new day may have begun while every process was down
        await retention.ensure_partitions(stores, s.retention)
        self.listener = listener = Listener(s.database.listen_url or s.database.url)
        self._pool_sampler = asyncio.create_task(self._sample_pool(), name="pool-sampler")
        self.cipher = SecretCipher(master_key(s))
        if self.ingests:
            from relayforge.connectors import CONNECTORS

            self.verifiers = SecretVerifiers(
                stores, self.cipher, {name: c.env_secret(s) for name, c in CONNECTORS.items()},
                signing_key=lambda provider, secret: CONNECTORS[provider].signing_key(secret)
                if provider in CONNECTORS else secret.encode())
            self.verifiers.watch(listener)
            self.sources = TenantSources(stores)
            self.sources.watch(listener)
            self.writer = IngestWriter(stores, s)
            await self.writer.start()
            self.ingest_lease = ShareLease(stores, "ingest", self.ingest_share)
            await self.ingest_lease.start()
        if self.relays or self.consumes:
            self.broker = self._make_broker()
            await self.broker.connect()
            if self.broker.name == "in-process":
                rearmed = await stores.outbox.requeue_volatile()
                if rearmed:
                    log.info("re-armed jobs for the in-process broker", extra={"count": rearmed})
        if self.consumes:
            assert self.broker is not None and registry is not None
            from relayforge.destinations.worker import DeliveryWorker

            self.consume_lease = ShareLease(stores, "consume", Share())
            await self.consume_lease.start()
            self.consumer = Consumer(stores, self.broker, s, registry, DeliveryWorker(
                stores, s, self.cipher, self.consume_lease.share))
            await self.consumer.start()
            if self.writer is not None and s.worker.begin_at_ingest:
                self.writer.hand_off = self.consumer
        if self.relays:
            assert self.broker is not None
            self.relay = Relay(stores, self.broker, s, listener)
            await self.relay.start()
            self.upkeep = Upkeep(stores, s)
            await self.upkeep.start()
        await listener.start()  # one LISTEN connection for every part that watches

    def _make_broker(self) -> Broker:
        if self.settings.amqp.url:
            from relayforge.broker.amqp import AmqpBroker

            return AmqpBroker(self.settings.amqp.url, self.settings.amqp,
                              connection_name=f"relayforge {self.mode} {self.settings.amqp.queue}")
        from relayforge.broker.local import LocalBroker

        return LocalBroker()

    async def stop(self) -> None:
        """Stop taking work first, finish what is in hand, then close connections."""
        if self.writer is not None:
            await self.writer.close()
        if self.consumer is not None:
            await self.consumer.stop(self.settings.worker.job_timeout_seconds)
        for part in (self.relay, self.upkeep):
            if part is not None:
                await part.stop()
        for lease in (self.ingest_lease, self.consume_lease):  # shares go back at once
            if lease is not None:
                await _bounded(lease.stop(), "limit share")
        if self.broker is not None:
            await _bounded(self.broker.close(), "broker")
        if self.listener is not None:
            await _bounded(self.listener.close(), "listener")
        if self._pool_sampler is not None:
            self._pool_sampler.cancel()
        if self.pool is not None:
            # close() waits for every connection to come back; one broken mid-operation never
            # does, so a graceful stop falls back to terminating them.
            if not await _bounded(self.pool.close(), "database pool"):
                self.pool.terminate()

    async def refresh_lag(self) -> None:
        """The pipeline lag gauges, read at most every LAG_REFRESH_SECONDS (on /metrics)."""
        now = time.monotonic()
        if self.stores is None or now < self._lag_due:
            return
        self._lag_due = now + LAG_REFRESH_SECONDS
        try:
            lag = await self.stores.outbox.lag()
        except Exception as exc:  # /metrics answers anyway, with the last values
            log.warning("pipeline lag not read", extra={"error": repr(exc)})
            return
        metrics.OUTBOX_PENDING.set(lag.outbox_pending)
        metrics.OUTBOX_OLDEST_AGE.set(max(0.0, lag.outbox_oldest_age or 0.0))
        for job_status in jobs.WAITING:
            metrics.JOBS_WAITING.labels(job_status).set(getattr(lag, job_status))
        metrics.JOBS_OLDEST_WAITING_AGE.set(max(0.0, lag.oldest_waiting_age or 0.0))
        try:
            delivery_lag = await self.stores.deliveries.lag()
        except Exception as exc:
            log.warning("delivery lag not read", extra={"error": repr(exc)})
        else:
            metrics.DESTINATIONS_CIRCUIT_OPEN.set(delivery_lag.open_circuits)
            for status in deliveries.WAITING:
                metrics.DELIVERIES_WAITING.labels(status).set(getattr(delivery_lag, status))
            metrics.DELIVERIES_OLDEST_WAITING_AGE.set(
                max(0.0, delivery_lag.oldest_waiting_age or 0))
        if self.broker is not None:
            try:
                for queue, count in (await self.broker.depths()).items():
                    metrics.BROKER_QUEUE_MESSAGES.labels(queue).set(count)
            except Exception as exc:
                log.warning("broker queue depths not read", extra={"error": repr(exc)})

    async def _sample_pool(self) -> None:
        """Connections lent out, every second: each worker's own value, summed on scrape."""
        assert self.pool is not None
        metrics.DB_POOL_SIZE.set(self.pool.get_max_size())
        while True:
            metrics.DB_POOL_IN_USE.set(self.pool.get_size() - self.pool.get_idle_size())
            await asyncio.sleep(POOL_SAMPLE_SECONDS)

    async def check_database(self) -> None:
        assert self.stores is not None
        await self.stores.ping()

    async def check_broker(self) -> None:
        if self.broker is None:
            raise ConnectionError("broker not started")
        await self.broker.check()
