"""Fixtures the integration tests share."""

from __future__ import annotations

import asyncpg
import pytest

from tests.support import create_database, drop_database


@pytest.fixture
async def database(template_db):
    """A pool on a fresh database cloned from the migrated template."""
    name, url = await create_database(template_db)
    pool = await asyncpg.create_pool(url, min_size=1, max_size=3)
    yield pool
    await pool.close()
    await drop_database(name)
