"""One small error hierarchy; each class is one `code` of the contract. Only the HTTP layer turns
these into responses (relayforge/http/errors.py)."""

from __future__ import annotations

import uuid


class RelayforgeError(Exception):
    status = 500
    code = "internal"

    def __init__(
        self,
        message: str,
        *,
        inbox_id: uuid.UUID | None = None,
        signature_valid: bool | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.inbox_id = inbox_id
        self.signature_valid = signature_valid
        self.retry_after = retry_after


class BadRequest(RelayforgeError):
    status, code = 400, "bad_request"


class InvalidDestination(RelayforgeError):
    """A destination's URL (scheme, SSRF guard), filter or headers are not acceptable."""

    status, code = 400, "invalid_destination"


class InvalidTenant(RelayforgeError):
    status, code = 400, "invalid_tenant"


class InvalidPayload(RelayforgeError):
    status, code = 400, "invalid_payload"


class MissingSignature(RelayforgeError):
    status, code = 401, "missing_signature"


class InvalidSignature(RelayforgeError):
    status, code = 401, "invalid_signature"


class StaleTimestamp(RelayforgeError):
    status, code = 401, "stale_timestamp"


class Unauthorized(RelayforgeError):
    status, code = 401, "unauthorized"


class Forbidden(RelayforgeError):
    status, code = 403, "forbidden"


class NotFound(RelayforgeError):
    status, code = 404, "not_found"


class UnknownSource(RelayforgeError):
    status, code = 404, "unknown_source"


class RequestTimeout(RelayforgeError):
    """The request's body did not arrive within SERVER__BODY_READ_TIMEOUT_MS."""

    status, code = 408, "request_timeout"


class MethodNotAllowed(RelayforgeError):
    status, code = 405, "method_not_allowed"

    def __init__(self, message: str, allow: list[str]) -> None:
        super().__init__(message)
        self.allow = allow


class Conflict(RelayforgeError):
    status, code = 409, "conflict"


class ReplayedEvent(RelayforgeError):
    status, code = 409, "replayed_event"


class PayloadTooLarge(RelayforgeError):
    status, code = 413, "payload_too_large"


class RateLimited(RelayforgeError):
    status, code = 429, "rate_limited"


class QuotaExceeded(RelayforgeError):
    status, code = 429, "quota_exceeded"


class Unavailable(RelayforgeError):
    status, code = 503, "unavailable"


class Overloaded(RelayforgeError):
    """Too many body bytes in flight in this process (HARDENING__MAX_INFLIGHT_BODY_BYTES)."""

    status, code = 503, "overloaded"


def one_line(exc: BaseException, limit: int = 300) -> str:
    """An exception as one bounded log line: its type and message, whitespace collapsed."""
    return " ".join(f"{type(exc).__name__}: {exc}".split())[:limit]
