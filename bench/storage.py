"""What one accepted webhook costs PostgreSQL, next to a table that holds the same body once.

    .venv/bin/python bench/storage.py                  # 20 s of wrk at 64 connections
    .venv/bin/python bench/storage.py --seconds 40

`serve --mode ingest` on a fresh database takes unique signed 1,000-byte generic webhooks under
wrk (each from a new tenant, so each makes a job). Around the run: a CHECKPOINT first, then
`pg_current_wal_lsn()`, the summed `pg_total_relation_size` of every table (indexes and TOAST
included) and the CPU of PostgreSQL's processes. Divided by the webhooks recorded, those are the
figures. The baseline, in the same database and run: a minimal table `(id, tenant_id, body)`
given the same number of the same bodies through the project's own group commit (same batch
bound, same writers, 64 callers), measured the same way. Also printed: the statements the
server ran per webhook (its `db_statements_total`) and where the bytes went, table by table.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import uuid
from dataclasses import dataclass
from pathlib import Path

import asyncpg
from common import ROOT, SECRET, CpuAccount, Servers, database, per_unit, statements
from ingest_wrk import require_wrk, wrk

from relayforge.batcher import GroupCommitBatcher

OUT = ROOT / "bench" / "out"
BODY_BYTES = 1000
CALLERS = 64
# The server's defaults (INGEST__BATCH_MAX_SIZE, INGEST__WRITERS): the baseline commits alike.
BATCH_MAX_SIZE, WRITERS = 256, 2

TABLES = """
SELECT coalesce(pg_partition_root(c.oid), c.oid)::regclass::text AS relname,
       sum(pg_total_relation_size(c.oid))::bigint AS bytes
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg_toast%'
GROUP BY 1
"""  # a partition counts for its table

# Where the WAL went, by the relation of each record's first block (a partition counts for
# its table, an index partition for its index); records with no block (commits) are "other".
WAL_BY_RELATION = """
WITH r AS (
    SELECT record_length, substring(block_ref FROM 'rel \\d+/\\d+/(\\d+)')::oid AS node
    FROM pg_get_wal_records_info($1, pg_current_wal_lsn()))
SELECT coalesce(pg_partition_root(rel), rel)::regclass::text AS relname,
       sum(record_length)::bigint AS bytes
FROM (SELECT record_length, CASE WHEN node IS NULL THEN NULL
                                 ELSE pg_filenode_relation(0, node) END AS rel FROM r) x
GROUP BY 1
"""  # needs pg_walinspect (PostgreSQL 15+); the breakdown is left out where it is missing


@dataclass
class Cost:
    webhooks: int
    stored: dict[str, int]  # bytes added, by table
    wal: int
    postgres_cpu: float  # seconds
    wal_by_relation: dict[str, int]

    def per(self) -> tuple[float, float, float]:
        n = max(self.webhooks, 1)
        return sum(self.stored.values()) / n, self.wal / n, 1e6 * self.postgres_cpu / n


def body(i: int) -> bytes:
    """A JSON body of exactly BODY_BYTES bytes, unique by `i`."""
    head = f'{{"event":"bench.storage","data":{{"id":"{uuid.uuid4().hex}","n":{i},"pad":"'
    return (head + "x" * (BODY_BYTES - len(head) - 3) + '"}}').encode()


def signed_bodies(path: Path, n: int = 200) -> None:
    lines = []
    for i in range(n):
        raw = body(i)
        assert len(raw) == BODY_BYTES
        sig = hmac.new(SECRET.encode(), raw, hashlib.sha256).hexdigest()
        lines.append(f"{sig} {raw.decode()}")
    path.write_text("\n".join(lines) + "\n")


class Measured:
    """WAL, table sizes and PostgreSQL's CPU around a block (a CHECKPOINT first)."""

    def __init__(self, url: str) -> None:
        self._url = url
        self.cost: Cost | None = None

    async def _sizes(self, conn: asyncpg.Connection) -> dict[str, int]:
        return {r["relname"]: r["bytes"] for r in await conn.fetch(TABLES)}

    async def begin(self) -> None:
        conn = await asyncpg.connect(self._url)
        try:
            await conn.execute("CHECKPOINT")
            self._sizes0 = await self._sizes(conn)
            self._lsn0 = await conn.fetchval("SELECT pg_current_wal_lsn()")
        finally:
            await conn.close()
        self._cpu = CpuAccount(0).__enter__()

    async def end(self, count_sql: str) -> Cost:
        self._cpu.__exit__()
        conn = await asyncpg.connect(self._url)
        try:
            wal = await conn.fetchval("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1)::bigint",
                                      self._lsn0)
            sizes = await self._sizes(conn)
            webhooks = await conn.fetchval(count_sql)
            wal_by_relation = await self._wal_by_relation(conn)
        finally:
            await conn.close()
        stored = {t: b - self._sizes0.get(t, 0) for t, b in sizes.items()
                  if b != self._sizes0.get(t, 0)}
        return Cost(webhooks, stored, wal, self._cpu.spent["PostgreSQL"], wal_by_relation)

    async def _wal_by_relation(self, conn: asyncpg.Connection) -> dict[str, int]:
        try:
            await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_walinspect")
        except asyncpg.PostgresError:
            return {}
        return {r["relname"] or "other": r["bytes"]
                for r in await conn.fetch(WAL_BY_RELATION, self._lsn0)}


async def one_copy(url: str, n: int) -> Cost:
    """The same n bodies into `(id, tenant_id, body)`, group-committed as ingest commits."""
    conn = await asyncpg.connect(url)
    await conn.execute("CREATE TABLE bench_one_copy (id uuid PRIMARY KEY, tenant_id uuid NOT NULL,"
                       " body bytea NOT NULL)")
    await conn.close()
    pool = await asyncpg.create_pool(url, min_size=WRITERS, max_size=WRITERS)
    assert pool is not None

    async def write(rows: list[tuple[uuid.UUID, uuid.UUID, bytes]]) -> None:
        ids, tenants, bodies = zip(*rows, strict=True)
        await pool.execute("INSERT INTO bench_one_copy (id, tenant_id, body) "
                           "SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::bytea[])",
                           list(ids), list(tenants), list(bodies))

    batcher = GroupCommitBatcher(write, max_size=BATCH_MAX_SIZE, writers=WRITERS)
    measured = Measured(url)
    await measured.begin()
    batcher.start()
    todo = iter(range(n))

    async def caller() -> None:
        for i in todo:
            await batcher.submit((uuid.uuid4(), uuid.uuid4(), body(i)))

    await asyncio.gather(*(caller() for _ in range(CALLERS)))
    await batcher.close()
    try:  # measured while its backends live: an exited process's CPU can't be read
        return await measured.end("SELECT count(*) FROM bench_one_copy")
    finally:
        await pool.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=20)
    args = parser.parse_args()
    require_wrk()
    bodies_file = OUT / "storage-bodies.txt"
    signed_bodies(bodies_file)

    with database() as url:
        with Servers(url) as servers:
            ingest = servers.start("ingest")
            measured = Measured(url)
            before = statements(ingest.url)
            asyncio.run(measured.begin())
            result = wrk(ingest.url, args.seconds, CALLERS, bodies_file)
            ours = asyncio.run(measured.end(
                "SELECT count(*) FROM webhook_inbox WHERE accepted"))
            after = statements(ingest.url)
        base = asyncio.run(one_copy(url, ours.webhooks))

    n = ours.webhooks
    print(f"{n:,} webhooks recorded ({result.non_2xx} non-2xx of {result.requests:,}), "
          f"{BODY_BYTES:,}-byte bodies; baseline: {base.webhooks:,} rows of the same bodies")
    for (label, target), mine, theirs in zip(
            (("bytes stored", 1800), ("WAL bytes", 2200), ("PostgreSQL CPU µs", 70)),
            ours.per(), base.per(), strict=True):
        print(f"{label} per webhook: relayforge {mine:,.0f} (target <= {target:,}), "
              f"one-copy table {theirs:,.0f}, ratio {mine / theirs:.2f}"
              + (" (target <= 1.6)" if label == "bytes stored" else ""))
    print("  stored, by table: " + ", ".join(
        f"{t} {b / n:,.0f}" for t, b in sorted(ours.stored.items(), key=lambda x: -x[1])))
    if ours.wal_by_relation:
        print("  WAL, by relation: " + ", ".join(
            f"{t} {b / n:,.0f}"
            for t, b in sorted(ours.wal_by_relation.items(), key=lambda x: -x[1]) if b / n >= 1))
    print("  " + per_unit(before, after, n).format(unit="webhook"))


if __name__ == "__main__":
    main()
