"""Ids: time-ordered UUIDs (version 7), so new rows land at the right edge of their indexes;
the bound on ids a client supplies (request and correlation ids, echoed and stored)."""

from __future__ import annotations

import os
import time
import uuid

MAX_CLIENT_ID_LENGTH = 128


def new_id() -> uuid.UUID:
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | (rand >> 68 & 0xFFF) << 64
    value |= 0b10 << 62 | rand & ((1 << 62) - 1)
    return uuid.UUID(int=value)
