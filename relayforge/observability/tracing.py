"""OpenTelemetry: W3C traceparent/tracestate/baggage in at ingest, stored with the outbox row,
carried in AMQP headers, continued by the consumer on every attempt."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from relayforge.settings import Settings

W3C_HEADERS = ("traceparent", "tracestate", "baggage")
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
        resource=Resource.create({"service.name": settings.otel.service_name, "relayforge.mode": mode})
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


def current_trace_id() -> str | None:
    span_context = trace.get_current_span().get_span_context()
    return format(span_context.trace_id, "032x") if span_context.is_valid else None


def carry(incoming: Mapping[str, Any]) -> dict[str, str]:
    """The W3C headers to pass on: the current span's when one records, else the incoming ones
    unchanged (so a trace survives even with the SDK off)."""
    out = inject()
    if "traceparent" not in out:
        out = {k: str(incoming[k]) for k in W3C_HEADERS if incoming.get(k)}
    return out
