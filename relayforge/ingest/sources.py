"""The tenant-defined sources an ingest process knows: read once, cached, and dropped from the
cache the moment any process changes one (LISTEN relayforge_sources, with a TTL as the backstop
when the listener is down). Unknown names are cached too, so probing costs no query each."""

from __future__ import annotations

import logging
import time
import uuid

import asyncpg
import msgspec

from relayforge.connectors.tenant import SourceDefinition, TenantSourceConnector
from relayforge.stores import Stores

log = logging.getLogger(__name__)

NOTIFY_CHANNEL = "relayforge_sources"
CACHE_TTL_SECONDS = 30.0
CACHE_MAX_ENTRIES = 50_000


class TenantSources:
    def __init__(self, stores: Stores) -> None:
        self._sources = stores.sources
        self._cache: dict[tuple[uuid.UUID, str], tuple[float, TenantSourceConnector | None]] = {}
        self._listener: asyncpg.Connection | None = None

    async def start(self, url: str) -> None:
        try:
            self._listener = await asyncpg.connect(url)
            await self._listener.add_listener(NOTIFY_CHANNEL, lambda *_: self._cache.clear())
        except (OSError, asyncpg.PostgresError) as exc:  # the TTL still bounds staleness
            log.warning("source change listener unavailable", extra={"error": str(exc)})

    async def close(self) -> None:
        if self._listener is not None:
            await self._listener.close()

    async def get(self, tenant_id: uuid.UUID, name: str) -> TenantSourceConnector | None:
        now = time.monotonic()
        hit = self._cache.get((tenant_id, name))
        if hit is not None and hit[0] > now:
            return hit[1]
        row = await self._sources.get(tenant_id=tenant_id, name=name)
        connector = None if row is None else TenantSourceConnector(
            name, msgspec.json.decode(row.definition, type=SourceDefinition))
        if len(self._cache) >= CACHE_MAX_ENTRIES:
            self._cache.clear()
        self._cache[(tenant_id, name)] = (now + CACHE_TTL_SECONDS, connector)
        return connector
