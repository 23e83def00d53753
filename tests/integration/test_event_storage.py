"""The body is stored once: a job whose event is a part of its body keeps only where, and the
event is put together from its first delivery's body when a consumer starts it or a delivery
sends it. Jobs recorded before this change (their event stored whole) read as they did, and
retention keeps a job's first delivery as long as the job."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import replace

import asyncpg
import orjson
import pytest

from relayforge.connectors import CONNECTORS
from relayforge.connectors.base import Signed
from relayforge.db.migrate import available, migrate
from relayforge.events import DomainEvent
from relayforge.ids import new_id
from relayforge.ingest import IngestWriter, arrive
from relayforge.settings import load_settings
from relayforge.stores import Stores
from relayforge.stores.destinations import NewDelivery
from tests import support

SETTINGS = load_settings({}, dotenv=False)
BEFORE = [m for m in available() if m.version < "0019"]


@pytest.fixture
async def old_database():
    """A database at the schema before the body was stored once."""
    name, url = await support.create_database(prefix="rf_evt")
    conn = await asyncpg.connect(url)
    await migrate(conn, BEFORE)
    yield conn
    await conn.close()
    await support.drop_database(name)


async def old_job(conn: asyncpg.Connection, event: DomainEvent) -> uuid.UUID:
    """A job and its inbox row as the server before 0019 wrote them: the event stored whole."""
    job_id, inbox_id, tenant = new_id(), new_id(), uuid.uuid4()
    body = orjson.dumps({"event": event.event_type, "data": event.data})
    digest = hashlib.sha256(body).hexdigest()
    await conn.execute(
        "INSERT INTO jobs (id, tenant_id, source, dedup_key, event_type, event, max_attempts, "
        "first_inbox_id, last_inbox_id) VALUES ($1, $2, 'generic', $3, $4, $5, 3, $6, $6)",
        job_id, tenant, "hash:" + digest, event.event_type, event.to_json(), inbox_id)
    await conn.execute(
        "INSERT INTO webhook_inbox (id, tenant_id, source, event_type, dedup_key, payload_hash,"
        " body, accepted, signature_valid, job_id) VALUES ($1, $2, 'generic', $3, $4, $5, $6,"
        " true, true, $7)", inbox_id, tenant, event.event_type, "hash:" + digest, digest, body,
        job_id)
    return job_id


async def record(stores: Stores, tenant: uuid.UUID, body: bytes,
                 headers: dict[bytes, bytes] | None = None) -> uuid.UUID:
    """A generic webhook through the real ingest path (normalize, then the batch statement)."""
    arrival = arrive(CONNECTORS["generic"], SETTINGS, tenant_id=tenant, headers=headers or {},
                     body=body,
                     signed=Signed(), request_id="r", correlation_id="c", trace_carrier={})
    writer = IngestWriter(stores, SETTINGS)
    await writer.start()
    try:
        await writer.record(arrival)
    finally:
        await writer.close()
    assert arrival.failure is None and arrival.job_id is not None
    return arrival.job_id


async def today(conn: asyncpg.Connection) -> tuple[asyncpg.Connection, Stores, uuid.UUID]:
    """The database at today's schema, its stores and a new tenant."""
    await migrate(conn)
    return conn, Stores(conn), uuid.uuid4()


async def test_old_and_new_jobs_start_with_the_events_they_were_given(old_database):
    conn = old_database
    before = DomainEvent("generic", "old.one", None, None, {"kept": ["whole", 1]})
    old_id = await old_job(conn, before)
    await migrate(conn)  # to today's schema, with the old row in it
    stores = Stores(conn)
    tenant = uuid.uuid4()
    body = b'{\n  "event": "new.one",\n  "data": {"n": 1.5, "s": "\\u00e9", "l": [null]}\n}'
    new_id_ = await record(stores, tenant, body)

    stored = await conn.fetchrow("SELECT event, data_path FROM jobs WHERE id = $1", new_id_)
    assert stored["event"] is None and stored["data_path"] == ["data"]  # no second copy
    assert await conn.fetchval("SELECT event IS NOT NULL FROM jobs WHERE id = $1", old_id)

    started = {j.id: j.event for j in await stores.jobs.start_many(
        attempts=[(old_id, 1), (new_id_, 1)], lease_seconds=60)}
    assert started[old_id] == before
    expected = CONNECTORS["generic"].normalize({}, body)
    assert started[new_id_] == expected
    assert (await stores.jobs.event(job_id=new_id_)).to_json() == expected.to_json()
    assert await stores.jobs.event(job_id=old_id) == before


async def test_an_event_destination_gets_the_events_json_byte_for_byte(old_database):
    conn, stores, tenant = await today(old_database)
    body = b'{"event": "invoice.paid", "data": {"id": "in_1", "lines": [1, 2]}}'
    job_id = await record(stores, tenant, body)
    destination = new_id()
    await conn.execute(
        "INSERT INTO destinations (id, tenant_id, url, payload) "
        "VALUES ($1, $2, 'https://example.com/hook', 'event')", destination, tenant)
    rows = await conn.fetch("SELECT * FROM delivery_requests WHERE job_id = $1", job_id)
    assert rows[0]["event"] is None and rows[0]["body"] == body
    [job] = await stores.jobs.start_many(attempts=[(job_id, 1)], lease_seconds=60)
    made = await stores.deliveries.fan_out(
        deliveries=[NewDelivery(new_id(), job_id, destination, tenant, "{}", "started")],
        jobs={job_id: job}, max_attempts=3, claim_seconds=60)
    request = made[0].started
    assert request is not None
    assert request.event == CONNECTORS["generic"].normalize({}, body).to_json()


@pytest.mark.parametrize("payload", ["raw", "event"])
async def test_a_fan_out_starts_the_request_a_later_attempt_would_make(old_database, payload):
    """A delivery its fan-out starts is sent its job's event and body as the job's start read
    them; a later attempt reads them again through delivery_requests. The two requests are the
    same, byte for byte, for a job whose event is put together from its body and for one that
    stores it whole (recorded before 0019)."""
    conn = old_database
    whole = DomainEvent("generic", "old.one", None, None, {"kept": ["whole", 1.5, "\u00e9"]})
    old_id = await old_job(conn, whole)
    conn, stores, tenant = await today(conn)
    body = b'{"event": "new.one",\n "data": {"n": 1.5, "s": "\\u00e9"}}'
    new_id_ = await record(stores, tenant, body,
                           {b"content-type": b"application/json; charset=utf-8"})
    jobs = {r["id"]: r["tenant_id"] for r in await conn.fetch("SELECT id, tenant_id FROM jobs")}
    destinations = {}
    for job_id, owner in jobs.items():
        destinations[job_id] = new_id()
        await conn.execute(
            "INSERT INTO destinations (id, tenant_id, url, payload, headers_nonce, "
            "headers_ciphertext) VALUES ($1, $2, 'https://example.com/hook', $3, $4, $5)",
            destinations[job_id], owner, payload, b"n" * 12, b"sealed headers")
        await conn.execute(
            "INSERT INTO destination_secrets (id, destination_id, nonce, ciphertext, fingerprint)"
            " VALUES ($1, $2, $3, $4, 'f')", new_id(), destinations[job_id], b"k" * 12,
            b"sealed secret")
    started = {j.id: j for j in await stores.jobs.start_many(
        attempts=[(old_id, 1), (new_id_, 1)], lease_seconds=60)}
    assert started.keys() == {old_id, new_id_}
    made = await stores.deliveries.fan_out(
        deliveries=[NewDelivery(new_id(), j, destinations[j], jobs[j], "{}", "started")
                    for j in sorted(jobs)], jobs=started, max_attempts=3, claim_seconds=60)
    first = {m.started.job_id: m.started for m in made if m.started is not None}
    assert first.keys() == {old_id, new_id_}
    assert first[new_id_].content_type == "application/json; charset=utf-8"
    assert first[new_id_].body == body
    await conn.execute("UPDATE deliveries SET status = 'retrying'")
    again = {d.job_id: d for d in await stores.deliveries.start_many(
        attempts=[(m.id, 2) for m in made], lease_seconds=60, closed_only=False)}
    for job_id in jobs:
        later = replace(again[job_id], attempts=1)
        if payload == "raw":  # sent the body: the event is never read (the view has it whole)
            assert first[job_id].event is None
            later = replace(later, event=None)
        assert later == first[job_id]
    if payload == "event":
        assert first[old_id].event == whole.to_json()
        assert first[new_id_].event == CONNECTORS["generic"].normalize({}, body).to_json()
