"""One JSON line per log event, with the request's and job's context from contextvars."""

from __future__ import annotations

import contextvars
import logging
import sys
import time
from typing import Any

import orjson

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
correlation_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "correlation_id", default=None
)
trace_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("trace_id", default=None)
tenant_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("tenant_id", default=None)
job_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("job_id", default=None)

CONTEXT = {
    "request_id": request_id,
    "correlation_id": correlation_id,
    "trace_id": trace_id,
    "tenant_id": tenant_id,
    "job_id": job_id,
}
# Attributes every LogRecord has; anything else passed through `extra=` is logged as a field.
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name.lstrip("_"),  # Granian's own logger is "_granian"
            "message": record.getMessage(),
        }
        for name, var in CONTEXT.items():
            value = var.get()
            if value is not None:
                doc[name] = value
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                doc[key] = value
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(doc, default=str).decode()


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        extra = {k: v for k, v in record.__dict__.items() if k not in _STANDARD}
        base = (f"{time.strftime('%H:%M:%S')} {record.levelname:<7} {record.name}: "
                f"{record.getMessage()}")
        text = base + (f" {extra}" if extra else "")
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


class OncePerInterval(logging.Filter):
    """Lets through at most one record a minute from loggers under `prefix`, counting the rest:
    an unreachable trace collector fails every export, and a log line each time is noise."""

    def __init__(self, prefix: str, interval_seconds: float = 60.0) -> None:
        super().__init__()
        self._prefix = prefix
        self._interval = interval_seconds
        self._next = 0.0
        self._suppressed = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(self._prefix):
            return True
        now = time.monotonic()
        if now < self._next:
            self._suppressed += 1
            return False
        self._next = now + self._interval
        record.suppressed_since_last = self._suppressed
        self._suppressed = 0
        return True


def configure(level: str, as_json: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if as_json else TextFormatter())
    handler.addFilter(OncePerInterval("opentelemetry"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("aiormq", "aio_pika", "asyncio", "pgserver"):  # pgserver: initdb output
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


def granian_config(level: str, as_json: bool) -> dict[str, Any]:
    """Granian's logging dictConfig: its lines ("_granian", "granian.access") propagate to a root
    handler with our formatter, in the main process and in every worker it spawns."""
    formatter = "JsonFormatter" if as_json else "TextFormatter"
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"relayforge": {"()": f"{__name__}.{formatter}"}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "relayforge",
                                "stream": "ext://sys.stderr"}},
        "root": {"handlers": ["stderr"], "level": level},
        "loggers": {"_granian": {"handlers": [], "propagate": True},
                    "granian.access": {"handlers": [], "propagate": True}},
    }
