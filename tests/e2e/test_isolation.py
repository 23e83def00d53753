"""One bad item never harms another: a request or outbox row that can't be carried fails alone
while other tenants' webhooks keep being accepted and their jobs keep succeeding."""

from __future__ import annotations

import asyncio
import uuid

import orjson
import pytest

from tests.e2e.pipeline_support import FAST, amqp_env, delete_topology, send, wait_for_jobs
from tests.support import OPERATOR_KEY, new_tenant, run_sync, sign_generic

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
HUGE = 140_000


@pytest.fixture(scope="module")
def prefix():
    name = f"rft.{uuid.uuid4().hex[:8]}"
    yield name
    run_sync(delete_topology(name))


async def signed(client, server, extra_headers: dict[str, str], tenant: str | None = None):
    body = orjson.dumps({"event": "test.event", "data": {"n": uuid.uuid4().hex}})
    return await client.post(f"{server.url}/webhooks/generic", content=body, headers={
        "X-Signature": sign_generic(body), "X-Tenant-Id": tenant or new_tenant(),
        **extra_headers})


POISONED_HEADERS = [
    {"tracestate": "a=" + "x" * HUGE},                                # no traceparent
    {"baggage": "b=" + "y" * HUGE},
    {"traceparent": TRACEPARENT, "tracestate": "a=" + "x" * HUGE},
    {"traceparent": "not-a-traceparent", "tracestate": "a=1", "baggage": "c=" + "z" * 9000},
]


async def test_oversized_trace_headers_halt_no_delivery(client, start_server, prefix, db):
    server = start_server("all", **amqp_env(prefix), **FAST)
    normal = [signed(client, server, {}) for _ in range(40)]
    poisoned = [signed(client, server, h) for h in POISONED_HEADERS for _ in range(2)]
    responses = await asyncio.gather(*normal[:20], *poisoned, *normal[20:])
    assert [r.status_code for r in responses] == [202] * len(responses), responses[0].text
    job_ids = [r.json()["job_id"] for r in responses]
    rows = await wait_for_jobs(server.database_url, job_ids, timeout=60)
    assert {r["status"] for r in rows} == {"succeeded"}
    conn = await db(server.database_url)
    stored = await conn.fetch("SELECT trace_context::text AS h FROM jobs")
    assert max(len(r["h"]) for r in stored) < 1024  # nothing unbounded was kept
    assert (await client.get(f"{server.url}/readyz")).status_code == 200


async def test_an_unpublishable_row_is_set_aside_while_the_rest_flow(client, start_server, prefix,
                                                                     db):
    """Rows written before the bounds existed, or by another version: one carries a 140 KB
    tracestate (bounded when published), one a job whose source makes a routing key the broker
    can't route (`job.generic.legacy` misses `job.*`: refused every time). The refused one is
    set aside after RELAY__MAX_PUBLISH_FAILURES and its job dead-lettered with the reason;
    every other job succeeds; once the cause is fixed, a reprocess re-arms it."""
    ingest = start_server("ingest")
    early = [await send(client, ingest) for _ in range(6)]
    conn = await db(ingest.database_url)
    unroutable, oversized = uuid.UUID(early[0]["job_id"]), uuid.UUID(early[1]["job_id"])
    await conn.execute("UPDATE jobs SET source = 'generic.legacy' WHERE id = $1", unroutable)
    await conn.execute("UPDATE jobs SET trace_context = $2::jsonb WHERE id = $1",
                       oversized, orjson.dumps({"tracestate": "a=" + "x" * HUGE}).decode())

    pipeline = start_server("all", database_url=ingest.database_url, **amqp_env(prefix), **FAST,
                            RELAY__MAX_PUBLISH_FAILURES="2")
    later = await asyncio.gather(*(send(client, pipeline) for _ in range(30)))
    job_ids = [d["job_id"] for d in early + list(later)]
    rows = {str(r["id"]): r for r in await wait_for_jobs(pipeline.database_url, job_ids)}
    bad = rows.pop(str(unroutable))
    assert bad["status"] == "dead_lettered"
    assert "could not be published (2 tries)" in bad["last_error"]
    assert {r["status"] for r in rows.values()} == {"succeeded"}
    row = await conn.fetchrow("SELECT message_due_at, publish_failures FROM jobs WHERE id = $1",
                              unroutable)
    assert (row["message_due_at"], row["publish_failures"]) == (None, 2)  # owes nothing now

    await conn.execute("UPDATE jobs SET source = 'generic' WHERE id = $1", unroutable)
    r = await client.post(f"{pipeline.url}/admin/jobs/{unroutable}/reprocess",
                          headers={"Authorization": f"Bearer {OPERATOR_KEY}"})
    assert r.status_code == 202, r.text
    [job] = await wait_for_jobs(pipeline.database_url, [str(unroutable)],
                                statuses=("succeeded",))
    assert job["attempts"] == 1


def nested(depth: int) -> bytes:
    """A generic body whose `data` nests `depth` levels (the body one more)."""
    return b'{"event":"deep","data":' + b"[" * depth + b"]" * depth + b"}"


async def test_deep_json_fails_alone_among_other_tenants(client, start_server, prefix):
    server = start_server("all", **amqp_env(prefix), **FAST)
    victim = new_tenant()

    async def post(body: bytes, tenant: str):
        return await client.post(f"{server.url}/webhooks/generic", content=body, headers={
            "X-Signature": sign_generic(body), "X-Tenant-Id": tenant})

    attacker = new_tenant()
    deep = [post(nested(d), attacker) for d in (300, 600, 1023, 1024, 2000) for _ in range(2)]
    normal = [post(orjson.dumps({"event": "ok", "data": {"n": uuid.uuid4().hex}}), victim)
              for _ in range(150)]
    responses = await asyncio.gather(*normal[:75], *deep, *normal[75:])
    deep_responses = responses[75:85]
    normal_responses = responses[:75] + responses[85:]
    assert {r.status_code for r in normal_responses} == {202}
    assert {(r.status_code, r.json()["code"]) for r in deep_responses} == {
        (400, "invalid_payload")}
    rows = await wait_for_jobs(server.database_url, [r.json()["job_id"] for r in normal_responses])
    assert {r["status"] for r in rows} == {"succeeded"}


async def test_depth_limit_is_exact(client, ingest_server):
    """The event's data may nest 253 levels (254 with the event around it): 202; one more: 400."""
    for depth, status in ((253, 202), (254, 400)):
        body = nested(depth)
        r = await client.post(f"{ingest_server.url}/webhooks/generic", content=body, headers={
            "X-Signature": sign_generic(body), "X-Tenant-Id": new_tenant()})
        assert r.status_code == status, (depth, r.text)
    assert "at most 253 levels" in r.json()["error"]
