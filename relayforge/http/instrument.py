"""The wrapper every route goes through: request and correlation ids, the server span, metrics
by route template, one access log line, errors turned into contract responses, and the body's
deadline and drain (relayforge/http/bodies.py)."""

from __future__ import annotations

import contextvars
import logging
import time
from collections.abc import Awaitable, Callable

from blacksheep import Request, Response
from blacksheep.exceptions import MessageAborted
from opentelemetry import trace

from relayforge.errors import RelayforgeError
from relayforge.http.bodies import track_body
from relayforge.http.errors import error_response, json_response
from relayforge.ids import MAX_CLIENT_ID_LENGTH, new_request_id
from relayforge.observability import logging as log_context
from relayforge.observability import metrics, tracing

Handler = Callable[[Request], Awaitable[Response]]
log = logging.getLogger(__name__)
access = logging.getLogger(f"{__name__}.access")  # one line per request, at INFO

W3C_HEADER_NAMES = tuple(name.encode() for name in tracing.W3C_HEADERS)
# The incoming W3C trace headers of the request being handled (stored with its job).
_carrier: contextvars.ContextVar[dict[str, str]] = contextvars.ContextVar("carrier")
# What a handler adds to its request's access line (a webhook's job_id, inbox_id, deduped).
_access_fields: contextvars.ContextVar[dict[str, object]] = contextvars.ContextVar("access")


def note_access(**fields: object) -> None:
    """Add fields to the access line of the request being handled."""
    _access_fields.get({}).update(fields)


def _client_id(raw: bytes | None) -> str | None:
    """A client-supplied id, if it is short printable ASCII (it is echoed and logged)."""
    if not raw or len(raw) > MAX_CLIENT_ID_LENGTH:
        return None
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        return None
    return text if text.isprintable() else None


KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def _observe(route: str, method: str, status: int, elapsed: float) -> None:
    """An unknown method gets one label, not a series of its own."""
    if method not in KNOWN_METHODS:
        method = "other"
    metrics.child(metrics.HTTP_REQUESTS, route, method, str(status)).inc()
    metrics.child(metrics.HTTP_DURATION, route, method).observe(elapsed)


CLIENT_CLOSED = 499  # nginx's status for a client that went away before the answer


async def _respond(route: str, handler: Handler, request: Request) -> tuple[Response, str | None]:
    """The response, and the contract's error code when it is an error."""
    try:
        return await handler(request), None
    except RelayforgeError as exc:
        return error_response(exc), exc.code
    except MessageAborted:  # the client closed before sending its whole body: not our error
        return json_response(CLIENT_CLOSED, {
            "error": "the client closed the connection before sending the whole body",
            "code": "client_closed_request"}), "client_closed_request"
    except Exception:
        log.exception("unhandled error", extra={"route": route})
        return json_response(500, {"error": "internal error", "code": "internal"}), "internal"


def instrument(route: str, handler: Handler, body_timeout: float,
               access_log: bool = True) -> Handler:
    """`body_timeout`: seconds the request's body has to arrive in. `access_log=False` keeps
    the route's requests out of the access log (probes)."""
    async def wrapped(request: Request) -> Response:
        started = time.perf_counter()
        request_id = _client_id(request.get_first_header(b"x-request-id")) or new_request_id()
        correlation_id = _client_id(request.get_first_header(b"x-correlation-id")) or request_id
        tokens = (
            log_context.request_id.set(request_id),
            log_context.correlation_id.set(correlation_id),
        )
        carrier = {k.decode(): v.decode("latin-1")
                   for k, v in request.scope.get("headers", ()) if k in W3C_HEADER_NAMES}
        if carrier:
            carrier = tracing.bounded(carrier)
        carrier_token = _carrier.set(carrier)
        noted: dict[str, object] = {}
        access_token = _access_fields.set(noted)
        receipt = track_body(request, body_timeout)
        method = request.method
        if tracing.recording():
            with tracing.tracer.start_as_current_span(
                f"{method} {route}", context=tracing.extract(carrier), kind=trace.SpanKind.SERVER
            ) as span:
                trace_token = log_context.trace_id.set(tracing.current_trace_id())
                response, code = await _respond(route, handler, request)
                span.set_attribute("http.route", route)
                span.set_attribute("http.response.status_code", response.status)
        else:  # no SDK: no span objects per request; logs still carry the provider's trace id
            trace_token = log_context.trace_id.set(tracing.incoming_trace_id(carrier))
            response, code = await _respond(route, handler, request)
        status = response.status
        if receipt is not None and not await receipt.finish():
            response.add_header(b"Connection", b"close")
        response.add_header(b"X-Request-Id", request_id.encode())
        response.add_header(b"X-Correlation-Id", correlation_id.encode())
        elapsed = time.perf_counter() - started
        _observe(route, method, status, elapsed)
        if access_log and access.isEnabledFor(logging.INFO):
            line: dict[str, object] = {"method": method, "route": route, "status": status,
                                       "duration_ms": round(elapsed * 1000, 3)}
            if code is not None:
                line["code"] = code
            source = route_value(request, "source")
            if source:
                line["source"] = source[:64].lower()
            access.info("request", extra=line | noted)
        _access_fields.reset(access_token)
        log_context.trace_id.reset(trace_token)
        for var, token in zip((log_context.request_id, log_context.correlation_id), tokens,
                              strict=True):
            var.reset(token)
        _carrier.reset(carrier_token)
        return response

    wrapped.__name__ = getattr(handler, "__name__", "handler")
    # Real classes, not this module's postponed strings: BlackSheep then sees a handler that
    # takes the request and returns a Response and calls it as it is, instead of wrapping it
    # twice in coroutines that normalize the output.
    wrapped.__annotations__ = {"request": Request, "return": Response}
    return wrapped


def request_ids() -> tuple[str, str, dict[str, str]]:
    """The current request's id, correlation id and incoming W3C trace headers."""
    return (log_context.request_id.get() or "", log_context.correlation_id.get() or "",
            _carrier.get({}))


def route_value(request: Request, name: str) -> str:
    """A path parameter of the matched route; "" when it has none (BlackSheep gives None)."""
    return (request.route_values or {}).get(name) or ""


def client_address(request: Request) -> str:
    """The peer's address as the server sees it (a proxy's, behind one)."""
    client = request.scope.get("client")
    return str(client[0]) if client else "unknown"


def query_string(request: Request) -> bytes:
    """The raw query string. Not request.url, which raises on bytes outside ASCII."""
    raw = request.scope.get("query_string", b"")
    return raw if isinstance(raw, bytes) else b""
