"""W3C trace headers are kept only when well-formed and within the spec's bounds (Trace Context
and Baggage); anything else is dropped before it is stored or published."""

from __future__ import annotations

import pytest

from relayforge.observability.tracing import (
    MAX_BAGGAGE_BYTES,
    MAX_TRACESTATE_CHARS,
    MAX_TRACESTATE_MEMBERS,
    bounded,
    carry,
)

# The examples of the W3C Trace Context recommendation.
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
TRACESTATE = "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"


def test_valid_headers_pass_unchanged():
    headers = {"traceparent": TRACEPARENT, "tracestate": TRACESTATE, "baggage": "userId=alice"}
    assert bounded(headers) == headers


@pytest.mark.parametrize("traceparent", [
    "",
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",          # no flags
    "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",       # upper case
    "00-00000000000000000000000000000000-00f067aa0ba902b7-01",       # zero trace id
    "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",       # zero parent id
    "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",       # forbidden version
    TRACEPARENT + "-extra",                                           # version 00 has no more
    "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-" + "a" * 300,  # too long
])
def test_a_malformed_traceparent_is_dropped_with_its_tracestate(traceparent):
    assert bounded({"traceparent": traceparent, "tracestate": TRACESTATE}) == {}


def test_a_later_version_may_carry_more_fields():
    value = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-ever"
    assert bounded({"traceparent": value}) == {"traceparent": value}


def test_tracestate_without_a_traceparent_is_dropped():
    assert bounded({"tracestate": TRACESTATE}) == {}


@pytest.mark.parametrize("tracestate", [
    "x=" + "a" * (MAX_TRACESTATE_CHARS - 1),                          # 513 characters
    ",".join(f"k{i}=v" for i in range(MAX_TRACESTATE_MEMBERS + 1)),   # 33 members
    "UPPER=1",                                                        # key must be lower case
    "k=v=w",                                                          # '=' inside the value
    "k=\x00",                                                         # control character
])
def test_tracestate_over_the_bounds_or_malformed_is_dropped(tracestate):
    assert bounded({"traceparent": TRACEPARENT, "tracestate": tracestate}) == {
        "traceparent": TRACEPARENT}


def test_tracestate_at_the_bounds_is_kept():
    members = ",".join(f"k{i}=v" for i in range(MAX_TRACESTATE_MEMBERS))
    at_length = "x=" + "a" * 255 + ",y=" + "b" * (MAX_TRACESTATE_CHARS - 260)
    assert len(at_length) == MAX_TRACESTATE_CHARS
    for value in (members, at_length, "tenant@vendor=v, other=1"):
        assert bounded({"traceparent": TRACEPARENT, "tracestate": value})["tracestate"] == value


def test_baggage_is_bounded_to_8192_bytes_of_printable_ascii():
    at_limit = "k=" + "v" * (MAX_BAGGAGE_BYTES - 2)
    assert bounded({"baggage": at_limit}) == {"baggage": at_limit}
    assert bounded({"baggage": at_limit + "v"}) == {}
    assert bounded({"baggage": "k=\x7f"}) == {}


def test_carry_bounds_what_it_passes_on():
    huge = {"tracestate": "a=" + "x" * 140_000, "baggage": "b=" + "y" * 140_000}
    assert carry(huge) == {}
    assert carry({"traceparent": TRACEPARENT, **huge}) == {"traceparent": TRACEPARENT}
