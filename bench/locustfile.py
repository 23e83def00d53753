"""Locust user for the ingest path: signed generic webhooks over 50 tenants, one in ten a
duplicate delivery (the provider retrying), as providers would send them."""

from __future__ import annotations

import hashlib
import hmac
import os
import random
import uuid

import orjson
from locust import constant, task
from locust.contrib.fasthttp import FastHttpUser

SECRET = os.environ.get("BENCH_GENERIC_SECRET", "bench-generic-secret").encode()
TENANTS = [str(uuid.UUID(int=i + 1)) for i in range(50)]
PAYLOAD = {"order_id": "ord_123", "amount": 4200, "currency": "eur", "items": list(range(20))}


class WebhookProvider(FastHttpUser):
    wait_time = constant(0)

    def on_start(self) -> None:
        self.recent: list[tuple[bytes, str]] = []

    @task
    def deliver(self) -> None:
        if self.recent and random.random() < 0.1:
            body, tenant = random.choice(self.recent)
        else:
            body = orjson.dumps({"event": "order.created",
                                 "data": {**PAYLOAD, "n": uuid.uuid4().hex}})
            tenant = random.choice(TENANTS)
            self.recent = (self.recent + [(body, tenant)])[-20:]
        signature = hmac.new(SECRET, body, hashlib.sha256).hexdigest()
        with self.client.post("/webhooks/generic", data=body, name="/webhooks/{source}",
                              headers={"X-Signature": signature, "X-Tenant-Id": tenant,
                                       "Content-Type": "application/json"},
                              catch_response=True) as response:
            if response.status_code != 202:
                response.failure(f"status {response.status_code}")
