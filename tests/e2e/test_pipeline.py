"""The job pipeline against the real RabbitMQ and PostgreSQL: outbox → relay → broker →
consumer → state, retries, dead letters and reprocess (mode `all`, and separate processes)."""

from __future__ import annotations

import time
import uuid

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.pipeline_support import (
    FAST,
    amqp_env,
    delete_topology,
    drain_queue,
    publish_raw,
    send,
    wait_for_jobs,
)
from tests.support import (
    ADMIN_KEY,
    OPERATOR_KEY,
    new_tenant,
    run_sync,
    sign_generic,
    statements,
)

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
OPERATOR = {"Authorization": f"Bearer {OPERATOR_KEY}"}


@pytest.fixture(scope="module")
def prefix():
    name = f"rft.{uuid.uuid4().hex[:8]}"
    yield name
    run_sync(delete_topology(name))


@pytest.fixture(scope="module")
def pipeline(module_servers, prefix):
    """Mode `all` on RabbitMQ, three tries per job."""
    return module_servers("all", **amqp_env(prefix), **FAST, WORKER__MAX_ATTEMPTS="3")


async def test_deduped_event_makes_one_job_that_succeeds_on_attempt_1(client, pipeline, db):
    tenant = new_tenant()
    body = orjson.dumps({"event": "order.paid", "data": {"id": uuid.uuid4().hex}})
    headers = {"X-Signature": sign_generic(body), "X-Tenant-Id": tenant}
    responses = [await client.post(f"{pipeline.url}/webhooks/generic", content=body,
                                   headers=headers) for _ in range(3)]
    job_ids = {r.json()["job_id"] for r in responses}
    assert len(job_ids) == 1
    [job] = await wait_for_jobs(pipeline.database_url, list(job_ids))
    assert (job["status"], job["attempts"]) == ("succeeded", 1)
    conn = await db(pipeline.database_url)
    row = await conn.fetchrow("SELECT message_due_at, publish_failures FROM jobs WHERE id = $1",
                              job["id"])
    assert tuple(row) == (None, None)  # it owes no message: its one was sent once


async def test_fail_until_attempt_2_succeeds_on_attempt_3(client, pipeline, db):
    doc = await send(client, pipeline, fail_until_attempt=2)
    [job] = await wait_for_jobs(pipeline.database_url, [doc["job_id"]])
    assert (job["status"], job["attempts"], job["last_error"]) == ("succeeded", 3, None)
    conn = await db(pipeline.database_url)
    failed = [r["attempt"] for r in await conn.fetch(
        "SELECT attempt FROM job_attempts WHERE job_id = $1 ORDER BY attempt", job["id"])]
    assert failed == [1, 2]  # each failure scheduled the next attempt, which ran
    assert await conn.fetchval("SELECT message_due_at FROM jobs WHERE id = $1", job["id"]) is None


async def test_always_failing_job_is_dead_lettered_with_message_in_dlq(client, pipeline, prefix):
    doc = await send(client, pipeline, fail_until_attempt=100)
    [job] = await wait_for_jobs(pipeline.database_url, [doc["job_id"]])
    assert (job["status"], job["attempts"], job["max_attempts"]) == ("dead_lettered", 3, 3)
    assert "fail_until_attempt" in job["last_error"]
    dead = await drain_queue(f"{prefix}.dlq")
    assert doc["job_id"] in {m.headers.get("job_id") for m in dead}


async def test_permanent_failure_dead_letters_at_once(client, pipeline, prefix):
    """Its one attempt began at ingest, with no message: its message is put into the DLQ as
    the queue would have put it there."""
    doc = await send(client, pipeline, force_permanent_fail=True)
    [job] = await wait_for_jobs(pipeline.database_url, [doc["job_id"]])
    assert (job["status"], job["attempts"]) == ("dead_lettered", 1)
    dead = {m.headers.get("job_id"): m for m in await drain_queue(f"{prefix}.dlq")}
    assert orjson.loads(dead[doc["job_id"]].body)["attempt"] == 1


async def test_reprocess_runs_a_dead_letter_again_with_a_fresh_budget(client, pipeline):
    doc = await send(client, pipeline, fail_until_attempt=3)  # fails all 3 tries of the budget
    await wait_for_jobs(pipeline.database_url, [doc["job_id"]])
    r = await client.post(f"{pipeline.url}/admin/jobs/{doc['job_id']}/reprocess", headers=OPERATOR)
    assert r.status_code == 202 and r.json()["status"] == "pending"
    [job] = await wait_for_jobs(pipeline.database_url, [doc["job_id"]], ("succeeded",))
    assert (job["attempts"], job["max_attempts"]) == (4, 6)


async def test_reprocess_of_a_succeeded_job_is_409(client, pipeline):
    doc = await send(client, pipeline)
    await wait_for_jobs(pipeline.database_url, [doc["job_id"]])
    r = await client.post(f"{pipeline.url}/admin/jobs/{doc['job_id']}/reprocess", headers=OPERATOR)
    assert r.status_code == 409 and r.json()["code"] == "conflict"
    r = await client.post(f"{pipeline.url}/admin/jobs/{uuid.uuid4()}/reprocess", headers=OPERATOR)
    assert r.status_code == 404


async def test_bulk_reprocess_by_tenant(client, pipeline):
    tenant = new_tenant()
    docs = [await send(client, pipeline, tenant, force_permanent_fail=True) for _ in range(3)]
    other = await send(client, pipeline, force_permanent_fail=True)
    ids = [d["job_id"] for d in docs]
    await wait_for_jobs(pipeline.database_url, ids + [other["job_id"]])
    r = await client.post(f"{pipeline.url}/admin/jobs/reprocess", headers=OPERATOR,
                          json={"tenant_id": tenant, "source": "generic"})
    assert r.status_code == 202
    assert sorted(r.json()["job_ids"]) == sorted(ids) and r.json()["reprocessed"] == 3
    rows = await wait_for_jobs(pipeline.database_url, ids)
    assert {r["attempts"] for r in rows} == {2}


async def test_duplicate_message_never_reruns_a_succeeded_job(client, pipeline, prefix, db):
    doc = await send(client, pipeline)
    await wait_for_jobs(pipeline.database_url, [doc["job_id"]])
    message = orjson.dumps({"job_id": doc["job_id"], "tenant_id": str(uuid.uuid4()), "attempt": 1})
    for _ in range(3):
        await publish_raw(prefix, "job.generic", message)
    # a later message for the same job proves the duplicates were consumed before it
    marker = await send(client, pipeline)
    await wait_for_jobs(pipeline.database_url, [marker["job_id"]])
    conn = await db(pipeline.database_url)
    job = await conn.fetchrow("SELECT status, attempts FROM jobs WHERE id = $1",
                              uuid.UUID(doc["job_id"]))
    assert (job["status"], job["attempts"]) == ("succeeded", 1)


@pytest.mark.parametrize("body", [b"not json", b'{"job_id": "nope", "attempt": 1}',
                                  b'{"job_id": "%s", "attempt": 1}' % str(uuid.uuid4()).encode()])
async def test_poison_message_goes_to_the_dlq(pipeline, prefix, body):
    await publish_raw(prefix, "job.generic", body)
    dead = await drain_queue(f"{prefix}.dlq", timeout=10)
    assert body in {m.body for m in dead}


async def scrape(client, server) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = (await client.get(f"{server.url}/metrics")).text
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


@pytest.fixture
def own_prefix():
    """A topology no other server of the module consumes from."""
    name = f"rft.{uuid.uuid4().hex[:8]}"
    yield name
    run_sync(delete_topology(name))


async def test_metrics_move_with_the_work(client, start_server, own_prefix):
    """One job that fails once then succeeds moves every pipeline metric by exactly its share."""
    server = start_server("all", **amqp_env(own_prefix), **FAST)
    before = await scrape(client, server)
    doc = await send(client, server, fail_until_attempt=1)
    await wait_for_jobs(server.database_url, [doc["job_id"]], statuses=("succeeded",))
    after = await scrape(client, server)

    def moved(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert moved("jobs_created_total", source="generic") == 1
    assert moved("jobs_processed_total", status="retrying") == 1
    assert moved("jobs_processed_total", status="succeeded") == 1
    assert moved("job_retries_total") == 1
    assert moved("job_processing_duration_seconds_count") == 2
    # the first attempt began at ingest; the retry's message went through the broker
    assert moved("jobs_begun_at_ingest_total") == 1
    assert moved("outbox_published_total") == 1
    assert moved("http_requests_total", method="POST", route="/webhooks/{source}",
                 status="202") == 1
    assert moved("http_request_duration_seconds_count", method="POST",
                 route="/webhooks/{source}") == 1
    assert moved("dlq_messages_total") == 0


async def test_a_new_job_begins_where_it_was_received_with_no_message(client, start_server,
                                                                      own_prefix, db):
    """Mode `all`: the statement that records a new job begins its first attempt (leased),
    and this process runs it; no message goes through the relay and the broker for it. (The
    relay polls once a minute here: any claim it makes meanwhile is one ingest woke it for.)"""
    server = start_server("all", **amqp_env(own_prefix), **{
        **FAST, "RELAY__POLL_INTERVAL_MS": "60000"})
    before = await scrape(client, server)
    spent_before = statements((await client.get(f"{server.url}/metrics")).text)
    docs = [await send(client, server) for _ in range(5)]
    rows = await wait_for_jobs(server.database_url, [d["job_id"] for d in docs])
    assert [(r["status"], r["attempts"], r["message_due_at"]) for r in rows] == [
        ("succeeded", 1, None)] * 5
    after = await scrape(client, server)
    assert after[("jobs_begun_at_ingest_total", ())] \
        - before.get(("jobs_begun_at_ingest_total", ()), 0) == 5
    assert after[("outbox_published_total", ())] == before.get(("outbox_published_total", ()), 0)
    spent = {k: v - spent_before.get(k, 0)
             for k, v in statements((await client.get(f"{server.url}/metrics")).text).items()}
    assert spent.get("jobs_start", 0) == 0 and spent["ingest_accept"] == 5, spent
    assert spent.get("outbox_claim", 0) <= 1, spent  # at most its poll: ingest woke it for none


async def test_with_begin_at_ingest_off_every_job_goes_through_the_broker(client, start_server,
                                                                          own_prefix):
    server = start_server("all", **amqp_env(own_prefix), **FAST,
                          WORKER__BEGIN_AT_INGEST="false")
    before = await scrape(client, server)
    docs = [await send(client, server) for _ in range(3)]
    rows = await wait_for_jobs(server.database_url, [d["job_id"] for d in docs])
    assert [(r["status"], r["attempts"]) for r in rows] == [("succeeded", 1)] * 3
    after = await scrape(client, server)
    assert after.get(("jobs_begun_at_ingest_total", ()), 0) == 0
    assert after[("outbox_published_total", ())] \
        - before.get(("outbox_published_total", ()), 0) == 3


async def test_jobs_beyond_the_free_slots_go_through_the_broker(client, start_server,
                                                               fresh_database, own_prefix, db):
    """Two slots, held by slow handlers: the jobs that find none owe a message, which waits
    for a slot; each job runs once, none is lost."""
    database = fresh_database()
    conn = await db(database)
    await conn.execute("CREATE TABLE handler_runs (job_id uuid NOT NULL, attempt int NOT NULL, "
                       "finished_at timestamptz NOT NULL DEFAULT clock_timestamp())")
    server = start_server("all", database_url=database, **amqp_env(own_prefix), **FAST,
                          WORKER__CONCURRENCY="2", TEST_HANDLER_SLEEP="3",
                          WORKER__HANDLERS="generic=tests.handlers:recording")
    docs = [await send(client, server) for _ in range(6)]
    rows = await wait_for_jobs(database, [d["job_id"] for d in docs])
    assert [(r["status"], r["attempts"]) for r in rows] == [("succeeded", 1)] * 6
    runs = await conn.fetch("SELECT job_id, count(*) AS n FROM handler_runs GROUP BY job_id")
    assert sorted(str(r["job_id"]) for r in runs) == sorted(d["job_id"] for d in docs)
    assert {r["n"] for r in runs} == {1}
    metrics = await scrape(client, server)
    begun = metrics[("jobs_begun_at_ingest_total", ())]
    published = metrics.get(("outbox_published_total", ()), 0)
    assert begun >= 2 and published >= 1 and begun + published == 6, (begun, published)


async def test_readyz_checks_database_and_broker(client, pipeline):
    r = await client.get(f"{pipeline.url}/readyz")
    assert r.status_code == 200
    assert set(r.json()["checks"]) == {"database", "broker"}
    # the same checks, for Prometheus, on every scrape (RelayforgeNotReady)
    metrics = (await client.get(f"{pipeline.url}/metrics")).text.splitlines()
    assert sorted(line for line in metrics if line.startswith("readiness_check_ok{")) == [
        'readiness_check_ok{check="broker"} 1.0', 'readiness_check_ok{check="database"} 1.0']


async def test_in_process_broker_quick_start_carries_jobs_to_the_end(client, start_server):
    server = start_server("all", **FAST)
    ok = await send(client, server)
    retried = await send(client, server, fail_until_attempt=1)
    rows = await wait_for_jobs(server.database_url, [ok["job_id"], retried["job_id"]])
    assert sorted((r["status"], r["attempts"]) for r in rows) == [
        ("succeeded", 1), ("succeeded", 2)]


async def test_separate_ingest_relay_consume_processes(client, start_server, fresh_database,
                                                      prefix):
    database = fresh_database()
    names = amqp_env(prefix + ".sep")
    ingest = start_server("ingest", database_url=database, **FAST)
    relay = start_server("relay", database_url=database, **names, **FAST)
    consume = start_server("consume", database_url=database, **names, **FAST)
    docs = [await send(client, ingest, fail_until_attempt=i % 2) for i in range(10)]
    rows = await wait_for_jobs(database, [d["job_id"] for d in docs])
    assert all(r["status"] == "succeeded" for r in rows)
    for server in (relay, consume):
        assert (await client.get(f"{server.url}/healthz")).status_code == 200
        ready = await client.get(f"{server.url}/readyz")
        assert ready.status_code == 200 and set(ready.json()["checks"]) == {"database", "broker"}
        assert "outbox_pending_count" in (await client.get(f"{server.url}/metrics")).text
        # relay and consume serve no webhooks
        refused = await client.post(f"{server.url}/webhooks/generic", content=b"{}")
        assert refused.status_code == 404
    await delete_topology(prefix + ".sep")


async def test_relay_without_broker_url_refuses_to_start(start_server):
    with pytest.raises(RuntimeError, match="AMQP__URL"):
        start_server("relay")


async def test_test_faults_are_ignored_unless_enabled(client, start_server):
    server = start_server("all", **FAST, WORKER__ENABLE_TEST_FAULTS="false")
    failing = await send(client, server, fail_until_attempt=5)
    permanent = await send(client, server, force_permanent_fail=True)
    rows = await wait_for_jobs(server.database_url, [failing["job_id"], permanent["job_id"]])
    assert [(r["status"], r["attempts"]) for r in rows] == [("succeeded", 1)] * 2


async def test_retries_carry_the_providers_trace_with_tracing_off(client, pipeline, db):
    trace_id = uuid.uuid4().hex
    body = orjson.dumps({"event": "traced", "data": {"n": uuid.uuid4().hex},
                         "fail_until_attempt": 1})
    r = await client.post(f"{pipeline.url}/webhooks/generic", content=body, headers={
        "X-Signature": sign_generic(body), "X-Tenant-Id": new_tenant(),
        "traceparent": f"00-{trace_id}-{'3' * 16}-01"})
    [job] = await wait_for_jobs(pipeline.database_url, [r.json()["job_id"]])
    assert (job["status"], job["attempts"]) == ("succeeded", 2)
    conn = await db(pipeline.database_url)
    # the message of attempt 2 carried what attempt 1 had: the provider's trace
    traceparent = await conn.fetchval(
        "SELECT trace_context->>'traceparent' FROM jobs WHERE id = $1", job["id"])
    assert traceparent and traceparent[3:35] == trace_id, traceparent


async def test_the_relay_claims_deliveries_only_when_some_may_be_due(client, start_server,
                                                                     own_prefix):
    """Outbox traffic alone doesn't make the relay look for deliveries after every batch:
    it does on their own NOTIFY, at the time its next-due query gives, and at the latest
    once per poll interval (200 ms here). (Every job owes a message here: none begins at
    ingest.)"""
    server = start_server("all", **amqp_env(own_prefix), **FAST,
                          WORKER__BEGIN_AT_INGEST="false")
    before = statements((await client.get(f"{server.url}/metrics")).text)
    started = time.monotonic()
    docs = [await send(client, server) for _ in range(40)]  # one after another: a batch each
    await wait_for_jobs(server.database_url, [d["job_id"] for d in docs])
    elapsed = time.monotonic() - started
    after = statements((await client.get(f"{server.url}/metrics")).text)
    spent = {k: v - before.get(k, 0) for k, v in after.items()}
    assert spent["outbox_claim"] >= 10, spent  # (several rows may share a batch)
    assert spent.get("deliveries_claim", 0) <= elapsed / 0.2 + 2, (spent, elapsed)
