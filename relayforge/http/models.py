"""What the admin API accepts: query parameters and request bodies as msgspec Structs.

Validation happens here, in the types: bounds, lengths, enums, unknown fields (refused), null
where a value is required (refused). Every number is declared once, below; the OpenAPI
document is generated from these same types.
"""

from __future__ import annotations

import functools
import uuid
from datetime import datetime
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import parse_qsl

import msgspec
import msgspec.inspect
from blacksheep import Request
from msgspec import UNSET, Meta, UnsetType

from relayforge.actions import DEFAULT_BULK, MAX_BULK, MAX_OVERLAP_SECONDS
from relayforge.deliveries import DeliveryStatus
from relayforge.errors import BadRequest
from relayforge.http.bodies import read_body
from relayforge.jobs import JobStatus
from relayforge.roles import Role

MAX_PAGE = 500
DEFAULT_PAGE = 50
MAX_ADMIN_BODY = 65536
MAX_SECRET_LENGTH = 1024
DEFAULT_OVERLAP_SECONDS = 86_400
MAX_FILTER_LENGTH = 255
MAX_KEY_NAME_LENGTH = 200

NO_NUL = "^[^\\x00]*$"  # PostgreSQL text can't hold NUL
PageLimit = Annotated[int, Meta(ge=1, le=MAX_PAGE, description="items per page")]
BulkLimit = Annotated[int, Meta(ge=1, le=MAX_BULK, description="jobs at most")]
Filter = Annotated[str, Meta(min_length=1, max_length=MAX_FILTER_LENGTH, pattern=NO_NUL)]


# RFC 3339 with a zone, as text: a query string's number must not pass for a Unix time.
Instant = Annotated[str, Meta(
    pattern="^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{1,6})?(Z|[+-][0-9]{2}:[0-9]{2})$",
    extra_json_schema={"format": "date-time"}, description="RFC 3339, with a zone")]


def instant(value: str | None, field: str) -> datetime | None:
    """An Instant as a datetime; its pattern passes impossible dates (month 00): 400."""
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(f"{field}: not a valid date and time") from None


class Model(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A query string or body: unknown fields are refused. An optional field is UNSET when
    absent (never None: in a query string "null" is text, and refused where it is no value)."""


class JobsQuery(Model):
    status: JobStatus | UnsetType = UNSET
    tenant_id: uuid.UUID | UnsetType = UNSET
    source: Filter | UnsetType = UNSET
    event_type: Filter | UnsetType = UNSET
    provider_event_id: Filter | UnsetType = UNSET
    since: Instant | UnsetType = UNSET  # created at or after
    until: Instant | UnsetType = UNSET  # created before
    cursor: uuid.UUID | UnsetType = UNSET
    limit: PageLimit = DEFAULT_PAGE


class InboxQuery(Model):
    tenant_id: uuid.UUID | UnsetType = UNSET
    source: Filter | UnsetType = UNSET
    accepted: bool | UnsetType = UNSET
    cursor: uuid.UUID | UnsetType = UNSET
    limit: PageLimit = DEFAULT_PAGE


class StatsQuery(Model):
    tenant_id: uuid.UUID | UnsetType = UNSET


class NoQuery(Model):
    """A route that takes no query parameters (any given is refused)."""


class BulkReprocess(Model):
    """Dead-lettered jobs matching every given filter; a key that is present must be valid
    (null is not "no filter")."""

    tenant_id: uuid.UUID | UnsetType = UNSET
    source: Filter | UnsetType = UNSET
    event_type: Filter | UnsetType = UNSET
    limit: BulkLimit = DEFAULT_BULK


class SecretPut(Model):
    secret: Annotated[str, Meta(min_length=1, max_length=MAX_SECRET_LENGTH)]
    previous_expires_in_seconds: Annotated[int, Meta(
        ge=0, le=MAX_OVERLAP_SECONDS,
        description="how long the previous secrets stay valid")] = DEFAULT_OVERLAP_SECONDS


class ApiKeyCreate(Model):
    role: Role
    name: Annotated[str, Meta(max_length=MAX_KEY_NAME_LENGTH, pattern=NO_NUL)] = ""


MAX_DESTINATION_NAME = 200
MAX_HEADERS = 20
MAX_HEADER_VALUE = 4096
HeaderName = Annotated[str, Meta(min_length=1, max_length=128,
                                 pattern="^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")]
# printable: control characters are refused as invalid_destination (http/destinations.py)
HeaderValue = Annotated[str, Meta(max_length=MAX_HEADER_VALUE)]
TimeoutMs = Annotated[int, Meta(ge=100, le=60_000, description="an attempt's time limit")]
DEFAULT_TIMEOUT_MS = 10_000
RatePerSecond = Annotated[float, Meta(gt=0, le=10_000, description="attempts a second at most")]
Concurrency = Annotated[int, Meta(ge=1, le=1000, description="attempts in flight at most")]
DestinationName = Annotated[str, Meta(max_length=MAX_DESTINATION_NAME, pattern=NO_NUL)]
Payload = Literal["raw", "event"]


class DestinationCreate(Model):
    """`filter`: {"sources"?, "event_types"? (`*` wildcards), "data"? (subset match with $in,
    $ne, $exists, $gt, $gte, $lt, $lte)}. `headers`: sent with every delivery; their values
    are stored encrypted and never shown."""

    url: Annotated[str, Meta(min_length=1, max_length=2048)]
    name: DestinationName | UnsetType = UNSET
    enabled: bool = True
    filter: dict[str, Any] = msgspec.field(default_factory=dict)
    headers: Annotated[dict[HeaderName, HeaderValue], Meta(max_length=MAX_HEADERS)] = \
        msgspec.field(default_factory=dict)
    payload: Payload = "raw"
    timeout_ms: TimeoutMs = DEFAULT_TIMEOUT_MS
    rate_limit_per_second: RatePerSecond | None = None
    max_concurrency: Concurrency | None = None


class OperationalEndpointPut(Model):
    """Where the tenant's operational events go (destination.disabled,
    destination.circuit_opened, delivery.dead_lettered), signed as every delivery is."""

    url: Annotated[str, Meta(min_length=1, max_length=2048)]


class DestinationPatch(Model):
    """Only the fields given change; `null` clears `name`, `rate_limit_per_second` and
    `max_concurrency`. `enabled: true` also clears `disabled_reason` and closes the circuit."""

    url: Annotated[str, Meta(min_length=1, max_length=2048)] | UnsetType = UNSET
    name: DestinationName | None | UnsetType = UNSET
    enabled: bool | UnsetType = UNSET
    filter: dict[str, Any] | UnsetType = UNSET
    headers: Annotated[dict[HeaderName, HeaderValue], Meta(max_length=MAX_HEADERS)] | \
        UnsetType = UNSET
    payload: Payload | UnsetType = UNSET
    timeout_ms: TimeoutMs | UnsetType = UNSET
    rate_limit_per_second: RatePerSecond | None | UnsetType = UNSET
    max_concurrency: Concurrency | None | UnsetType = UNSET


class RotateSecret(Model):
    previous_expires_in_seconds: Annotated[int, Meta(
        ge=0, le=MAX_OVERLAP_SECONDS,
        description="how long the previous secret keeps signing too")] = DEFAULT_OVERLAP_SECONDS


class DeliveriesQuery(Model):
    tenant_id: uuid.UUID | UnsetType = UNSET
    destination_id: uuid.UUID | UnsetType = UNSET
    job_id: uuid.UUID | UnsetType = UNSET
    status: DeliveryStatus | UnsetType = UNSET
    cursor: uuid.UUID | UnsetType = UNSET
    limit: PageLimit = DEFAULT_PAGE


class BulkDeliveryReprocess(Model):
    tenant_id: uuid.UUID | UnsetType = UNSET
    destination_id: uuid.UUID | UnsetType = UNSET
    limit: BulkLimit = DEFAULT_BULK


class RecoverDeliveries(Model):
    """Every delivery of the destination that failed at or after `since` goes out again."""

    since: Instant


class Redeliver(Model):
    """Without `destination_id`: every enabled destination whose filter matches the event."""

    destination_id: uuid.UUID | UnsetType = UNSET


M = TypeVar("M", bound=msgspec.Struct)


def _refused(exc: msgspec.ValidationError, where: str) -> BadRequest:
    """`limit: Expected int <= 500` rather than msgspec's `... - at $.limit`."""
    message, _, path = str(exc).partition(" - at `$.")
    field = path.rstrip("`")  # the whole path: `verification.algorithm`, `items[2]`
    return BadRequest(f"{field}: {message}" if field else f"{where}: {message}")


def parse_query(raw: bytes | None, model: type[M]) -> M:
    """Every admin query value goes through its model; the last of a repeated key counts."""
    try:
        text = (raw or b"").decode("utf-8")
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=False, errors="strict")
    except (UnicodeDecodeError, ValueError):
        raise BadRequest("the query string must be UTF-8") from None
    return convert_text(dict(pairs), model, "query")


@functools.cache
def _integer_fields(model: type[msgspec.Struct]) -> frozenset[str]:
    info = msgspec.inspect.type_info(model)
    assert isinstance(info, msgspec.inspect.StructType)
    return frozenset(f.encode_name for f in info.fields if _is_int(f.type))


def _is_int(t: msgspec.inspect.Type) -> bool:
    if isinstance(t, msgspec.inspect.Metadata):
        return _is_int(t.type)
    if isinstance(t, msgspec.inspect.UnionType):
        return any(_is_int(member) for member in t.types)
    return isinstance(t, msgspec.inspect.IntType)


def convert_text(values: dict[str, Any], model: type[M], where: str) -> M:
    """Text values (a query string, a console form) as `model`. An integer must be written in
    digits: msgspec's lax mode would take `1e2` or `1.0` for 100 and 1."""
    for name in _integer_fields(model):
        value = values.get(name)
        if value is not None and not (value.isascii() and value.isdigit()):
            raise BadRequest(f"{name}: Expected an integer written in digits")
    try:
        return msgspec.convert(values, model, strict=False)
    except msgspec.ValidationError as exc:
        raise _refused(exc, where) from None


async def read_model(request: Request, model: type[M]) -> M:
    """The request's JSON body as `model`; 413 past MAX_ADMIN_BODY, before it is all read."""
    return parse_body(await read_body(request, MAX_ADMIN_BODY), model)


def parse_body(raw: bytes, model: type[M]) -> M:
    try:
        return msgspec.json.decode(raw, type=model)
    except msgspec.ValidationError as exc:
        raise _refused(exc, "body") from None
    except msgspec.DecodeError:
        raise BadRequest("body must be a JSON object") from None


T = TypeVar("T")


def lower(value: str | None) -> str | None:
    """A source filter as stored: source names are lower case."""
    return value.lower() if value else None


def given(value: T | UnsetType) -> T | None:
    """An optional field as None when it was not given."""
    return None if isinstance(value, UnsetType) else value
