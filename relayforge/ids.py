"""Ids: time-ordered UUIDs (version 7), so new rows land at the right edge of their indexes;
the bound on ids a client supplies (request and correlation ids, echoed and stored)."""

from __future__ import annotations

import os
import time
import uuid

from asyncpg.pgproto.pgproto import UUID as _FastUUID  # a uuid.UUID in C: cheap to make and print

MAX_CLIENT_ID_LENGTH = 128


def new_id() -> uuid.UUID:
    """48 bits of milliseconds, version 7, variant 10, 74 random bits."""
    raw = bytearray(os.urandom(16))
    raw[0:6] = (time.time_ns() // 1_000_000 & 0xFFFF_FFFF_FFFF).to_bytes(6, "big")
    raw[6] = 0x70 | raw[6] & 0x0F
    raw[8] = 0x80 | raw[8] & 0x3F
    return _FastUUID(bytes(raw))  # type: ignore[no-any-return]


def new_request_id() -> str:
    """32 random hex digits, as uuid4().hex looks, for a fraction of its cost."""
    return os.urandom(16).hex()
