"""The normalized event every connector produces and every job carries:
`{source, event_type, provider_event_id|null, occurred_at_unix|null, data}`."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import orjson

from relayforge.errors import InvalidPayload

# orjson parses 1,024 levels but writes at most 254: the stored event (its `data` inside one
# wrapper object) is bounded by what can be written, checked per request, never in a batch.
MAX_EVENT_DEPTH = 254

# C0, DEL and C1: never in a name or id. An event type travels on in a delivery's headers, where
# a CR or LF made every delivery fail in the HTTP client (and opened the tenant's circuit).
CONTROL = "\\x00-\\x1f\\x7f-\\x9f"
_HAS_CONTROL = re.compile(f"[{CONTROL}]")


def has_control(text: str) -> bool:
    return _HAS_CONTROL.search(text) is not None


def without_control(text: str) -> str:
    """Text safe for a header value (an event type stored before control characters were
    refused at ingest)."""
    return _HAS_CONTROL.sub("", text) if _HAS_CONTROL.search(text) else text


@dataclass(frozen=True, slots=True)
class DomainEvent:
    source: str
    event_type: str
    provider_event_id: str | None
    occurred_at_unix: int | None
    data: Any
    # Test faults of the generic connector; kept beside the event, never shown to handlers.
    faults: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> bytes:
        doc: dict[str, Any] = {
            "source": self.source,
            "event_type": self.event_type,
            "provider_event_id": self.provider_event_id,
            "occurred_at_unix": self.occurred_at_unix,
            "data": self.data,
        }
        if self.faults:
            doc["faults"] = self.faults
        try:
            return orjson.dumps(doc)
        except orjson.JSONEncodeError as exc:
            raise InvalidPayload(
                f"JSON nested too deeply: the event's data may nest at most {MAX_EVENT_DEPTH - 1}"
                f" levels ({exc})", signature_valid=True) from None

    @classmethod
    def from_json(cls, raw: bytes) -> DomainEvent:
        doc = orjson.loads(raw)
        return cls(
            source=doc["source"],
            event_type=doc["event_type"],
            provider_event_id=doc["provider_event_id"],
            occurred_at_unix=doc["occurred_at_unix"],
            data=doc["data"],
            faults=doc.get("faults") or {},
        )
