"""The only door to SQL: one store per table family, each calling named queries from
db/sql/queries.sql with keyword arguments and returning typed rows.

`Stores(pool)` works on the pool; `async with stores.transaction() as tx` gives the same stores
on one connection inside a transaction, so writes across tables commit together.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

from relayforge.stores.apikeys import ApiKeyStore
from relayforge.stores.audit import AuditLog
from relayforge.stores.base import Db
from relayforge.stores.destinations import DeliveryStore, DestinationStore
from relayforge.stores.inbox import InboxStore
from relayforge.stores.ingest import IngestStore
from relayforge.stores.jobs import JobStore
from relayforge.stores.leases import LeaseStore
from relayforge.stores.outbox import OutboxStore
from relayforge.stores.retention import RetentionStore
from relayforge.stores.secrets import SecretStore
from relayforge.stores.sessions import SessionStore
from relayforge.stores.sources import SourceStore
from relayforge.stores.tenants import TenantStore


class Stores:
    def __init__(self, db: Db) -> None:
        self.db = db
        self.jobs = JobStore(db)
        self.inbox = InboxStore(db)
        self.outbox = OutboxStore(db)
        self.ingest = IngestStore(db)
        self.secrets = SecretStore(db)
        self.api_keys = ApiKeyStore(db)
        self.audit = AuditLog(db)
        self.retention = RetentionStore(db)
        self.destinations = DestinationStore(db)
        self.deliveries = DeliveryStore(db)
        self.sources = SourceStore(db)
        self.sessions = SessionStore(db)
        self.leases = LeaseStore(db)
        self.tenants = TenantStore(db)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Stores]:
        if isinstance(self.db, asyncpg.Connection):
            async with self.db.transaction():
                yield self
            return
        async with self.db.acquire() as conn, conn.transaction():
            yield Stores(conn)

    async def ping(self) -> None:
        await self.db.fetchval("SELECT 1")


__all__ = ["Stores"]
