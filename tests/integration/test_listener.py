"""The process's one LISTEN connection against a real PostgreSQL: notifications reach every
callback of their channel, and after the connection is cut it comes back by itself and calls
every callback once (what was sent meanwhile is lost)."""

from __future__ import annotations

import uuid

import asyncpg
import pytest

from relayforge.db.listener import Listener
from tests.support import create_database, drop_database, eventually


@pytest.fixture
async def url(template_db):
    name, url = await create_database(template_db)
    yield url
    await drop_database(name)


async def test_notifications_and_a_reconnection_after_the_connection_is_cut(url):
    channel, other = f"rf_test_{uuid.uuid4().hex[:8]}", f"rf_test_{uuid.uuid4().hex[:8]}"
    calls: dict[str, int] = {channel: 0, other: 0}
    listener = Listener(url)
    listener.on(channel, lambda: calls.__setitem__(channel, calls[channel] + 1))
    listener.on(other, lambda: calls.__setitem__(other, calls[other] + 1))
    conn = await asyncpg.connect(url)
    try:
        await listener.start()
        assert listener.connected and listener.connects == 1
        await conn.execute(f"NOTIFY {channel}")
        await eventually(lambda: calls[channel] == 1)
        assert calls[other] == 0  # only its own channel's callbacks

        await conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE query LIKE $1", f'LISTEN "{other}"%')
        await eventually(lambda: listener.connects == 2, timeout=10)
        assert calls == {channel: 2, other: 1}  # each called once on the way back
        await conn.execute(f"NOTIFY {other}")
        await eventually(lambda: calls[other] == 2)
    finally:
        await listener.close()
        await conn.close()
    assert not listener.connected


async def test_a_database_that_is_not_there_yet_does_not_stop_the_start():
    listener = Listener("postgresql://postgres@127.0.0.1:1/none")
    listener.on("anything", lambda: None)
    await listener.start()  # logged and retried in the background
    assert not listener.connected and listener.connects == 0
    await listener.close()
