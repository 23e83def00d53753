"""One verified webhook on its way into the database, and what ingest decided for it.

The HTTP layer hands over the verified request; `arrive()` builds the Arrival (hash,
evidence, trace context, the normalized event or the reason it was refused). The batch's
units then fill in its outcome: each request carries its own state, never an index into
lists shared with the others.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date

import orjson

from relayforge.connectors.base import Connector, Headers, Signed
from relayforge.errors import InvalidPayload, RelayforgeError, StaleTimestamp
from relayforge.kernels import sha256_hex
from relayforge.observability import tracing
from relayforge.settings import Settings
from relayforge.stores.ingest import EventKey


@dataclass(slots=True, eq=False)
class Arrival:
    tenant_id: uuid.UUID
    source: str
    payload_hash: str
    evidence_headers: str  # JSON object text
    body: bytes
    request_id: str
    correlation_id: str
    trace_context: str  # JSON object text: W3C headers (the job keeps its correlation id apart)
    # The normalized event, as a job stores it: its JSON only when it can't be put together
    # from the body (written before the batch either way, so an event that can't be written
    # fails alone), else where its data sits in the body; the parsed data (as large as the
    # body) is let go. event_type None when normalizing refused the request.
    event_type: str | None = None
    provider_event_id: str | None = None
    occurred_at_unix: int | None = None
    data_path: list[str] | None = None
    event_json: bytes | None = None
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
        if self.provider_event_id is not None:
            return "provider:" + self.provider_event_id
        return "hash:" + self.payload_hash

    @property
    def event_key(self) -> EventKey | None:
        """(tenant, source, event id) for a replay-protected source's event, else None."""
        if self.replay_protected and self.provider_event_id:
            return self.tenant_id, self.source, self.provider_event_id
        return None


def arrive(connector: Connector, settings: Settings, *, tenant_id: uuid.UUID, headers: Headers,
            body: bytes, signed: Signed, request_id: str, correlation_id: str,
            trace_carrier: Mapping[str, str]) -> Arrival:
    """The Arrival of a request whose signature verified: normalized, or refused with the
    reason (still recorded, as evidence)."""
    # With no SDK no span is current, so carry() would hand back the carrier, which the HTTP
    # layer already bounded: skip the propagators.
    trace_context = tracing.carry(trace_carrier) if tracing.recording() else dict(trace_carrier)
    evidence = {}
    for name in connector.evidence_headers:
        value = headers.get(name)
        if value is not None:
            evidence[name.decode()] = value.decode("latin-1")
    arrival = Arrival(
        tenant_id, connector.name, sha256_hex(body), orjson.dumps(evidence).decode(), body,
        request_id, correlation_id, orjson.dumps(trace_context).decode(),
        replay_protected=connector.replay_protected,
    )
    try:
        event = connector.normalize(headers, body)
        event_json = event.to_json()
        if event.stored_whole:
            arrival.event_json = event_json
        else:
            arrival.data_path = list(event.data_path or ())
        arrival.event_type, arrival.provider_event_id = event.event_type, event.provider_event_id
        arrival.occurred_at_unix = event.occurred_at_unix
        connector.check_freshness(signed, int(time.time()), settings)
    except (InvalidPayload, StaleTimestamp) as exc:
        arrival.rejection = exc
    return arrival
