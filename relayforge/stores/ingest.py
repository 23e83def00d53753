"""What ingest writes: the batch statement (jobs, inbox), rows of refused requests,
Stripe event claims, and the daily quota ledger."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping, Sequence
from datetime import date, datetime
from typing import NamedTuple

from relayforge.stores.base import Q, Store


class NewItem(NamedTuple):
    """One verified, valid request to record: a row of the database type `ingest_row` (same
    fields, same order), so the batch goes to the statement as one array of them."""

    inbox_id: uuid.UUID
    job_id: uuid.UUID  # used when its dedup key is new
    tenant_id: uuid.UUID
    source: str
    event_type: str
    provider_event_id: str | None
    dedup_key: str
    payload_hash: str
    headers: str  # evidence headers, JSON object text
    body: bytes
    event: bytes | None  # the DomainEvent, JSON, when it can't be put together from the body
    request_id: str
    correlation_id: str
    trace_context: str  # JSON object text
    occurred_at_unix: int | None
    data_path: list[str] | None  # where the event's data sits in the body, when it does


def job_key(tenant_id: uuid.UUID, source: str, dedup_key: str) -> uuid.UUID:
    """The digest `jobs_key` holds a job's dedup key unique by: the first 16 bytes of the
    SHA-256 of the tenant's 16 bytes, the source, a zero byte and the key (in UTF-8), as
    relayforge_job_key computes it for rows written without it. Text PostgreSQL would refuse
    (a lone surrogate) is digested all the same and refused by the statement."""
    data = b"".join((tenant_id.bytes, source.encode("utf-8", "surrogatepass"), b"\0",
                     dedup_key.encode("utf-8", "surrogatepass")))
    return uuid.UUID(bytes=hashlib.sha256(data).digest()[:16])


class RefusedItem(NamedTuple):
    """A request refused after its signature verified: kept as evidence."""

    inbox_id: uuid.UUID
    tenant_id: uuid.UUID
    source: str
    event_type: str | None
    provider_event_id: str | None
    payload_hash: str
    headers: str
    body: bytes | None
    code: str
    request_id: str


class Accepted(NamedTuple):
    job_id: uuid.UUID
    job_created: bool
    destinations: str | None = None  # of a job started here: its tenant's, for fan-out


EventKey = tuple[uuid.UUID, str, str]  # (tenant, source, provider event id)


def _columns(keys: Sequence[EventKey]) -> tuple[list[uuid.UUID], list[str], list[str]]:
    """The keys as three arrays, in key order (rows are locked in one order everywhere)."""
    ordered = sorted(keys)
    return [k[0] for k in ordered], [k[1] for k in ordered], [k[2] for k in ordered]


class IngestStore(Store):
    async def job_keys_finished(self) -> bool:
        """Whether the upgrade that keys jobs by their dedup digest is finished: no process
        of the release before writes jobs any more."""
        return bool(await self._db.fetchval(Q["job_keys_finished"]))

    async def accept(self, *, items: Sequence[NewItem], max_attempts: int,
                     start_here: Sequence[uuid.UUID] = (), lease_seconds: float = 0.0,
                     release_before_gone: bool = False) -> list[Accepted]:
        """Record every item in one statement; results in the items' order. The new jobs
        among `start_here` (job ids) begin their first attempt, leased for `lease_seconds`.
        With `release_before_gone` (only once job_keys_finished: no process of the release
        before reads jobs any more) a job stores what it can read back instead: no dedup key
        that is its body's hash, no last delivery that is its first."""
        rows = await self._db.fetch(Q["ingest_accept"], items, max_attempts,  # ingest_row[]
                                    start_here, lease_seconds,
                                    [job_key(i.tenant_id, i.source, i.dedup_key) for i in items],
                                    release_before_gone)
        out: list[Accepted | None] = [None] * len(items)
        for row in rows:
            out[row["ord"]] = Accepted(row["job_id"], row["job_created"], row["destinations"])
        assert all(a is not None for a in out)
        return out  # type: ignore[return-value]

    async def insert_refused(self, *, items: Sequence[RefusedItem]) -> None:
        if not items:
            return
        columns = map(list, zip(*items, strict=True))  # in the statement's column order
        await self._db.execute(Q["inbox_insert_rejected"], *columns)

    async def seen_events(self, *, keys: Sequence[EventKey], span_days: int, at: datetime
                          ) -> set[EventKey]:
        """Which (tenant, source, event id) keys were already received: claimed in the
        generation of `span_days` days holding `at`, or in the one before."""
        rows = await self._db.fetch(Q["stripe_seen_events"], *_columns(keys), span_days, at)
        return {(r["tenant_id"], r["source"], r["event_id"]) for r in rows}

    async def claim_events(self, *, keys: Sequence[EventKey], span_days: int, at: datetime
                           ) -> set[EventKey]:
        """Claim event ids (in the ingest transaction): returns those claimed now.
        asyncpg.SerializationError when a claim raced another across a generation boundary:
        the transaction is to be tried again."""
        rows = await self._db.fetch(Q["stripe_claim_events"], *_columns(keys), span_days, at)
        return {(r["tenant_id"], r["source"], r["event_id"]) for r in rows}

    async def reserve_quota(self, *, wanted: Mapping[uuid.UUID, int], limit: int
                            ) -> tuple[dict[uuid.UUID, int], date]:
        """Grant what is left of each tenant's quota today, up to what was asked."""
        tenants = sorted(wanted)
        rows = await self._db.fetch(Q["quota_reserve"], tenants, [wanted[t] for t in tenants],
                                    limit)
        return {r["tenant_id"]: r["granted"] for r in rows}, rows[0]["quota_date"]

    async def refund_quota(self, *, counts: Mapping[uuid.UUID, int], quota_date: date) -> None:
        tenants = sorted(counts)
        await self._db.execute(Q["quota_refund"], tenants, [counts[t] for t in tenants],
                               quota_date)
