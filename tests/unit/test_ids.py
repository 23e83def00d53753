"""Ids are RFC 9562 version-7 UUIDs, ordered by time, interchangeable with uuid.UUID."""

from __future__ import annotations

import re
import time
import uuid

import msgspec
import orjson

from relayforge.ids import new_id, new_request_id


def test_new_ids_are_version_7_and_carry_the_time():
    before = time.time_ns() // 1_000_000
    ids = [new_id() for _ in range(2000)]
    after = time.time_ns() // 1_000_000
    assert len(set(ids)) == len(ids)
    for value in ids:
        assert isinstance(value, uuid.UUID)
        assert value.version == 7 and value.variant == uuid.RFC_4122
        assert before <= value.int >> 80 <= after
    stamps = [value.int >> 80 for value in ids]
    assert stamps == sorted(stamps)  # time-ordered: new rows land at the right edge of indexes


def test_a_new_id_equals_and_encodes_as_the_standard_uuid():
    value = new_id()
    standard = uuid.UUID(str(value))
    assert value == standard and hash(value) == hash(standard)
    assert {standard: 1}[value] == 1
    assert msgspec.json.encode(value) == orjson.dumps(value, default=str) == f'"{standard}"'.encode()


def test_request_ids_are_32_random_hex_digits():
    ids = {new_request_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)
