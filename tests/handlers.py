"""Job handlers the pipeline tests load through WORKER__HANDLERS, in the server's process.

`recording` sleeps TEST_HANDLER_SLEEP seconds, then records its completion in handler_runs, so a
test can count how many times each job's handler ran to the end.
"""

from __future__ import annotations

import asyncio
import os

import asyncpg

from relayforge.jobs import JobContext

_pool: asyncpg.Pool | None = None
WITNESS = "relayforge-test-witness"


async def recording(ctx: JobContext) -> None:
    global _pool
    await asyncio.sleep(float(os.environ.get("TEST_HANDLER_SLEEP", "0")))
    if _pool is None:
        # Named, so fault tests can cut Relayforge's connections and leave this witness alone.
        # No prepared statements kept: the URL may be a pooler's in transaction mode.
        _pool = await asyncpg.create_pool(os.environ["DATABASE__URL"], min_size=1, max_size=4,
                                          statement_cache_size=0,
                                          server_settings={"application_name": WITNESS})
    await _pool.execute("INSERT INTO handler_runs (job_id, attempt) VALUES ($1, $2)",
                        ctx.job_id, ctx.attempt)
