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
    # Where `data` sits in the body's JSON (keys from the top, () for the whole body) when it
    # is a part of it, as `from_part` takes it. Then a job stores no copy of the event: the
    # body is stored once, and the event is put together from it when read. None: data is
    # no part of the body (a form decoded, an object rebuilt), and the job stores the event.
    data_path: tuple[str, ...] | None = field(default=None, compare=False)

    @classmethod
    def from_part(cls, doc: Any, data_path: tuple[str, ...], *, source: str, event_type: str,
                  provider_event_id: str | None, occurred_at_unix: int | None,
                  faults: dict[str, Any] | None = None) -> DomainEvent:
        """The event whose data is `doc` (the body's JSON) at `data_path`: a missing key, or
        a step into something that is not an object, is null."""
        data = doc
        for key in data_path:
            data = data.get(key) if isinstance(data, dict) else None
        return cls(source, event_type, provider_event_id, occurred_at_unix, data,
                   faults or {}, data_path)

    @property
    def stored_whole(self) -> bool:
        """Whether a job must store this event (it can't be put together from the body)."""
        return self.data_path is None or bool(self.faults)

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
    def stored(cls, event: bytes | None, *, source: str, event_type: str,
               provider_event_id: str | None, occurred_at_unix: int | None,
               data_path: list[str] | None, body: bytes | None) -> DomainEvent:
        """A job's event as stored: whole (`event`), or from the first delivery's body."""
        if event is not None:
            return cls.from_json(event)
        if data_path is None or body is None:
            raise ValueError("a job without its event needs its data path and its body")
        return cls.from_part(orjson.loads(body), tuple(data_path), source=source,
                             event_type=event_type, provider_event_id=provider_event_id,
                             occurred_at_unix=occurred_at_unix)

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
