"""Ids: time-ordered UUIDs (version 7), so new rows land at the right edge of their indexes;
the bound on ids a client supplies (request and correlation ids, echoed and stored)."""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid

from asyncpg.pgproto.pgproto import UUID as _FastUUID  # a uuid.UUID in C: cheap to make and print

MAX_CLIENT_ID_LENGTH = 128
POOL_BYTES = 16 * 1024


class _RandomPool:
    """os.urandom read 16 KiB at a time. One getrandom() call per id cost a system call and a
    release of the GIL per request (the server's I/O thread then takes it), twice per request;
    the bytes are the same kernel CSPRNG's. A forked child starts with an empty pool, so no
    two processes hand out the same bytes."""

    def __init__(self) -> None:
        self._pool = b""
        self._at = 0
        self._lock = threading.Lock()  # two threads must never take the same bytes
        os.register_at_fork(after_in_child=self.reset)

    def reset(self) -> None:
        self._pool, self._at = b"", 0
        self._lock = threading.Lock()

    def take(self, n: int) -> bytes:
        with self._lock:
            at = self._at
            if at + n > len(self._pool):
                self._pool, at = os.urandom(POOL_BYTES), 0
            self._at = at + n
            return self._pool[at:at + n]


_random = _RandomPool()


def new_id() -> uuid.UUID:
    """48 bits of milliseconds, version 7, variant 10, 74 random bits."""
    raw = bytearray(_random.take(16))
    raw[0:6] = (time.time_ns() // 1_000_000 & 0xFFFF_FFFF_FFFF).to_bytes(6, "big")
    raw[6] = 0x70 | raw[6] & 0x0F
    raw[8] = 0x80 | raw[8] & 0x3F
    return _FastUUID(bytes(raw))  # type: ignore[no-any-return]


def parse_uuid(text: str) -> uuid.UUID:
    """uuid.UUID(text), made in C (cheap to hash and print) for the usual hex forms; the rarer
    forms uuid.UUID also takes (braces, urn:uuid:) go through it. ValueError when invalid."""
    try:
        return _FastUUID(text)  # type: ignore[no-any-return]
    except ValueError:
        return uuid.UUID(text)


def new_request_id() -> str:
    """32 random hex digits, as uuid4().hex looks, for a fraction of its cost."""
    return _random.take(16).hex()


def process_identity() -> str:
    """Names this process where rows record who holds them (a relay's claims, a consume
    process's lease): host, pid and a random tail, unique across restarts and hosts."""
    return f"{socket.gethostname()}:{os.getpid()}:{_random.take(4).hex()}"
