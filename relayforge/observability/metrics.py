"""Every Prometheus metric of Relayforge, declared once."""

from __future__ import annotations

import os
from typing import Any, TypeVar

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client import REGISTRY as DEFAULT_REGISTRY

disable_created_metrics()  # type: ignore[no-untyped-call]  # no `_created` series: noise

HTTP_REQUESTS = Counter(
    "http_requests_total", "HTTP requests by route template", ["route", "method", "status"]
)
HTTP_DURATION = Histogram(
    "http_request_duration_seconds", "HTTP request duration", ["route", "method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
SILENT_CONNECTIONS_CLOSED = Counter(
    "http_silent_connections_closed_total",
    "Connections closed for sending no byte within SERVER__HEADER_READ_TIMEOUT_MS",
)
WEBHOOKS_REJECTED = Counter(
    "webhooks_rejected_total", "Webhook requests refused, by contract code", ["source", "code"]
)
JOBS_CREATED = Counter("jobs_created_total", "Jobs created by ingest", ["source"])
JOBS_PROCESSED = Counter(
    "jobs_processed_total", "Job attempts finished, by resulting status", ["status"]
)
JOB_DURATION = Histogram(
    "job_processing_duration_seconds", "Handler run time per attempt",
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60),
)
JOB_END_TO_END = Histogram(
    "job_end_to_end_seconds",
    "From the webhook's acceptance (its job's creation) to the job's success, database clock",
    buckets=(0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30, 60, 300),
)
OUTCOME_LAG = Histogram(
    "job_outcome_lag_seconds",
    "From a handler's end to its outcome's commit: a consume process killed within it runs the "
    "handler again",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
OUTCOMES_UNWRITTEN = Gauge("consumer_outcomes_unwritten",
                           "Handlers finished whose outcome is not yet committed",
                           multiprocess_mode="livesum")
JOBS_IN_FLIGHT = Gauge("consumer_jobs_in_flight", "Messages in hand in this consumer",
                       multiprocess_mode="livesum")
JOB_RETRIES = Counter("job_retries_total", "Job attempts scheduled for retry")
DLQ_MESSAGES = Counter("dlq_messages_total", "Messages dead-lettered (jobs and poison messages)")
# max across worker processes (PROMETHEUS_MULTIPROC_DIR): each relay reads the same table
OUTBOX_PENDING = Gauge("outbox_pending_count",
                       "Messages jobs owe, not published yet (a job is its own outbox entry)",
                       multiprocess_mode="max")
# Read from the database when /metrics is scraped (at most every LAG_REFRESH_SECONDS), by every
# process that serves it; with several workers the largest answer wins ("max").
OUTBOX_OLDEST_AGE = Gauge("outbox_oldest_pending_age_seconds",
                          "How long the most overdue message of a job has been due (0 when none)",
                          multiprocess_mode="max")
JOBS_WAITING = Gauge("jobs_in_state", "Jobs in each open state", ["status"],
                     multiprocess_mode="max")
JOBS_OLDEST_WAITING_AGE = Gauge(
    "jobs_oldest_waiting_age_seconds",
    "Age of the oldest job queued or retrying, waiting for a consumer (0 when none)",
    multiprocess_mode="max")
BROKER_QUEUE_MESSAGES = Gauge(
    "broker_queue_messages", "Messages ready in the broker's queue (jobs, dlq), read on scrape",
    ["queue"], multiprocess_mode="max")
DB_POOL_IN_USE = Gauge("db_pool_connections_in_use", "Database connections lent out",
                       multiprocess_mode="livesum")
DB_POOL_SIZE = Gauge("db_pool_connections_max", "Database connections this process may open",
                     multiprocess_mode="livesum")
DB_STATEMENTS = Counter(
    "db_statements_total",
    "Statements this process ran on PostgreSQL, by named query (begin, commit, other)",
    ["query"])
JOBS_BEGUN_AT_INGEST = Counter(
    "jobs_begun_at_ingest_total",
    "New jobs whose first attempt began in the process that received them (no message)")
OUTBOX_PUBLISHED = Counter("outbox_published_total",
                           "Messages published with a confirm (jobs and deliveries)")
OUTBOX_PUBLISH_FAILURES = Counter(
    "outbox_publish_failures_total", "Messages the broker refused or could not take")
OUTBOX_SET_ASIDE = Counter(
    "outbox_set_aside_total", "Jobs set aside as unpublishable (dead-lettered)")
INGEST_BATCH_SIZE = Histogram(
    "ingest_batch_size", "Requests written per ingest transaction",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
)
DELIVERIES = Counter(
    "deliveries_total",
    "Delivery attempts and decisions by outcome (succeeded, retrying, dead_lettered, deferred)",
    ["outcome"])
DELIVERY_DURATION = Histogram(
    "delivery_duration_seconds", "The HTTP call of one delivery attempt",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
READINESS = Gauge("readiness_check_ok",
                  "1 while a readiness check passes, 0 while it fails (run on every scrape)",
                  ["check"], multiprocess_mode="min")
DESTINATIONS_CIRCUIT_OPEN = Gauge(
    "destinations_circuit_open", "Enabled destinations whose circuit is open (read on scrape)",
    multiprocess_mode="max")
DELIVERIES_WAITING = Gauge("deliveries_in_state", "Deliveries in each open state (read on scrape)",
                           ["status"], multiprocess_mode="max")
DELIVERIES_OLDEST_WAITING_AGE = Gauge(
    "deliveries_oldest_waiting_age_seconds",
    "Age of the oldest delivery not yet succeeded or dead-lettered (0 when none)",
    multiprocess_mode="max")
CONSOLE_CSP_VIOLATIONS = Counter(
    "console_csp_violations_total", "Content-Security-Policy violations the console was told of")
JOBS_RECOVERED = Counter("jobs_recovered_total", "Jobs whose processing lease expired")
RETENTION_DELETED = Counter("retention_deleted_rows_total",
                            "Rows retention deleted (RETENTION__*_DAYS), by table", ["table"])
RETENTION_PARTITIONS_DROPPED = Counter(
    "retention_partitions_dropped_total", "Day partitions retention dropped, by table", ["table"])
RETENTION_OLDEST_ROW_AGE = Gauge(
    "retention_oldest_row_age_seconds",
    "Age of each partitioned table's oldest row (at the last prune)", ["table"],
    multiprocess_mode="max")
PARTITIONS_CREATED = Counter(
    "retention_partitions_created_total",
    "Day partitions made: ahead by the upkeep, or on demand by a write that found none "
    "(how=on_demand: the upkeep is not keeping up)", ["table", "how"])
JOBS_REPUBLISHED = Counter(
    "jobs_republished_total",
    "Jobs queued past RELAY__QUEUED_TIMEOUT_SECONDS, their message sent again")


M = TypeVar("M", Counter, Gauge, Histogram)
_children: dict[tuple[Any, tuple[str, ...]], Any] = {}


def child(metric: M, *labels: str) -> M:
    """`metric.labels(*labels)`, looked up once per label set: labels() takes a lock and
    checks its arguments on every call, which the per-request paths would pay each time."""
    key = (metric, labels)
    found = _children.get(key)
    if found is None:
        found = _children[key] = metric.labels(*labels)
    return found


def render() -> tuple[bytes, str]:
    """The exposition text; merges worker processes when PROMETHEUS_MULTIPROC_DIR is set."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import ProcessCollector, multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        ProcessCollector(registry=registry)  # process_* of the worker that answers
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(DEFAULT_REGISTRY), CONTENT_TYPE_LATEST
