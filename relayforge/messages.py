"""The messages between relay and consumer, in one place: the relay encodes a job's or a
delivery's due message, the consumer decodes what arrives.

A job: body `{"job_id", "tenant_id", "attempt"}`, routing key `<AMQP__ROUTING_PREFIX>.<source>`.
A delivery: body `{"delivery_id", "destination_id", "attempt"}`, routing key
`<AMQP__ROUTING_PREFIX>.delivery` (the body, not the key, says which it is). Headers: the ids,
`attempt`, `correlation_id` and the W3C trace headers, each bounded, so no row can make a message
larger than a broker frame.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass

import orjson

from relayforge.broker import OutgoingMessage
from relayforge.ids import MAX_CLIENT_ID_LENGTH
from relayforge.observability import tracing
from relayforge.stores.destinations import DueDelivery
from relayforge.stores.outbox import OutboxRow

JOB_ID_HEADER = "job_id"
ATTEMPT_HEADER = "attempt"
CORRELATION_HEADER = "correlation_id"


class UnreadableMessage(ValueError):
    """A message that names no job: it goes to the DLQ."""


@dataclass(frozen=True, slots=True)
class JobMessage:
    job_id: uuid.UUID
    attempt: int  # the attempt this message starts


@dataclass(frozen=True, slots=True)
class DeliveryMessage:
    delivery_id: uuid.UUID
    destination_id: uuid.UUID
    attempt: int


DELIVERY_HEADER = "delivery_id"


def routing_key(prefix: str, source: str) -> str:
    return f"{prefix}.{source}"


def encode(row: OutboxRow, routing_prefix: str) -> OutgoingMessage:
    headers = _headers(row.headers, JOB_ID_HEADER, str(row.job_id), row.attempt)
    body = orjson.dumps({"job_id": str(row.job_id), "tenant_id": str(row.tenant_id),
                         "attempt": row.attempt})
    return OutgoingMessage(routing_key(routing_prefix, row.source), body, headers,
                           message_id=f"{row.job_id}:{row.attempt}")


def encode_delivery(row: DueDelivery, routing_prefix: str) -> OutgoingMessage:
    headers = _headers(row.headers, DELIVERY_HEADER, str(row.id), row.attempt)
    body = orjson.dumps({"delivery_id": str(row.id), "destination_id": str(row.destination_id),
                         "attempt": row.attempt})
    return OutgoingMessage(routing_key(routing_prefix, "delivery"), body, headers,
                           message_id=f"delivery:{row.id}:{row.attempt}")


def _headers(carried_json: str, id_header: str, id_: str, attempt: int) -> dict[str, str]:
    """A message's headers: the stored trace context and correlation id (bounded; the id of
    what it carries when there is none), that id and the attempt."""
    carried: dict[str, object] = orjson.loads(carried_json)
    headers = trace_carrier(carried)
    headers[CORRELATION_HEADER] = _bounded_id(carried.get(CORRELATION_HEADER), id_)
    headers[id_header] = id_
    headers[ATTEMPT_HEADER] = str(attempt)
    return headers


def _bounded_id(value: object, default: str) -> str:
    return value if isinstance(value, str) and len(value) <= MAX_CLIENT_ID_LENGTH else default


def decode(body: bytes) -> JobMessage | DeliveryMessage:
    try:
        doc = orjson.loads(body)
        if "delivery_id" in doc:
            return DeliveryMessage(uuid.UUID(doc["delivery_id"]),
                                   uuid.UUID(doc["destination_id"]), int(doc["attempt"]))
        return JobMessage(uuid.UUID(doc["job_id"]), int(doc["attempt"]))
    except (orjson.JSONDecodeError, KeyError, ValueError, TypeError) as exc:
        raise UnreadableMessage(f"unreadable message: {exc!r}") from None


def trace_carrier(headers: Mapping[str, object]) -> dict[str, str]:
    """The message's W3C trace headers, bounded as at ingest."""
    return tracing.bounded({k: str(v) for k, v in headers.items() if k in tracing.W3C_HEADERS})
