"""Destinations, their signing secrets, and deliveries (an event on its way to a destination)."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
import orjson

from relayforge.deliveries import Outcome
from relayforge.events import DomainEvent
from relayforge.models import (
    DeliveryAttemptView,
    DeliveryDetail,
    DeliveryView,
    DestinationSecretView,
    DestinationView,
)
from relayforge.stores.base import Q, Store
from relayforge.stores.jobs import StartedJob


@dataclass(frozen=True, slots=True)
class DestinationFields:
    """What an admin writes; None leaves a field as it is on update."""

    name: str | None = None
    url: str | None = None
    enabled: bool | None = None
    filter_json: str | None = None
    header_names: list[str] | None = None
    headers_sealed: tuple[bytes, bytes] | None = None  # (nonce, ciphertext) of the values
    payload: str | None = None
    timeout_ms: int | None = None
    rate_limit_per_second: float | None = None
    max_concurrency: int | None = None
    cleared: tuple[str, ...] = ()  # optional fields set back to null


@dataclass(frozen=True, slots=True)
class Gate:
    enabled: bool
    paused: bool
    disabled_reason: str | None
    circuit: str
    max_concurrency: int | None
    rate_limit_per_second: float | None
    wait_until: dt.datetime | None
    probe: bool


@dataclass(frozen=True, slots=True)
class NewDelivery:
    id: uuid.UUID
    job_id: uuid.UUID
    destination_id: uuid.UUID
    tenant_id: uuid.UUID
    headers: str  # JSON: the trace context and correlation id it carries
    take: str  # by the consumer that fans it out: "started" now, "claimed" for later, or "left"


@dataclass(frozen=True, slots=True)
class FannedOut:
    id: uuid.UUID
    destination_id: uuid.UUID
    claimed: bool
    started: StartedDelivery | None  # its first attempt, begun by the fan-out


@dataclass(frozen=True, slots=True)
class Failed:
    circuit: str
    consecutive_failures: int
    failing_too_long: bool
    told: uuid.UUID | None  # the operational event raised when its circuit opened just now


@dataclass(frozen=True, slots=True)
class DueDelivery:
    id: uuid.UUID
    destination_id: uuid.UUID
    tenant_id: uuid.UUID
    attempt: int
    headers: str


@dataclass(frozen=True, slots=True)
class StartedDelivery:
    id: uuid.UUID
    job_id: uuid.UUID
    destination_id: uuid.UUID
    tenant_id: uuid.UUID
    attempts: int
    max_attempts: int
    headers: str
    url: str
    payload: str
    timeout_ms: int
    headers_nonce: bytes | None
    headers_ciphertext: bytes | None
    max_concurrency: int | None
    rate_limit_per_second: float | None
    source: str
    event_type: str
    event: bytes | None  # for an `event` destination; None only if the body is gone
    body: bytes | None
    content_type: str | None
    secret_nonces: list[bytes]
    secret_ciphertexts: list[bytes]


_EVENT_PARTS = ("provider_event_id", "occurred_at_unix", "data_path")


def _started(row: Any) -> StartedDelivery:
    """A started delivery from its row (delivery_requests' columns). Where the job stores no
    event, an `event` destination's is put together from the body here (a `raw` one needs none)."""
    fields = dict(row.items())
    parts = {k: fields.pop(k) for k in _EVENT_PARTS}
    if fields["event"] is None and fields["payload"] == "event" and fields["body"] is not None:
        fields["event"] = DomainEvent.stored(
            None, source=fields["source"], event_type=fields["event_type"],
            body=fields["body"], **parts).to_json()
    return StartedDelivery(**fields)


class _JobRequestParts:
    """What the deliveries of jobs just started take from their job (a fan-out's rows carry
    their destination's parts alone): its event's JSON made once per job, when one needs it."""

    def __init__(self, jobs: Mapping[uuid.UUID, StartedJob]) -> None:
        self._jobs = jobs
        self._events: dict[uuid.UUID, bytes] = {}

    def started(self, row: Any) -> StartedDelivery:
        job = self._jobs[row["job_id"]]
        event = None
        if row["payload"] == "event":
            event = self._events.get(job.id)
            if event is None:
                event = self._events[job.id] = job.event.to_json()
        fields = {k: v for k, v in row.items() if k not in ("claimed", "started")}
        return StartedDelivery(**fields, source=job.source, event_type=job.event.event_type,
                               event=event, body=job.body, content_type=job.content_type)


@dataclass(frozen=True, slots=True)
class FinishedAttempt:
    delivery_id: uuid.UUID
    attempt: int
    outcome: Outcome
    started_at: dt.datetime
    duration_ms: float
    status_code: int | None
    response_body: str | None


@dataclass(frozen=True, slots=True)
class DeliveryLag:
    open_circuits: int
    pending: int
    queued: int
    processing: int
    retrying: int
    dead_lettered: int
    oldest_waiting_age: float | None


@dataclass(frozen=True, slots=True)
class DestinationStats:
    attempts: int
    success_ratio: float
    mean_ms: float


def _destination(row: Any) -> DestinationView:
    return DestinationView(
        id=row["id"], tenant_id=row["tenant_id"], name=row["name"], url=row["url"],
        enabled=row["enabled"], paused=row["paused"], disabled_reason=row["disabled_reason"],
        filter=orjson.loads(row["filter_json"]), header_names=list(row["header_names"]),
        payload=row["payload"], timeout_ms=row["timeout_ms"],
        rate_limit_per_second=row["rate_limit_per_second"],
        max_concurrency=row["max_concurrency"], circuit=row["circuit"],
        consecutive_failures=row["consecutive_failures"], failing_since=row["failing_since"],
        circuit_opened_at=row["circuit_opened_at"],
        secrets=msgspec.json.decode(row["secrets_json"], type=list[DestinationSecretView]),
        created_at=row["created_at"], updated_at=row["updated_at"], kind=row["kind"])


class DestinationStore(Store):
    async def insert(self, *, destination_id: uuid.UUID, tenant_id: uuid.UUID,
                     fields: DestinationFields, kind: str = "events") -> None:
        f = fields
        nonce, sealed = f.headers_sealed or (None, None)
        await self._db.execute(
            Q["destination_insert"], destination_id, tenant_id, f.name, f.url,
            True if f.enabled is None else f.enabled, f.filter_json or "{}", f.header_names or [],
            nonce, sealed, f.payload or "raw", f.timeout_ms, f.rate_limit_per_second,
            f.max_concurrency, kind)

    async def operational_endpoint(self, *, tenant_id: uuid.UUID) -> uuid.UUID | None:
        """The id of the tenant's operational endpoint, if it has one."""
        found: uuid.UUID | None = await self._db.fetchval(Q["operational_endpoint_id"],
                                                         tenant_id)
        return found

    async def add_secret(self, *, secret_id: uuid.UUID, destination_id: uuid.UUID, nonce: bytes,
                         ciphertext: bytes, fingerprint: str) -> None:
        await self._db.execute(Q["destination_secret_insert"], secret_id, destination_id, nonce,
                               ciphertext, fingerprint)

    async def expire_secrets(self, *, destination_id: uuid.UUID, in_seconds: float) -> None:
        await self._db.execute(Q["destination_secrets_expire_previous"], destination_id,
                               float(in_seconds))

    async def get(self, *, tenant_id: uuid.UUID, destination_id: uuid.UUID
                  ) -> DestinationView | None:
        row = await self._db.fetchrow(Q["destinations_list"], tenant_id, destination_id)
        return None if row is None else _destination(row)

    async def of_tenant(self, *, tenant_id: uuid.UUID) -> list[DestinationView]:
        return [_destination(r) for r in await self._db.fetch(Q["destinations_list"], tenant_id,
                                                              None)]

    async def update(self, *, tenant_id: uuid.UUID, destination_id: uuid.UUID,
                     fields: DestinationFields) -> bool:
        f = fields
        nonce, sealed = f.headers_sealed or (None, None)
        return await self._db.fetchval(
            Q["destination_update"], tenant_id, destination_id, f.name, f.url, f.enabled,
            f.filter_json, f.header_names, nonce, sealed, f.payload, f.timeout_ms,
            f.rate_limit_per_second, f.max_concurrency, list(f.cleared)) is not None

    async def pause(self, *, tenant_id: uuid.UUID, destination_id: uuid.UUID,
                    paused: bool) -> bool:
        """Pause (deliveries held) or resume (the relay is woken for them); False: none such."""
        return await self._db.fetchval(Q["destination_pause"], tenant_id, destination_id,
                                       paused) is not None

    async def test_request(self, *, tenant_id: uuid.UUID, destination_id: uuid.UUID,
                           message_id: uuid.UUID, event: bytes, event_type: str
                           ) -> StartedDelivery | None:
        """A one-off attempt carrying `event` (JSON) to the destination, shaped as a delivery
        (its id, and its job's, are `message_id`), or None: no such destination."""
        row = await self._db.fetchrow(Q["destination_test_request"], tenant_id, destination_id)
        if row is None:
            return None
        return StartedDelivery(
            id=message_id, job_id=message_id, attempts=1, max_attempts=1, headers="{}",
            source="relayforge", event_type=event_type, event=event, body=event,
            content_type="application/json", **dict(row))

    async def delete(self, *, tenant_id: uuid.UUID, destination_id: uuid.UUID) -> bool:
        return await self._db.fetchval(Q["destination_delete"], tenant_id,
                                       destination_id) is not None

    async def gate(self, *, destination_id: uuid.UUID, probe_seconds: float,
                   attempt: int) -> Gate | None:
        row = await self._db.fetchrow(Q["destination_gate"], destination_id, probe_seconds,
                                      attempt)
        return None if row is None else Gate(**dict(row))

    async def failed(self, *, destination_id: uuid.UUID, open_after: int, probe_seconds: float,
                     disable_after_hours: float, event_attempts: int) -> Failed | None:
        """One more consecutive failure. `event_attempts`: those of the operational event's
        delivery when the circuit opens (here, in the same statement)."""
        row = await self._db.fetchrow(Q["destination_failed"], destination_id, open_after,
                                      probe_seconds, disable_after_hours, event_attempts)
        return None if row is None else Failed(**dict(row))

    async def recent_stats(self, *, tenant_id: uuid.UUID) -> dict[uuid.UUID, DestinationStats]:
        """Per destination of the tenant: its attempts of the last 24 hours."""
        rows = await self._db.fetch(Q["destination_recent_stats"], tenant_id)
        return {r["destination_id"]: DestinationStats(r["attempts"], r["success_ratio"],
                                                      r["mean_ms"]) for r in rows}

    async def disable(self, *, destination_id: uuid.UUID, reason: str,
                      event_attempts: int) -> int:
        """Disable it (an enabled one's operational event, with `event_attempts`, in the same
        statement) and dead-letter its waiting deliveries; how many were."""
        return len(await self._db.fetch(Q["destination_disable"], destination_id, reason,
                                        event_attempts))



class DeliveryStore(Store):
    async def fan_out(self, *, deliveries: Sequence[NewDelivery],
                      jobs: Mapping[uuid.UUID, StartedJob], max_attempts: int,
                      claim_seconds: float) -> list[FannedOut]:
        """Insert each delivery once per (job, destination); the new ones. A started or claimed
        delivery is left to its consumer for `claim_seconds`. `jobs`: the started jobs of the
        deliveries started here, whose event and body their requests carry."""
        rows = await self._db.fetch(
            Q["deliveries_fan_out"], [d.id for d in deliveries], [d.job_id for d in deliveries],
            [d.destination_id for d in deliveries], [d.tenant_id for d in deliveries],
            [d.headers for d in deliveries], [d.take for d in deliveries], max_attempts,
            claim_seconds)
        parts = _JobRequestParts(jobs)
        return [FannedOut(r["id"], r["destination_id"], r["claimed"],
                          parts.started(r) if r["started"] else None) for r in rows]

    async def redeliver(self, *, job_id: uuid.UUID,
                        deliveries: Sequence[tuple[uuid.UUID, uuid.UUID]],
                        max_attempts: int) -> list[uuid.UUID]:
        rows = await self._db.fetch(Q["deliveries_redeliver"], [d for d, _ in deliveries], job_id,
                                    [dest for _, dest in deliveries], max_attempts)
        return [r["id"] for r in rows]

    async def claim(self, *, limit: int, lease_seconds: float, owner: str) -> list[DueDelivery]:
        rows = await self._db.fetch(Q["deliveries_claim"], limit, lease_seconds, owner)
        return [DueDelivery(**dict(r)) for r in rows]

    async def release_mine(self, *, owner: str) -> None:
        await self._db.execute(Q["deliveries_release_mine"], owner)

    async def mark_queued(self, *, attempts: Sequence[tuple[uuid.UUID, int]]) -> None:
        await self._db.execute(Q["deliveries_mark_queued"], [d for d, _ in attempts],
                               [a for _, a in attempts])

    async def release(self, *, ids: Sequence[uuid.UUID], delay_seconds: float) -> None:
        await self._db.execute(Q["delivery_release"], list(ids), delay_seconds)

    async def refuse(self, *, delivery_id: uuid.UUID, attempt: int, reason: str) -> bool:
        return await self._db.fetchval(Q["delivery_refuse"], delivery_id, attempt,
                                       reason) is not None

    async def hold(self, *, delivery_id: uuid.UUID, attempt: int) -> bool:
        return await self._db.fetchval(Q["delivery_hold"], delivery_id, attempt) is not None

    async def defer(self, *, delivery_id: uuid.UUID, attempt: int, until: dt.datetime) -> bool:
        return await self._db.fetchval(Q["delivery_defer"], delivery_id, attempt,
                                       until) is not None

    async def start_many(self, *, attempts: Sequence[tuple[uuid.UUID, int]],
                         lease_seconds: float, closed_only: bool) -> list[StartedDelivery]:
        """Start each (delivery, attempt) that is its delivery's next attempt; with
        `closed_only`, only those whose destination is enabled with its circuit closed."""
        rows = await self._db.fetch(Q["deliveries_start"], [d for d, _ in attempts],
                                    [a for _, a in attempts], lease_seconds, closed_only)
        return [_started(r) for r in rows]

    async def state(self, *, delivery_id: uuid.UUID) -> tuple[str, int] | None:
        row = await self._db.fetchrow(Q["delivery_state"], delivery_id)
        return None if row is None else (row["status"], row["attempts"])

    async def finish_many(self, attempts: Sequence[FinishedAttempt],
                          event_attempts: int) -> set[uuid.UUID]:
        """Record the attempts' outcomes and their log entries (an outcome stands while no
        later attempt has started), and each dead letter's operational event (its delivery
        with `event_attempts`); the destinations whose circuit a success closed (or whose
        failures it reset)."""
        a = attempts
        row = await self._db.fetchrow(
            Q["deliveries_finish"], [x.delivery_id for x in a], [x.attempt for x in a],
            [x.outcome.status for x in a], [x.outcome.error for x in a],
            [x.outcome.delay_seconds for x in a], [x.started_at for x in a],
            [x.duration_ms for x in a], [x.status_code for x in a],
            [x.response_body for x in a], event_attempts)
        return set(row["recovered"] or ())

    async def recover_expired(self, *, limit: int, event_attempts: int) -> int:
        return len(await self._db.fetch(Q["deliveries_recover_expired"], limit, event_attempts))

    async def republish_stranded(self, *, older_than_seconds: float, limit: int) -> int:
        return len(await self._db.fetch(Q["deliveries_republish_stranded"],
                                        older_than_seconds, limit))

    async def get(self, *, delivery_id: uuid.UUID) -> DeliveryView | None:
        row = await self._db.fetchrow(Q["delivery_get"], delivery_id)
        return None if row is None else DeliveryView(**dict(row))

    async def dead_lettered_count(self, *, tenant_id: uuid.UUID | None,
                                  destination_id: uuid.UUID | None) -> int:
        count: int = await self._db.fetchval(Q["deliveries_dead_lettered_count"], tenant_id,
                                             destination_id)
        return count

    async def detail(self, *, delivery_id: uuid.UUID) -> DeliveryDetail | None:
        """A delivery with its attempts log."""
        view = await self.get(delivery_id=delivery_id)
        if view is None:
            return None
        return DeliveryDetail(**msgspec.structs.asdict(view),
                              attempts_log=await self.attempts_log(delivery_id=delivery_id))

    async def attempts_log(self, *, delivery_id: uuid.UUID) -> list[DeliveryAttemptView]:
        rows = await self._db.fetch(Q["delivery_attempts"], delivery_id)
        return [DeliveryAttemptView(**dict(r)) for r in rows]

    async def search(self, *, limit: int, tenant_id: uuid.UUID | None,
                   destination_id: uuid.UUID | None, job_id: uuid.UUID | None,
                   status: str | None, cursor: uuid.UUID | None) -> list[DeliveryView]:
        rows = await self._db.fetch(Q["deliveries_list"], limit, tenant_id, destination_id,
                                    job_id, status, cursor)
        return [DeliveryView(**dict(r)) for r in rows]

    async def reprocess(self, *, delivery_id: uuid.UUID | None = None,
                        tenant_id: uuid.UUID | None = None,
                        destination_id: uuid.UUID | None = None, limit: int,
                        extra_attempts: int) -> list[uuid.UUID]:
        rows = await self._db.fetch(Q["deliveries_reprocess"], delivery_id, tenant_id,
                                    destination_id, limit, extra_attempts)
        return [r["id"] for r in rows]

    async def recover(self, *, destination_id: uuid.UUID, since: dt.datetime, limit: int,
                      extra_attempts: int) -> list[uuid.UUID]:
        rows = await self._db.fetch(Q["deliveries_recover"], destination_id, since,
                                    extra_attempts, limit)
        return [r["id"] for r in rows]

    async def lag(self) -> DeliveryLag:
        return DeliveryLag(**dict(await self._db.fetchrow(Q["deliveries_lag"])))
