"""Ids are RFC 9562 version-7 UUIDs, ordered by time, interchangeable with uuid.UUID."""

from __future__ import annotations

import os
import re
import time
import uuid

import msgspec
import orjson
import pytest

from relayforge.ids import new_id, new_request_id, parse_uuid


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
    quoted = f'"{standard}"'.encode()
    assert msgspec.json.encode(value) == orjson.dumps(value, default=str) == quoted


def test_request_ids_are_32_random_hex_digits():
    ids = {new_request_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)


def test_a_forked_child_draws_other_random_bytes_than_its_parent():
    read, write = os.pipe()
    new_request_id()  # the parent's pool is filled before the fork
    pid = os.fork()
    if pid == 0:  # the child reports its next id and leaves at once
        os.write(write, new_request_id().encode())
        os._exit(0)
    os.waitpid(pid, 0)
    child = os.read(read, 64).decode()
    assert re.fullmatch(r"[0-9a-f]{32}", child)
    assert child != new_request_id()


def test_parse_uuid_takes_what_uuid_takes_and_refuses_the_rest():
    text = "0190A1B2-C3D4-7E5F-8A6B-7C8D9E0F1A2B"
    for form in (text, text.lower(), text.replace("-", ""), "{" + text + "}",
                 "urn:uuid:" + text):
        parsed = parse_uuid(form)
        assert parsed == uuid.UUID(form) and str(parsed) == text.lower()
        assert hash(parsed) == hash(uuid.UUID(form))
    for bad in ("", "not-a-uuid", text + "0", text[:-1] + "g", " " + text):
        with pytest.raises(ValueError):
            parse_uuid(bad)
