"""One verified webhook on its way into the database, and what ingest decided for it.

The HTTP layer hands over the verified request; `deliver()` builds the Delivery (hash,
evidence, trace context, the normalized event or the reason it was refused). The batch's
units then fill in its outcome: each request carries its own state, never an index into
lists shared with the others.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date

import orjson

from relayforge.connectors.base import Connector, Headers, Signed
from relayforge.errors import InvalidPayload, RelayforgeError, StaleTimestamp
from relayforge.events import DomainEvent
from relayforge.kernels import sha256_hex
from relayforge.observability import tracing
from relayforge.settings import Settings

EventKey = tuple[uuid.UUID, str]


@dataclass(slots=True, eq=False)
class Delivery:
    tenant_id: uuid.UUID
    source: str
    payload_hash: str
    evidence_headers: str  # JSON object text
    body: bytes
    request_id: str
    correlation_id: str
    trace_context: str  # JSON object text: W3C headers + correlation id
    event: DomainEvent | None = None  # None when `rejection` is set
    event_json: bytes = b""  # the event as stored, written before the batch so it fails alone
    replay_protected: bool = False
    rejection: RelayforgeError | None = None  # refused before the batch; row kept as evidence
    # The outcome, filled in by the batch.
    error: RelayforgeError | None = None
    inbox_id: uuid.UUID | None = None
    job_id: uuid.UUID | None = None
    job_created: bool = False
    quota_day: date | None = None  # the (UTC) day a quota unit was reserved on, if one was

    @property
    def open(self) -> bool:
        """Still on its way to being accepted."""
        return self.rejection is None and self.error is None

    @property
    def failure(self) -> RelayforgeError | None:
        return self.rejection or self.error

    @property
    def dedup_key(self) -> str:
        assert self.event is not None
        if self.event.provider_event_id is not None:
            return "provider:" + self.event.provider_event_id
        return "hash:" + self.payload_hash

    @property
    def event_key(self) -> EventKey | None:
        """(tenant, event id) for a replay-protected source's event, else None."""
        if self.replay_protected and self.event and self.event.provider_event_id:
            return self.tenant_id, self.event.provider_event_id
        return None


def deliver(connector: Connector, settings: Settings, *, tenant_id: uuid.UUID, headers: Headers,
            body: bytes, signed: Signed, request_id: str, correlation_id: str,
            trace_carrier: Mapping[str, str]) -> Delivery:
    """The Delivery of a request whose signature verified: normalized, or refused with the
    reason (still recorded, as evidence)."""
    trace_context = {**tracing.carry(trace_carrier), "correlation_id": correlation_id}
    evidence = {name.decode(): headers[name].decode("latin-1")
                for name in connector.evidence_headers if name in headers}
    delivery = Delivery(
        tenant_id=tenant_id, source=connector.name, payload_hash=sha256_hex(body),
        evidence_headers=orjson.dumps(evidence).decode(), body=body, request_id=request_id,
        correlation_id=correlation_id, trace_context=orjson.dumps(trace_context).decode(),
        replay_protected=connector.replay_protected,
    )
    try:
        event = connector.normalize(headers, body)
        delivery.event_json = event.to_json()
        # Stored as JSON from here on: the parsed data (as large as the body) is let go.
        delivery.event = dataclasses.replace(event, data=None)
        connector.check_freshness(signed, int(time.time()), settings)
    except (InvalidPayload, StaleTimestamp) as exc:
        delivery.rejection = exc
    return delivery
