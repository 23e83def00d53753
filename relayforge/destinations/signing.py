"""Standard Webhooks signatures (https://www.standardwebhooks.com/):

    webhook-id: <delivery id>           (the same on every retry)
    webhook-timestamp: <unix seconds>
    webhook-signature: v1,<base64 HMAC-SHA256 of "<id>.<timestamp>.<body>"> [v1,<…> …]

keyed with the base64-decoded part of `whsec_<base64>`; one signature per valid secret while a
rotation overlaps, so the receiver may verify with either.
"""

from __future__ import annotations

import base64
import binascii
import os
import uuid
from functools import lru_cache

from relayforge.kernels import HmacSha256

PREFIX = "whsec_"
SECRET_BYTES = 32


def header_context(destination_id: uuid.UUID) -> str:
    """The encryption context of a destination's custom header values and secrets."""
    return f"destination:{destination_id}"


def new_secret() -> str:
    return PREFIX + base64.b64encode(os.urandom(SECRET_BYTES)).decode()


def secret_key(secret: str) -> bytes:
    """The HMAC key of a `whsec_…` secret."""
    try:
        return base64.b64decode(secret.removeprefix(PREFIX), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("a signing secret is whsec_ followed by base64") from exc


@lru_cache(maxsize=1024)
def _hmac(key: bytes) -> HmacSha256:  # the key's precomputed state, reused per destination
    return HmacSha256(key)


def signature(msg_id: str, timestamp: int, body: bytes, keys: list[bytes]) -> str:
    prefix = f"{msg_id}.{timestamp}.".encode()
    return " ".join("v1," + base64.b64encode(_hmac(key).digest(body, prefix)).decode()
                    for key in keys)
