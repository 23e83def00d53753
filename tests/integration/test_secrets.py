"""The secret store against a real PostgreSQL: encryption at rest, DB before env, rotation
overlap, and change notification clearing every cache at once."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import uuid

import asyncpg
import pytest
from cryptography.exceptions import InvalidTag

from relayforge.actions import retire_secret, set_secret
from relayforge.db.listener import Listener
from relayforge.roles import CLI
from relayforge.security.secrets import SecretCipher, SecretVerifiers
from relayforge.settings import load_settings
from relayforge.stores import Stores
from tests.support import create_database, drop_database, eventually, run_sync


def mac(key: bytes) -> str:
    return hmac.new(key, b"x", hashlib.sha256).hexdigest()


@pytest.fixture
async def url(template_db):
    name, url = await create_database(template_db)
    yield url
    await drop_database(name)


# no env fallback for generic: a first rotation keeps nothing beside the new secret
NO_ENV_SECRET = load_settings({"WEBHOOKS__GENERIC_HMAC_SECRET": ""}, dotenv=False)


async def rotate(stores, cipher, tenant, secret):
    return await set_secret(stores, cipher, NO_ENV_SECRET, CLI, tenant_id=tenant,
                            provider="generic", secret=secret, previous_expires_in_seconds=3600)


async def retire(stores, tenant, secret_id):
    return await retire_secret(stores, CLI, tenant_id=tenant, provider="generic",
                               secret_id=secret_id)


async def _equals(value, expected) -> bool:  # type: ignore[no-untyped-def]
    return sorted(await value) == sorted(expected)


async def test_rotation_store_and_notify(url):
    cipher = SecretCipher(b"k" * 32)
    pool = await asyncpg.create_pool(url, min_size=1, max_size=3)
    stores = Stores(pool)
    store = SecretVerifiers(stores, cipher, {"generic": "env-secret"})
    listener = Listener(url)
    store.watch(listener)
    await listener.start()
    tenant = uuid.uuid4()
    try:
        [env_key] = await store.verifiers(tenant, "generic")
        assert env_key.hexdigest(b"x") == mac(b"env-secret")
        old = await rotate(stores, cipher, tenant, "old")

        async def digests() -> list[str]:
            return [k.hexdigest(b"x") for k in await store.verifiers(tenant, "generic")]

        # NOTIFY reaches the listener and clears the cache
        await eventually(lambda: _equals(digests(), [mac(b"old")]))
        await rotate(stores, cipher, tenant, "new")
        async with pool.acquire() as conn:
            listed = await stores.secrets.list(tenant_id=tenant, provider="generic")
            assert len(listed) == 2 and listed[1].id == old.id and listed[1].expires_at
            row = await conn.fetchrow("SELECT nonce, ciphertext FROM tenant_provider_secrets "
                                      "WHERE id = $1", old.id)
            assert b"old" not in bytes(row["ciphertext"])
            # bound to its tenant: another tenant's row can't be decrypted with this one's
            with pytest.raises(InvalidTag):
                cipher.decrypt(uuid.uuid4(), "generic", row["nonce"], row["ciphertext"])
        await eventually(lambda: _equals(digests(), [mac(b"new"), mac(b"old")]))
        await retire(stores, tenant, old.id)
        for s in await stores.secrets.list(tenant_id=tenant, provider="generic"):
            await retire(stores, tenant, s.id)
        async with pool.acquire() as conn:
            await conn.execute(
                "INSERT INTO tenant_provider_secrets (id, tenant_id, provider, nonce, "
                "ciphertext, fingerprint, expires_at) SELECT gen_random_uuid(), $1, "
                "'generic', nonce, ciphertext, fingerprint, now() - interval '1 s' "
                "FROM (SELECT $2::bytea AS nonce, $3::bytea AS ciphertext, 'f' AS "
                "fingerprint) x", tenant, row["nonce"], row["ciphertext"])
        # only an expired DB secret left: no key verifies, and the env fallback stays off
        await eventually(lambda: _equals(digests(), []))
    finally:
        await listener.close()
        await pool.close()


def test_run_sync_helper_runs_inside_a_loop():
    async def inner() -> int:
        return run_sync(asyncio.sleep(0, result=3))

    assert asyncio.run(inner()) == 3


async def test_the_tenant_source_cache_is_bounded_in_bytes_oldest_first(url, monkeypatch):
    """Unknown names are cached (probing costs no query each), within a byte budget: once it
    is full the oldest entries go, never the whole cache at once."""
    from relayforge.ingest import sources

    monkeypatch.setattr(sources, "CACHE_MAX_BYTES", 100 * (sources.ENTRY_OVERHEAD_BYTES + 64))
    pool = await asyncpg.create_pool(url, min_size=1, max_size=2)
    cache = sources.TenantSources(Stores(pool))
    tenant = uuid.uuid4()
    try:
        for i in range(250):
            assert await cache.get(tenant, f"{i:064d}") is None
            assert cache.cached_bytes <= sources.CACHE_MAX_BYTES
        kept = list(cache._cache)
        assert len(kept) == 100 and kept[0][1] == f"{150:064d}"  # the newest hundred
        assert cache.cached_bytes == 100 * (sources.ENTRY_OVERHEAD_BYTES + 64)
    finally:
        await pool.close()
