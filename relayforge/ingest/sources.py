"""The tenant-defined sources an ingest process knows: read once, cached, and dropped from the
cache the moment any process changes one (LISTEN relayforge_sources, with a TTL as the backstop
when the listener is down). Unknown names are cached too, so probing costs no query each. Only
names a source could have are looked up (the caller checks `valid_name`), and the cache is
bounded in bytes: the oldest entries go first."""

from __future__ import annotations

import logging
import time
import uuid

import msgspec

from relayforge.connectors.tenant import SourceDefinition, TenantSourceConnector
from relayforge.db.listener import Listener
from relayforge.stores import Stores

log = logging.getLogger(__name__)

NOTIFY_CHANNEL = "relayforge_sources"
CACHE_TTL_SECONDS = 30.0
CACHE_MAX_BYTES = 16 << 20
# What an entry holds besides its name and definition (key tuple, UUID, expiry, connector),
# measured with tracemalloc: about 600 bytes for a source with a small definition.
ENTRY_OVERHEAD_BYTES = 512


class TenantSources:
    def __init__(self, stores: Stores) -> None:
        self._sources = stores.sources
        # (tenant, name) -> (expires, connector or None, the entry's bytes), oldest first
        self._cache: dict[tuple[uuid.UUID, str],
                          tuple[float, TenantSourceConnector | None, int]] = {}
        self.cached_bytes = 0

    def watch(self, listener: Listener) -> None:
        """Clear the cache the moment any process changes a source (the TTL still bounds
        staleness while the listener is away, and it clears the cache when it is back)."""
        listener.on(NOTIFY_CHANNEL, self._clear)

    def _clear(self) -> None:
        self._cache.clear()
        self.cached_bytes = 0

    async def get(self, tenant_id: uuid.UUID, name: str) -> TenantSourceConnector | None:
        now = time.monotonic()
        key = (tenant_id, name)
        hit = self._cache.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        row = await self._sources.get(tenant_id=tenant_id, name=name)
        connector = None if row is None else TenantSourceConnector(
            name, msgspec.json.decode(row.definition, type=SourceDefinition))
        size = ENTRY_OVERHEAD_BYTES + len(name) + (len(row.definition) if row else 0)
        old = self._cache.pop(key, None)
        if old is not None:
            self.cached_bytes -= old[2]
        while self._cache and self.cached_bytes + size > CACHE_MAX_BYTES:
            oldest = next(iter(self._cache))
            self.cached_bytes -= self._cache.pop(oldest)[2]
        self._cache[key] = (now + CACHE_TTL_SECONDS, connector, size)
        self.cached_bytes += size
        return connector
