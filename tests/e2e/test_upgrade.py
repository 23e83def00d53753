"""A database from before partitioned history and before jobs were their own outbox, with rows
in it, upgraded in place: its tables become the first partitions as they are, a message pending
in the outbox becomes its job's, and every row stays readable through the admin API and the
console, next to webhooks recorded after the upgrade."""

from __future__ import annotations

import base64
import hashlib
import uuid

import asyncpg
import orjson

from relayforge.db.migrate import available, migrate
from relayforge.ids import new_id
from relayforge.stores.ingest import NewItem
from tests.support import (
    ADMIN_KEY,
    create_database,
    drop_database,
    generic_body,
    post_generic,
    sign_stripe,
    stripe_event,
)

PARTITIONED = "0023_history_bounds"  # and every migration after it


async def rows_before_the_upgrade(conn: asyncpg.Connection, tenant: uuid.UUID) -> NewItem:
    """A webhook recorded as a server of that schema did (its event put together from the body
    when read; its message pending in the outbox), an audit entry naming its job, and a Stripe
    event's replay key."""
    body = orjson.dumps({"event": "order.created", "data": {"order": 7}})
    item = NewItem(
        inbox_id=new_id(), job_id=new_id(), tenant_id=tenant, source="generic",
        event_type="order.created", provider_event_id=None,
        dedup_key=f"hash:{hashlib.sha256(body).hexdigest()}",
        payload_hash=hashlib.sha256(body).hexdigest(),
        headers='{"content-type": "application/json"}', body=body, event=None,
        request_id="req-before", correlation_id="corr-before", trace_context="{}",
        occurred_at_unix=None, data_path=["data"])
    await conn.execute(
        "INSERT INTO jobs (id, tenant_id, source, dedup_key, event_type, data_path, max_attempts, "
        "correlation_id, trace_context, first_inbox_id, last_inbox_id) "
        "VALUES ($1, $2, $3, $4, $5, $6, 3, $7, $8::jsonb, $9, $9)",
        item.job_id, tenant, item.source, item.dedup_key, item.event_type, item.data_path,
        item.correlation_id, '{"traceparent": "00-before"}', item.inbox_id)
    await conn.execute(
        "INSERT INTO webhook_inbox (id, tenant_id, source, event_type, dedup_key, payload_hash, "
        "headers, body, accepted, signature_valid, job_id, request_id) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8, true, true, $9, $10)",
        item.inbox_id, tenant, item.source, item.event_type, item.dedup_key, item.payload_hash,
        item.headers, item.body, item.job_id, item.request_id)
    await conn.execute("INSERT INTO outbox_messages (job_id, tenant_id, attempt, headers) "
                       "VALUES ($1, $2, 1, '{\"traceparent\": \"00-before\"}')",
                       item.job_id, tenant)
    await conn.execute("INSERT INTO admin_audit_log (key_source, role, action, target) "
                       "VALUES ('cli', 'admin', 'job.reprocess', $1)", str(item.job_id))
    await conn.execute("INSERT INTO stripe_event_idempotency (tenant_id, source, event_id) "
                       "VALUES ($1, 'stripe', 'evt_before_the_upgrade')", tenant)
    return item


async def test_an_upgraded_database_keeps_every_row_readable(start_server, client):
    name, url = await create_database(prefix="rf_upg")
    try:
        conn = await asyncpg.connect(url)
        try:
            await migrate(conn, [m for m in available() if m.version < PARTITIONED])
            tenant = uuid.uuid4()
            item = await rows_before_the_upgrade(conn, tenant)
            assert PARTITIONED in await migrate(conn)
            firsts = {r["name"] for r in await conn.fetch(
                "SELECT c.relname AS name FROM pg_inherits i JOIN pg_class c "
                "ON c.oid = i.inhrelid WHERE c.relname LIKE '%\\_before\\_%'")}
            assert {n.rsplit("_before_", 1)[0] for n in firsts} == {  # adopted, not copied
                "webhook_inbox", "admin_audit_log", "stripe_event_idempotency"}
            owed = await conn.fetchrow("SELECT message_due_at, attempts, trace_context::text "
                                       "AS tc FROM jobs WHERE id = $1", item.job_id)
            assert owed["message_due_at"] is not None and owed["attempts"] == 0  # handed over
            assert orjson.loads(owed["tc"]) == {"traceparent": "00-before"}
            assert await conn.fetchval("SELECT count(*) FROM outbox_messages") == 0
        finally:
            await conn.close()

        server = start_server("ingest", database_url=url)
        admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
        after = await post_generic(client, server, generic_body(), str(tenant))
        assert after.status_code == 202, after.text

        inbox = await client.get(f"{server.url}/admin/inbox/{item.inbox_id}", headers=admin)
        assert inbox.status_code == 200, inbox.text
        assert base64.b64decode(inbox.json()["body_base64"]) == item.body
        job = await client.get(f"{server.url}/admin/jobs/{item.job_id}", headers=admin)
        assert job.status_code == 200 and job.json()["first_inbox_id"] == str(item.inbox_id)
        listed = await client.get(f"{server.url}/admin/inbox", headers=admin,
                                  params={"tenant_id": str(tenant)})
        assert {r["id"] for r in listed.json()["items"]} \
            == {str(item.inbox_id), after.json()["inbox_id"]}

        login = await client.post(f"{server.url}/console/login", data={"key": ADMIN_KEY})
        assert login.status_code in (200, 303), login.text
        client.cookies.update(login.cookies)
        page = await client.get(f"{server.url}/console/jobs/{item.job_id}")
        assert page.status_code == 200 and str(item.inbox_id) in page.text
        assert "&#34;order&#34;: 7" in page.text  # the event, put together from the old body
        raw = await client.get(f"{server.url}/console/inbox/{item.inbox_id}/body")
        assert raw.status_code == 200 and item.body.decode() in raw.text
        audit = await client.get(f"{server.url}/console/audit")
        assert audit.status_code == 200 and str(item.job_id) in audit.text

        body = stripe_event("evt_before_the_upgrade")  # its key was kept: still a replay
        replay = await client.post(f"{server.url}/tenants/{tenant}/webhooks/stripe", content=body,
                                   headers={"Stripe-Signature": sign_stripe(body)})
        assert replay.status_code == 409 and replay.json()["code"] == "replayed_event"
    finally:
        await drop_database(name)
