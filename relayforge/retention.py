"""Retention: history is kept in day partitions (UTC), made days ahead and dropped whole once
RETENTION__*_DAYS have passed since their last day; tables not partitioned yet are pruned by
deletes. One process prunes at a time: a session lock, on a connection of its own straight to
PostgreSQL (DATABASE__LISTEN_URL, which bypasses a transaction-mode PgBouncer)."""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field

import asyncpg

from relayforge.observability import metrics
from relayforge.settings import RetentionSettings, Settings
from relayforge.stores import Stores
from relayforge.stores.retention import Partition, RetentionStore

log = logging.getLogger(__name__)

DAYS_AHEAD = 3  # partitions exist for today and the next three days
NO_PARTITION = "no partition of relation"  # PostgreSQL's refusal of a row with nowhere to go


@dataclass(slots=True)
class RetentionReport:
    deleted: dict[str, int] = field(default_factory=dict)  # rows, tables not partitioned yet
    dropped: list[Partition] = field(default_factory=list)  # whole partitions
    kept: list[Partition] = field(default_factory=list)  # expired, but a job still reads them


def is_missing_partition(exc: BaseException) -> bool:
    return isinstance(exc, asyncpg.CheckViolationError) and NO_PARTITION in str(exc)


def generation_spans(r: RetentionSettings) -> dict[str, int]:
    """The tables whose keys are kept in generations (a partition of N days each: a key is
    looked up in its generation and the one before), and N."""
    return {"stripe_event_idempotency": r.inbox_days}


async def ensure_partitions(stores: Stores, r: RetentionSettings, *, on_demand: bool = False
                            ) -> int:
    """Make the partitions from yesterday to DAYS_AHEAD days ahead that are missing; how many
    were made. On demand (a write found none) each one is an error to look into: the upkeep
    that makes them ahead did not run."""
    today = dt.datetime.now(dt.UTC).date()
    days = [today + dt.timedelta(days=n) for n in range(-1, DAYS_AHEAD + 1)]
    made = await stores.retention.ensure_partitions(first=days[0], last=days[-1])
    for table, span in generation_spans(r).items():
        made += [(table, day) for day in await stores.retention.ensure_generations(
            table=table, days=days, span_days=span)]
    for table, day in made:
        how = "on_demand" if on_demand else "ahead"
        metrics.child(metrics.PARTITIONS_CREATED, table, how).inc()
        if on_demand:
            log.error("partition made on demand: a write found none (is the relay's upkeep "
                      "running?)", extra={"table": table, "day": day.isoformat()})
        else:
            log.info("partition made", extra={"table": table, "day": day.isoformat()})
    return len(made)


async def prune(settings: Settings, url: str, *, dry_run: bool = False) -> RetentionReport | None:
    """Drop the expired partitions and delete the expired rows of the other tables, on a
    connection of its own to `url`; None while another process prunes. A dry run deletes in a
    transaction it rolls back and drops nothing: the report says what would go."""
    conn = await asyncpg.connect(url, statement_cache_size=0)
    try:
        store = RetentionStore(conn)
        if not await store.lock():
            return None
        try:
            return await _prune(store, conn, settings, dry_run)
        finally:
            await store.unlock()
    finally:
        await conn.close()


async def _prune(store: RetentionStore, conn: asyncpg.Connection, settings: Settings,
                 dry_run: bool) -> RetentionReport:
    r = settings.retention
    report = RetentionReport()
    tx = conn.transaction()
    await tx.start()
    try:
        report.deleted = await store.delete_expired(jobs_days=r.jobs_days,
                                                    outbox_days=r.outbox_days)
    except BaseException:
        await tx.rollback()
        raise
    await (tx.rollback() if dry_run else tx.commit())
    days = {"webhook_inbox": r.inbox_days, "admin_audit_log": r.audit_days,
            **generation_spans(r)}  # a generation goes N days after its last day
    now = dt.datetime.now(dt.UTC)
    for partition in await store.partitions():
        kept_days = days.get(partition.parent)
        if kept_days is None or partition.ends_at is None \
                or partition.ends_at > now - dt.timedelta(days=kept_days):
            continue
        if partition.parent == "webhook_inbox" and await store.inbox_partition_in_use(partition):
            report.kept.append(partition)  # its jobs' bodies: it goes when they have
            continue
        if not dry_run:
            await store.drop(partition)
            metrics.child(metrics.RETENTION_PARTITIONS_DROPPED, partition.parent).inc()
            log.info("retention dropped a partition",
                     extra={"table": partition.parent, "partition": partition.name})
        report.dropped.append(partition)
    if not dry_run:
        for table, rows in report.deleted.items():
            if rows:
                metrics.child(metrics.RETENTION_DELETED, table).inc(rows)
                log.info("retention deleted rows", extra={"table": table, "rows": rows})
        for table, oldest in (await store.oldest_rows()).items():
            age = (now - oldest).total_seconds() if oldest is not None else 0.0
            metrics.RETENTION_OLDEST_ROW_AGE.labels(table).set(max(0.0, age))
    return report
