"""Assembles the parts a process runs for its mode, and starts and stops them in order."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import asyncpg

from relayforge.db.pool import create_pool
from relayforge.ingest import IngestWriter
from relayforge.security.secrets import SecretCipher, SecretStore
from relayforge.settings import Settings, master_key

log = logging.getLogger("relayforge")

MODES = ("all", "ingest", "relay", "consume")


@dataclass
class Runtime:
    settings: Settings
    mode: str
    pool: asyncpg.Pool | None = None
    cipher: SecretCipher | None = None
    secrets: SecretStore | None = None
    writer: IngestWriter | None = None
    services: list[object] = field(default_factory=list)

    @property
    def ingests(self) -> bool:
        return self.mode in ("all", "ingest")

    async def start(self) -> None:
        s = self.settings
        self.pool = await create_pool(s.database.url, s.database.max_connections)
        self.cipher = SecretCipher(master_key(s))
        if self.ingests:
            from relayforge.connectors import CONNECTORS

            self.secrets = SecretStore(
                self.pool, self.cipher, {name: c.env_secret(s) for name, c in CONNECTORS.items()}
            )
            await self.secrets.start(s.database.url)
            self.writer = IngestWriter(self.pool, s)
            await self.writer.start()

    async def stop(self) -> None:
        if self.writer is not None:
            await self.writer.close()
        if self.secrets is not None:
            await self.secrets.close()
        if self.pool is not None:
            await self.pool.close()

    async def check_database(self) -> None:
        assert self.pool is not None
        await self.pool.fetchval("SELECT 1")
