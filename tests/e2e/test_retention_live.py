"""Retention drops an expired partition while webhooks keep arriving: the detach is concurrent,
so no request waits on it, none is refused and none is lost."""

from __future__ import annotations

import asyncio

from relayforge import retention
from relayforge.settings import load_settings
from tests.integration.test_retention import days_ago, inbox_row, partitions
from tests.support import generic_body, new_tenant, post_generic

WEBHOOKS = 400
IN_FLIGHT = 16


async def test_an_expired_partition_is_dropped_while_webhooks_arrive(start_server, client, db):
    server = start_server("ingest", **{  # the stream is not what is limited here
        "HARDENING__INGRESS_RATE_LIMIT_PER_SECOND": "100000", "HARDENING__INGRESS_BURST": "100000",
        "HARDENING__TENANT_RATE_LIMIT_PER_SECOND": "100000",
        "HARDENING__TENANT_RATE_LIMIT_BURST": "100000"})
    conn = await db(server.database_url)
    old_day = days_ago(45)
    await conn.fetch("SELECT relayforge_ensure_partitions($1::date, $1::date)", old_day.date())
    for _ in range(3):
        await inbox_row(conn, old_day)
    name = f"webhook_inbox_{old_day:%Y%m%d}"
    assert name in await partitions(conn, "webhook_inbox")

    tenant = new_tenant()
    answers: list[int] = []
    inbox_ids: list[str] = []

    async def send(n: int) -> None:
        for _ in range(n):
            r = await post_generic(client, server, generic_body(), tenant)
            answers.append(r.status_code)
            if r.status_code == 202:
                inbox_ids.append(r.json()["inbox_id"])

    senders = [asyncio.create_task(send(WEBHOOKS // IN_FLIGHT)) for _ in range(IN_FLIGHT)]
    while len(answers) < WEBHOOKS // 4:  # the prune begins with the stream in full flow
        await asyncio.sleep(0.01)
    report = await retention.prune(load_settings({"DATABASE__URL": server.database_url}),
                                   server.database_url)
    during = len(answers)
    await asyncio.gather(*senders)

    assert report is not None and name in {p.name for p in report.dropped}
    assert during < WEBHOOKS, "the stream ended before the drop: nothing was tested"
    assert name not in await partitions(conn, "webhook_inbox")
    assert answers == [202] * WEBHOOKS
    stored = {str(r["id"]) for r in await conn.fetch(
        "SELECT id FROM webhook_inbox WHERE tenant_id = $1", tenant)}
    assert stored == set(inbox_ids) and len(stored) == WEBHOOKS
