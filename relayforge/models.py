"""Typed views of the contract's records: what the stores return and the admin API shows.

msgspec Structs: one declaration gives the fields, their JSON and their JSON Schema (the
OpenAPI document is generated from these). Bounds live in these types, not in prose.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

import msgspec
from msgspec import UNSET, UnsetType

from relayforge.deliveries import DeliveryStatus
from relayforge.jobs import JobStatus
from relayforge.roles import Role


class View(msgspec.Struct, kw_only=True):
    """A record shown by the admin API."""


class JobView(View):
    id: uuid.UUID
    tenant_id: uuid.UUID
    source: str
    event_type: str
    provider_event_id: str | None
    status: JobStatus
    attempts: int
    max_attempts: int
    last_error: str | None
    created_at: datetime
    updated_at: datetime
    first_inbox_id: uuid.UUID
    last_inbox_id: uuid.UUID


class InboxView(View):
    id: uuid.UUID
    tenant_id: uuid.UUID
    source: str
    event_type: str | None
    provider_event_id: str | None
    dedup_key: str | None
    payload_hash: str
    accepted: bool
    signature_valid: bool
    rejection_code: str | None
    job_id: uuid.UUID | None
    request_id: str | None
    received_at: datetime


class InboxDetail(InboxView, kw_only=True):
    headers: dict[str, str]
    body_base64: str | None


class JobCounts(View):
    pending: int = 0
    queued: int = 0
    processing: int = 0
    succeeded: int = 0
    retrying: int = 0
    dead_lettered: int = 0


class InboxCounts(View):
    accepted: int
    rejected: int


class Stats(View):
    jobs: JobCounts
    outbox_pending: int
    inbox_last_24h: InboxCounts


class SecretView(View):
    """A stored secret: never its value; the fingerprint is keyed, so it can't test guesses."""

    id: uuid.UUID
    fingerprint: str
    created_at: datetime
    expires_at: datetime | None


class ApiKeyView(View):
    id: uuid.UUID
    name: str
    role: Role
    created_at: datetime
    revoked_at: datetime | None = None


class ApiKeyCreated(ApiKeyView, kw_only=True):
    key: Annotated[str, msgspec.Meta(description="the key itself: shown once, stored as SHA-256")]


class DestinationSecretView(View):
    fingerprint: str
    created_at: datetime
    expires_at: datetime | None  # null: current; else signing too until then (rotation)


class DestinationView(View):
    id: uuid.UUID
    tenant_id: uuid.UUID
    name: str | None
    url: str
    enabled: bool
    paused: bool  # deliveries held (created, none attempted) until it is resumed
    disabled_reason: str | None  # "gone" (410), "failing", or null
    filter: dict[str, Any]
    header_names: list[str]  # custom headers sent; their values are never shown
    payload: Literal["raw", "event"]
    timeout_ms: int
    rate_limit_per_second: float | None
    max_concurrency: int | None
    circuit: Literal["closed", "open"]
    consecutive_failures: int
    failing_since: datetime | None
    circuit_opened_at: datetime | None
    secrets: list[DestinationSecretView]
    created_at: datetime
    updated_at: datetime
    # "operational": the tenant's operational endpoint (PUT …/operational-endpoint), which
    # receives Relayforge's events about the other destinations and no webhooks
    kind: Literal["events", "operational"] = "events"


class DestinationRecovered(View):
    destination_id: uuid.UUID
    since: datetime
    recovered: int  # deliveries sent again: dead-lettered ones and retries brought forward


class TestEventSent(View):
    destination_id: uuid.UUID
    webhook_id: uuid.UUID  # the webhook-id header it carried
    event_type: str  # relayforge.test
    delivered: bool  # the service answered 2xx
    attempt: DeliveryAttemptView


class DestinationCreated(DestinationView, kw_only=True):
    signing_secret: str  # whsec_…, shown once


class SecretRotated(View):
    destination_id: uuid.UUID
    signing_secret: str  # the new whsec_…, shown once
    previous_expires_at: datetime


class DeliveryView(View):
    id: uuid.UUID
    job_id: uuid.UUID
    destination_id: uuid.UUID
    tenant_id: uuid.UUID
    status: DeliveryStatus
    attempts: int
    max_attempts: int
    last_error: str | None
    redelivery: bool
    available_at: datetime
    created_at: datetime
    updated_at: datetime


class DeliveryAttemptView(View):
    attempt: int
    started_at: datetime
    duration_ms: float
    status_code: int | None
    error: str | None
    response_body: str | None  # the first 1 KiB


class DeliveryDetail(DeliveryView, kw_only=True):
    attempts_log: list[DeliveryAttemptView]


T = TypeVar("T")


class Page(View, Generic[T]):
    """A page of a list, newest first; a full page carries the cursor of the next."""

    items: list[T]
    next_cursor: uuid.UUID | None


class Items(View, Generic[T]):
    """A whole (short) list."""

    items: list[T]


V = TypeVar("V", bound=View)


def record(view: type[V], row: Any) -> V:
    """A view from a database row whose columns are the view's fields."""
    return view(**dict(row))


class Health(View, kw_only=True):
    status: Literal["ok"] = "ok"
    uptime_seconds: float


class Check(View):
    status: Literal["ok", "error"]
    latency_ms: float | UnsetType = UNSET
    error: str | UnsetType = UNSET


class Ready(View):
    status: Literal["ready", "not_ready"]
    checks: dict[str, Check]


class Accepted(View):
    """A webhook recorded; a duplicate returns the same job_id with deduped=true."""

    inbox_id: uuid.UUID
    job_id: uuid.UUID
    job_created: bool
    deduped: bool
    accepted: Literal[True] = True
    signature_valid: Literal[True] = True


class ErrorBody(View):
    error: str
    code: str
    signature_valid: bool | UnsetType = UNSET


class RejectedError(ErrorBody, kw_only=True):
    """A refused webhook whose row was kept as evidence."""

    inbox_id: uuid.UUID | UnsetType = UNSET
    accepted: Literal[False] = False
