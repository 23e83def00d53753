"""The README's first command: `relayforge serve` with no DATABASE__URL and no AMQP__URL starts
an embedded PostgreSQL and the in-process broker; a signed webhook ends as a succeeded job."""

from __future__ import annotations

import asyncio

import orjson

from tests.support import ADMIN_KEY, Server, base_env, free_port, sign_generic


async def test_embedded_defaults_carry_a_webhook_to_success(client, tmp_path):
    port = free_port()
    env = {k: v for k, v in base_env().items() if k not in ("DATABASE__URL", "AMQP__URL")}
    env |= {"SERVER__PORT": str(port), "DATABASE__EMBEDDED_DIR": str(tmp_path / "pg"),
            "DATABASE__MIGRATE_ON_START": "true", "LOG__LEVEL": "INFO"}
    server = Server(f"http://127.0.0.1:{port}", "", env, "all", tmp_path / "server.log")
    server.start(timeout=90)
    try:
        body = orjson.dumps({"event": "order.created", "data": {"id": 42}})
        r = await client.post(f"{server.url}/webhooks/generic", content=body,
                              headers={"X-Signature": sign_generic(body)})
        assert r.status_code == 202
        job_url = f"{server.url}/admin/jobs/{r.json()['job_id']}"
        for _ in range(100):
            job = (await client.get(job_url,
                                    headers={"Authorization": f"Bearer {ADMIN_KEY}"})).json()
            if job["status"] == "succeeded":
                break
            await asyncio.sleep(0.1)
        assert (job["status"], job["attempts"]) == ("succeeded", 1)
        assert '"database":"embedded postgres' in server.log()
        assert '"broker":"in-process"' in server.log()
        assert '"logger":"pgserver"' not in server.log()  # its initdb output stays quiet
    finally:
        server.stop()
    assert (tmp_path / "pg" / "PG_VERSION").exists()
