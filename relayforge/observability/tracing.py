"""OpenTelemetry: W3C traceparent/tracestate/baggage in at ingest, stored with the job (each
retry's in place of the attempt before), carried in AMQP headers, continued by the consumer on
every attempt."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from relayforge.settings import Settings

W3C_HEADERS = ("traceparent", "tracestate", "baggage")
# W3C Trace Context and Baggage bounds: a header over them, or malformed, is dropped, never stored
# (an unbounded one once made a message larger than the broker's frame and halted publishing).
MAX_TRACESTATE_CHARS = 512
MAX_TRACESTATE_MEMBERS = 32
MAX_BAGGAGE_BYTES = 8192
_TRACEPARENT = re.compile(
    r"(?!ff)([0-9a-f]{2})-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}")
_TRACESTATE_MEMBER = re.compile(
    r"[ \t]*(?:[a-z0-9][_0-9a-z\-*/]{0,255}|[a-z0-9][_0-9a-z\-*/]{0,240}@[a-z][_0-9a-z\-*/]{0,13})"
    r"=[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e][ \t]*")
_BAGGAGE = re.compile(r"[\x20-\x7e]*")
PROPAGATOR = CompositePropagator([TraceContextTextMapPropagator(), W3CBaggagePropagator()])
propagate.set_global_textmap(PROPAGATOR)

tracer = trace.get_tracer("relayforge")
_configured = False


def configure(settings: Settings, mode: str) -> None:
    """Install the SDK with an OTLP/HTTP exporter when OTEL__ENABLED=true."""
    global _configured
    if not settings.otel.enabled or _configured:
        return
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    endpoint = settings.otel.exporter_otlp_endpoint.rstrip("/")
    if not endpoint.endswith("/v1/traces"):
        endpoint += "/v1/traces"
    provider = TracerProvider(
        resource=Resource.create({"service.name": settings.otel.service_name,
                                  "relayforge.mode": mode})
    )
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(
        endpoint=endpoint, timeout=settings.otel.exporter_otlp_timeout_ms / 1000)))
    trace.set_tracer_provider(provider)
    _configured = True


def extract(carrier: Mapping[str, str]) -> otel_context.Context:
    return PROPAGATOR.extract(carrier)


def inject(ctx: otel_context.Context | None = None) -> dict[str, str]:
    carrier: dict[str, str] = {}
    PROPAGATOR.inject(carrier, context=ctx)
    return carrier


def recording() -> bool:
    """Whether spans are recorded (OTEL__ENABLED=true); else none is made per request."""
    return _configured


def incoming_trace_id(carrier: Mapping[str, str]) -> str | None:
    """The trace id of a (validated) incoming traceparent, for log lines."""
    traceparent = carrier.get("traceparent")
    return traceparent[3:35] if traceparent else None


def current_trace_id() -> str | None:
    span_context = trace.get_current_span().get_span_context()
    return format(span_context.trace_id, "032x") if span_context.is_valid else None


def _valid_traceparent(value: str) -> bool:
    match = _TRACEPARENT.match(value)
    if match is None:
        return False
    if match.group(1) == "00":  # version 00 is exactly this; later versions may append fields
        return len(value) == match.end()
    return len(value) <= 256 and (len(value) == match.end() or value[match.end()] == "-")


def _valid_tracestate(value: str) -> bool:
    if len(value) > MAX_TRACESTATE_CHARS:
        return False
    members = [m for m in value.split(",") if m.strip(" \t")]
    return len(members) <= MAX_TRACESTATE_MEMBERS and all(
        _TRACESTATE_MEMBER.fullmatch(m) for m in members)


def bounded(headers: Mapping[str, str]) -> dict[str, str]:
    """The W3C headers that are well-formed and within the spec's bounds; the others dropped.
    tracestate means nothing without a valid traceparent, so it goes with it."""
    out: dict[str, str] = {}
    traceparent = headers.get("traceparent")
    if traceparent and _valid_traceparent(traceparent):
        out["traceparent"] = traceparent
        tracestate = headers.get("tracestate")
        if tracestate and _valid_tracestate(tracestate):
            out["tracestate"] = tracestate
    baggage = headers.get("baggage")
    if baggage and len(baggage) <= MAX_BAGGAGE_BYTES and _BAGGAGE.fullmatch(baggage):
        out["baggage"] = baggage
    return out


def carry(incoming: Mapping[str, Any]) -> dict[str, str]:
    """The W3C headers to pass on: the current span's when one records, else the incoming ones
    unchanged (so a trace survives even with the SDK off)."""
    out = inject()
    if "traceparent" not in out:
        out = {k: str(incoming[k]) for k in W3C_HEADERS if incoming.get(k)}
    return bounded(out)
