"""What one delivery attempt sends: the URL, the body (the original or the event) and the
Standard Webhooks headers, signed with every signing secret the destination has in force."""

from __future__ import annotations

import time
import uuid

import orjson

from relayforge.destinations.signing import header_context, secret_key, signature
from relayforge.events import without_control
from relayforge.observability import tracing
from relayforge.security.secrets import SecretCipher
from relayforge.stores.destinations import StartedDelivery

MAX_CACHED_KEYS = 10_000


class RequestBuilder:
    def __init__(self, cipher: SecretCipher) -> None:
        self._cipher = cipher
        self._keys: dict[tuple[uuid.UUID, bytes], bytes] = {}  # by destination and ciphertext

    def _key(self, d: StartedDelivery, context: str, nonce: bytes, ciphertext: bytes) -> bytes:
        """A signing secret's key, decrypted once per secret (a rotation makes a new one)."""
        key = self._keys.get((d.destination_id, ciphertext))
        if key is None:
            if len(self._keys) >= MAX_CACHED_KEYS:
                self._keys.clear()
            key = self._keys[d.destination_id, ciphertext] = secret_key(
                self._cipher.decrypt(d.tenant_id, context, nonce, ciphertext).decode())
        return key

    def build(self, d: StartedDelivery, carrier: dict[str, str]
              ) -> tuple[str, bytes, dict[str, str]] | str:
        """The URL, body and headers of the attempt, or why there is nothing to send."""
        context = header_context(d.destination_id)
        keys = [self._key(d, context, nonce, ct)
                for nonce, ct in zip(d.secret_nonces, d.secret_ciphertexts, strict=True)]
        if not keys:
            return "the destination has no signing secret"
        if d.payload == "event":
            if d.event is None:
                return "the event's body is no longer kept (RETENTION__INBOX_DAYS)"
            body, content_type = d.event, "application/json"
        elif d.body is not None:
            body, content_type = d.body, d.content_type or "application/octet-stream"
        else:
            return "the original body is no longer kept (RETENTION__INBOX_DAYS)"
        headers: dict[str, str] = {}
        if d.headers_ciphertext is not None and d.headers_nonce is not None:
            headers.update(orjson.loads(self._cipher.decrypt(
                d.tenant_id, context, d.headers_nonce, d.headers_ciphertext)))
        timestamp = int(time.time())
        headers.update({
            "content-type": content_type,
            "webhook-id": str(d.id),
            "webhook-timestamp": str(timestamp),
            "webhook-signature": signature(str(d.id), timestamp, body, keys),
            "x-relayforge-tenant-id": str(d.tenant_id),
            "x-relayforge-source": d.source,
            "x-relayforge-event-type": without_control(d.event_type),
            "x-relayforge-attempt": str(d.attempts),
            **tracing.carry(carrier),  # the trace continues into the tenant's service
        })
        return d.url, body, headers


