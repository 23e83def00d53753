"""Observability through a real server: one OpenTelemetry trace from the provider's request to the
job's last retry, and JSON log lines carrying request, correlation, trace, tenant and job ids."""

from __future__ import annotations

import asyncio
import http.server
import threading
import time
import uuid

import orjson
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.e2e.pipeline_support import FAST, wait_for_jobs
from tests.support import eventually, free_port


def _log_lines(server, message: str) -> list[dict]:
    """The server's JSON log lines once one of them says `message` (else none)."""
    lines = [orjson.loads(line) for line in server.log().splitlines() if line.startswith("{")]
    return lines if any(x.get("message") == message for x in lines) else []


class Collector:
    """An OTLP/HTTP receiver on loopback that keeps every span it is sent."""

    def __init__(self) -> None:
        self.spans: list = []
        collector = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                for resource in request.resource_spans:
                    for scope in resource.scope_spans:
                        collector.spans.extend(scope.spans)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                return None

        self.port = free_port()
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture
def collector():
    c = Collector()
    yield c
    c.close()


async def test_one_trace_from_request_to_last_retry(client, start_server, collector):
    server = start_server("all", **FAST, OTEL__ENABLED="true",
                          OTEL__EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{collector.port}",
                          OTEL_BSP_SCHEDULE_DELAY="100")
    trace_id = uuid.uuid4().hex
    parent = "1" * 16
    body = orjson.dumps({"event": "traced", "fail_until_attempt": 2})
    from tests.support import sign_generic

    r = await client.post(f"{server.url}/webhooks/generic", content=body, headers={
        "X-Signature": sign_generic(body), "traceparent": f"00-{trace_id}-{parent}-01"})
    assert r.status_code == 202
    [job] = await wait_for_jobs(server.database_url, [r.json()["job_id"]])
    assert job["attempts"] == 3
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        ours = [s for s in collector.spans if s.trace_id.hex() == trace_id]
        if sum(s.name == "job generic" for s in ours) == 3:
            break
        await asyncio.sleep(0.1)
    ours = [s for s in collector.spans if s.trace_id.hex() == trace_id]
    by_id = {s.span_id.hex(): s for s in ours}
    assert ours, sorted({(s.name, s.trace_id.hex()) for s in collector.spans})[:10]
    [ingest] = [s for s in ours if s.name == "POST /webhooks/{source}"]
    assert ingest.parent_span_id.hex() == parent  # continues the provider's trace
    attempts = sorted((s for s in ours if s.name == "job generic"),
                      key=lambda s: s.start_time_unix_nano)
    assert len(attempts) == 3
    # attempt 1 is a child of the request; every retry a child of the attempt before it
    assert attempts[0].parent_span_id.hex() == ingest.span_id.hex()
    for previous, current in zip(attempts, attempts[1:], strict=False):
        assert by_id[current.parent_span_id.hex()] is previous


async def test_logs_are_json_lines_with_context(client, start_server):
    server = start_server("all", **FAST, LOG__LEVEL="DEBUG")  # OpenTelemetry SDK off
    trace_id = uuid.uuid4().hex
    body = orjson.dumps({"event": "logged"})
    from tests.support import sign_generic

    r = await client.post(f"{server.url}/webhooks/generic", content=body, headers={
        "X-Signature": sign_generic(body), "traceparent": f"00-{trace_id}-{'2' * 16}-01",
        "X-Correlation-Id": "corr-log-1"})
    doc = r.json()
    await wait_for_jobs(server.database_url, [doc["job_id"]])
    lines = await eventually(lambda: _log_lines(server, "job succeeded"))
    access = [x for x in lines if x.get("message") == "request" and x.get("route") ==
              "/webhooks/{source}"]
    mine = [x for x in access if x.get("correlation_id") == "corr-log-1"]
    assert mine and {"timestamp", "level", "request_id", "status"} <= set(mine[0])
    assert mine[0]["trace_id"] == trace_id  # carried even with the SDK off
    # the 202's access line says what the request became
    assert (mine[0]["job_id"], mine[0]["inbox_id"], mine[0]["deduped"]) == (
        doc["job_id"], doc["inbox_id"], False)
    processed = [x for x in lines if x.get("message") == "event processed"
                 and x.get("job_id") == doc["job_id"]]
    assert processed and processed[0]["level"] == "info"  # the default handler's line
    done = [x for x in lines if x.get("message") == "job succeeded"
            and x.get("job_id") == doc["job_id"]]
    assert done and done[0]["trace_id"] == trace_id
    assert done[0]["correlation_id"] == "corr-log-1" and "tenant_id" in done[0]


async def test_access_lines_leave_probes_out_and_name_code_and_source(client, start_server):
    server = start_server("all", **FAST, LOG__LEVEL="INFO")
    for _ in range(3):
        await client.get(f"{server.url}/healthz")
        await client.get(f"{server.url}/readyz")
    metrics = (await client.get(f"{server.url}/metrics")).text
    names = {line.split("{")[0].split(" ")[0] for line in metrics.splitlines()
             if line and not line.startswith("#")}
    assert "jobs_created_total" in names or "http_requests_total" in names
    assert not [n for n in names if n.endswith("_created")]  # no _created series
    bad = await client.post(f"{server.url}/webhooks/GitHub", content=b"{}",
                            headers={"X-Hub-Signature-256": "sha256=00"})
    assert bad.status_code == 401
    body = orjson.dumps({"event": "fails.once", "fail_until_attempt": 1})
    from tests.support import sign_generic

    doc = (await client.post(f"{server.url}/webhooks/generic", content=body,
                             headers={"X-Signature": sign_generic(body)})).json()
    await wait_for_jobs(server.database_url, [doc["job_id"]])
    lines = await eventually(lambda: _log_lines(server, "job will retry"))
    access = [x for x in lines if x.get("message") == "request"]
    assert not [x for x in access if x["route"] in ("/healthz", "/readyz", "/metrics")]
    [refused] = [x for x in access if x["status"] == 401]
    assert (refused["code"], refused["source"]) == ("invalid_signature", "github")
    [retry] = [x for x in lines if x.get("message") == "job will retry"]
    assert "Traceback" in retry["exception"] and "fail_until_attempt" in retry["exception"]


async def test_one_trace_from_request_through_the_delivery_http_call(client, start_server,
                                                                     collector):
    """The provider's trace runs through ingest, the job, the delivery span, and on into the
    tenant's service as the traceparent of the delivery's request."""
    from tests.e2e.receiver import Receiver
    from tests.support import ADMIN_KEY, new_tenant, sign_generic

    receiver = await Receiver().start()
    try:
        server = start_server("all", **FAST, OTEL__ENABLED="true",
                              OTEL__EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{collector.port}",
                              OTEL_BSP_SCHEDULE_DELAY="100",
                              DESTINATIONS__ALLOW_PRIVATE_NETWORKS="true")
        tenant = new_tenant()
        r = await client.post(f"{server.url}/admin/tenants/{tenant}/destinations",
                              headers={"Authorization": f"Bearer {ADMIN_KEY}"},
                              json={"url": f"{receiver.url}/traced"})
        assert r.status_code == 201, r.text
        trace_id = uuid.uuid4().hex
        body = orjson.dumps({"event": "traced.delivery", "data": {}})
        r = await client.post(f"{server.url}/webhooks/generic", content=body, headers={
            "X-Signature": sign_generic(body), "X-Tenant-Id": tenant,
            "traceparent": f"00-{trace_id}-{'3' * 16}-01"})
        assert r.status_code == 202
        [got] = await receiver.wait_for("/traced", 1)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            ours = {s.name: s for s in collector.spans if s.trace_id.hex() == trace_id}
            if "deliver" in ours:
                break
            await asyncio.sleep(0.1)
        assert {"POST /webhooks/{source}", "job generic", "deliver"} <= set(ours), set(ours)
        deliver = ours["deliver"]
        assert deliver.parent_span_id == ours["job generic"].span_id  # fanned out by the job
        version, incoming_trace, parent_span, _ = got.headers["traceparent"].split("-")
        assert incoming_trace == trace_id  # the tenant's service continues the same trace
        assert parent_span == deliver.span_id.hex()
    finally:
        await receiver.stop()
