"""The job message between relay and consumer, in one place: the relay encodes an outbox row,
the consumer decodes what arrives.

Body `{"job_id", "tenant_id", "attempt"}`; headers `job_id`, `attempt`, `correlation_id` and
the W3C trace headers, each bounded, so no row can make a message larger than a broker frame.
The routing key is built here, at publish time: `<AMQP__ROUTING_PREFIX>.<source>`.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass

import orjson

from relayforge.broker import OutgoingMessage
from relayforge.ids import MAX_CLIENT_ID_LENGTH
from relayforge.observability import tracing
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


def routing_key(prefix: str, source: str) -> str:
    return f"{prefix}.{source}"


def encode(row: OutboxRow, routing_prefix: str) -> OutgoingMessage:
    carried: dict[str, object] = orjson.loads(row.headers)
    headers = trace_carrier(carried)
    headers[CORRELATION_HEADER] = _bounded_id(carried.get(CORRELATION_HEADER), str(row.job_id))
    headers[JOB_ID_HEADER] = str(row.job_id)
    headers[ATTEMPT_HEADER] = str(row.attempt)
    body = orjson.dumps({"job_id": str(row.job_id), "tenant_id": str(row.tenant_id),
                         "attempt": row.attempt})
    return OutgoingMessage(row.id, routing_key(routing_prefix, row.source), body, headers,
                           message_id=f"{row.job_id}:{row.attempt}")


def _bounded_id(value: object, default: str) -> str:
    return value if isinstance(value, str) and len(value) <= MAX_CLIENT_ID_LENGTH else default


def decode(body: bytes) -> JobMessage:
    try:
        doc = orjson.loads(body)
        return JobMessage(uuid.UUID(doc["job_id"]), int(doc["attempt"]))
    except (orjson.JSONDecodeError, KeyError, ValueError, TypeError) as exc:
        raise UnreadableMessage(f"unreadable message: {exc!r}") from None


def trace_carrier(headers: Mapping[str, object]) -> dict[str, str]:
    """The message's W3C trace headers, bounded as at ingest."""
    return tracing.bounded({k: str(v) for k, v in headers.items() if k in tracing.W3C_HEADERS})
