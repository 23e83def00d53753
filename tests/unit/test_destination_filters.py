"""Destination filters: every given condition must hold; invalid ones name their field."""

from __future__ import annotations

import pytest

from relayforge.destinations.filters import EventFacts, FilterError, compile_filter

INVOICE = EventFacts("stripe", "invoice.paid", {
    "amount": 1200, "currency": "eur", "customer": {"tier": "gold", "id": "cus_1"},
    "tags": ["a", "b"], "live": True, "note": None})


@pytest.mark.parametrize(("spec", "matches"), [
    ({}, True),
    ({"sources": ["stripe", "github"]}, True),
    ({"sources": ["STRIPE"]}, True),  # source names are case-insensitive
    ({"sources": ["github"]}, False),
    ({"event_types": ["invoice.*"]}, True),
    ({"event_types": ["*.paid"]}, True),
    ({"event_types": ["invoice."]}, False),  # no wildcard: exact
    ({"event_types": ["invoice.paid.*"]}, False),
    ({"event_types": ["customer.*", "invoice.paid"]}, True),
    ({"data": {"currency": "eur"}}, True),
    ({"data": {"currency": "usd"}}, False),
    ({"data": {"customer": {"tier": "gold"}}}, True),  # subset, recursively
    ({"data": {"customer": {"tier": "gold", "id": "cus_2"}}}, False),
    ({"data": {"missing": "x"}}, False),
    ({"data": {"tags": ["a", "b"]}}, True),  # a list is compared whole
    ({"data": {"tags": ["a"]}}, False),
    ({"data": {"live": True}}, True),
    ({"data": {"live": 1}}, False),  # JSON true is not 1
    ({"data": {"note": None}}, True),
    ({"data": {"amount": {"$gte": 1200}}}, True),
    ({"data": {"amount": {"$gt": 1200}}}, False),
    ({"data": {"amount": {"$lt": 2000, "$gt": 1000}}}, True),
    ({"data": {"amount": {"$lte": 1199.5}}}, False),
    ({"data": {"currency": {"$gt": "aaa"}}}, True),  # strings compare with strings
    ({"data": {"currency": {"$gt": 5}}}, False),  # never across kinds
    ({"data": {"currency": {"$in": ["eur", "usd"]}}}, True),
    ({"data": {"currency": {"$in": ["gbp"]}}}, False),
    ({"data": {"currency": {"$ne": "usd"}}}, True),
    ({"data": {"missing": {"$ne": "usd"}}}, True),
    ({"data": {"missing": {"$exists": False}}}, True),
    ({"data": {"note": {"$exists": True}}}, True),  # present, even if null
    ({"data": {"customer": {"id": {"$in": ["cus_1"]}}}}, True),
    ({"sources": ["stripe"], "event_types": ["invoice.*"], "data": {"amount": {"$gt": 5000}}},
     False),  # all must hold
])
def test_filters_match_as_documented(spec, matches):
    assert compile_filter(spec).matches(INVOICE) is matches


def test_data_filters_never_match_non_object_data():
    assert compile_filter({"data": {"a": 1}}).matches(EventFacts("generic", "x", [1, 2])) is False


@pytest.mark.parametrize(("spec", "field"), [
    ({"kinds": ["x"]}, "filter.kinds"),
    ({"sources": "stripe"}, "filter.sources"),
    ({"sources": []}, "filter.sources"),
    ({"event_types": [""]}, "filter.event_types"),
    ({"event_types": [3]}, "filter.event_types"),
    ({"data": []}, "filter.data"),
    ({"data": {"a": {"$between": [1, 2]}}}, "filter.data.a.$between"),
    ({"data": {"a": {"$in": "x"}}}, "filter.data.a.$in"),
    ({"data": {"a": {"$exists": "yes"}}}, "filter.data.a.$exists"),
    ({"data": {"a": {"$gt": [1]}}}, "filter.data.a.$gt"),
    ({"data": {"a": {"$gt": True}}}, "filter.data.a.$gt"),
    ({"data": {"a": {"$gt": 1, "b": 2}}}, "filter.data.a"),
])
def test_invalid_filters_name_the_field(spec, field):
    with pytest.raises(FilterError) as refused:
        compile_filter(spec)
    assert str(refused.value).startswith(field)


def test_filters_are_bounded_in_depth_and_size():
    deep: dict = {"v": 1}
    for _ in range(20):
        deep = {"k": deep}
    with pytest.raises(FilterError, match="deeper"):
        compile_filter({"data": deep})
    with pytest.raises(FilterError, match="at most"):
        compile_filter({"data": {f"k{i}": i for i in range(300)}})


# ------------------------------------------------------------------ event_types globs

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from relayforge.destinations.filters import MAX_STARS, Glob, check_filter  # noqa: E402


def _regex_glob(pattern: str, text: str) -> bool:
    import re

    return re.fullmatch(".*".join(re.escape(p) for p in pattern.split("*")), text,
                        re.DOTALL) is not None


@settings(max_examples=3000, deadline=None)
@given(st.text(alphabet="ab.*", max_size=10), st.text(alphabet="ab.", max_size=12))
def test_a_glob_matches_exactly_what_the_regex_reading_of_it_matches(pattern, text):
    assert Glob.compile(pattern).fullmatch(text) == _regex_glob(pattern, text)


def test_a_pathological_glob_is_answered_by_one_pass_not_by_backtracking():
    """`*a*a…*b` against many `a`s: a backtracking regex takes seconds at forty `a`s (31 s
    with ten stars) and would not finish here; the left-to-right search needs one pass per
    literal part."""
    globs = check_filter({"event_types": ["*a" * MAX_STARS + "b", "*a" * MAX_STARS]}).event_types
    assert globs is not None
    assert [g.fullmatch("a" * 10_000) for g in globs] == [False, True]
    assert [g.fullmatch("a" * 10_000 + "b") for g in globs] == [True, False]


def test_more_stars_than_allowed_is_refused_when_written_but_a_stored_one_still_compiles():
    spec = {"event_types": ["*a" * (MAX_STARS + 1)]}
    with pytest.raises(FilterError, match="filter.event_types: at most 8"):
        check_filter(spec)
    assert compile_filter(spec).matches(EventFacts("s", "a" * 40, {}))
