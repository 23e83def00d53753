"""Which events a destination wants: every given condition must hold.

    {"sources": ["stripe"], "event_types": ["invoice.*"], "data": {"amount": {"$gte": 100}}}

`sources`: any of. `event_types`: any of, `*` matching any run of characters (at most 8 in a
pattern of at most 255 characters, matched in linear time). `data`: a subset
match on the normalized event's data (each key present with an equal value, recursively), where
a key's condition may instead be an operator object: `$in` (a list), `$ne`, `$exists` (bool),
`$gt`, `$gte`, `$lt`, `$lte` (numbers or strings, compared with values of the same kind).
Filters are checked when a destination is written (`FilterError` names the field) and compiled
once per destination.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

OPERATORS = frozenset({"$in", "$ne", "$exists", "$gt", "$gte", "$lt", "$lte"})
MAX_DEPTH = 16
MAX_CONDITIONS = 200
MAX_PATTERNS = 100
MAX_PATTERN_LENGTH = 255
MAX_STARS = 8

Predicate = Callable[[Any], bool]


class FilterError(ValueError):
    """An invalid filter; the message names the field (e.g. `filter.data.amount.$gt`)."""


@dataclass(frozen=True, slots=True)
class EventFacts:
    source: str
    event_type: str
    data: Any


def _patterns(value: object, field: str) -> list[str]:
    if not isinstance(value, list) or not value or len(value) > MAX_PATTERNS:
        raise FilterError(f"{field}: a non-empty list of at most {MAX_PATTERNS} strings")
    for item in value:
        if not isinstance(item, str) or not item or len(item) > MAX_PATTERN_LENGTH:
            raise FilterError(f"{field}: each item is a string of 1 to {MAX_PATTERN_LENGTH} "
                              "characters")
    return value


@dataclass(frozen=True, slots=True)
class Glob:
    """`*` matching any run of characters, in linear time: the literal parts are found left to
    right, each at its first place after the last (a backtracking regex took 31 s on
    `*a*a*a*a*a*a*a*a*a*a*b` against forty `a`s)."""

    head: str
    middle: tuple[str, ...]
    tail: str | None  # None: no `*` at all, the pattern must equal the text

    @classmethod
    def compile(cls, pattern: str) -> Glob:
        parts = pattern.split("*")
        if len(parts) == 1:
            return cls(pattern, (), None)
        return cls(parts[0], tuple(p for p in parts[1:-1] if p), parts[-1])

    def fullmatch(self, text: str) -> bool:
        if self.tail is None:
            return text == self.head
        if len(text) < len(self.head) + len(self.tail) or not text.startswith(self.head):
            return False
        end = len(text) - len(self.tail)
        if not text.endswith(self.tail):
            return False
        at = len(self.head)
        for part in self.middle:
            at = text.find(part, at, end)
            if at < 0:
                return False
            at += len(part)
        return True


def _globs(value: object, field: str) -> tuple[Glob, ...]:
    return tuple(Glob.compile(p) for p in _patterns(value, field))


def _comparable(a: Any, b: Any) -> bool:
    numbers = (int, float)
    if isinstance(a, bool) or isinstance(b, bool):
        return False
    return (isinstance(a, numbers) and isinstance(b, numbers)) or (
        isinstance(a, str) and isinstance(b, str))


_MISSING = object()


def _operator(op: str, arg: Any, field: str) -> Callable[[Any], bool]:
    """A predicate over a key's value (`_MISSING` when the key is absent)."""
    if op == "$exists":
        if not isinstance(arg, bool):
            raise FilterError(f"{field}: $exists takes true or false")
        return lambda v: (v is not _MISSING) == arg
    if op == "$in":
        if not isinstance(arg, list):
            raise FilterError(f"{field}: $in takes a list")
        return lambda v: v is not _MISSING and any(_equal(v, a) for a in arg)
    if op == "$ne":
        return lambda v: v is _MISSING or not _equal(v, arg)
    if isinstance(arg, bool) or not isinstance(arg, (int, float, str)):
        raise FilterError(f"{field}: {op} takes a number or a string")
    compare: dict[str, Callable[[Any], bool]] = {
        "$gt": lambda v: v > arg, "$gte": lambda v: v >= arg,
        "$lt": lambda v: v < arg, "$lte": lambda v: v <= arg}
    test = compare[op]
    return lambda v: v is not _MISSING and _comparable(v, arg) and test(v)


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):  # JSON true is not 1
        return a is b
    return bool(a == b)


def _data(spec: Any, field: str, depth: int, budget: list[int]) -> Predicate:
    """A predicate over a value: a subset match for objects, operators, else equality."""
    budget[0] -= 1
    if budget[0] < 0:
        raise FilterError(f"filter.data: at most {MAX_CONDITIONS} conditions")
    if depth > MAX_DEPTH:
        raise FilterError(f"{field}: nested deeper than {MAX_DEPTH}")
    if isinstance(spec, dict) and spec and all(k.startswith("$") for k in spec):
        tests = []
        for op, arg in spec.items():
            if op not in OPERATORS:
                raise FilterError(f"{field}.{op}: unknown operator (one of "
                                  f"{', '.join(sorted(OPERATORS))})")
            tests.append(_operator(op, arg, f"{field}.{op}"))
        return lambda v: all(t(v) for t in tests)
    if isinstance(spec, dict):
        if any(k.startswith("$") for k in spec):
            raise FilterError(f"{field}: operators and keys can't be mixed in one object")
        keys = [(k, _data(v, f"{field}.{k}", depth + 1, budget)) for k, v in spec.items()]
        return lambda v: isinstance(v, dict) and all(
            test(v.get(k, _MISSING)) for k, test in keys)
    return lambda v: v is not _MISSING and _equal(v, spec)


@dataclass(frozen=True, slots=True)
class EventFilter:
    sources: frozenset[str] | None
    event_types: tuple[Glob, ...] | None
    data: Predicate | None

    def matches(self, event: EventFacts) -> bool:
        if self.sources is not None and event.source not in self.sources:
            return False
        if self.event_types is not None and not any(
                p.fullmatch(event.event_type) for p in self.event_types):
            return False
        return self.data is None or self.data(event.data)


def check_filter(spec: Mapping[str, Any] | None) -> EventFilter:
    """A filter being written: compiled, and held to the bounds of a new one (FilterError
    names what is wrong). Filters stored before a bound was added still compile."""
    patterns = (spec or {}).get("event_types")
    if isinstance(patterns, list) and any(
            isinstance(p, str) and p.count("*") > MAX_STARS for p in patterns):
        raise FilterError(f"filter.event_types: at most {MAX_STARS} `*` in a pattern")
    return compile_filter(spec)


def compile_filter(spec: Mapping[str, Any] | None) -> EventFilter:
    """Check and compile a filter; `FilterError` names what is wrong."""
    spec = spec or {}
    unknown = set(spec) - {"sources", "event_types", "data"}
    if unknown:
        raise FilterError(f"filter.{sorted(unknown)[0]}: unknown field "
                          "(sources, event_types, data)")
    sources = event_types = data = None
    if "sources" in spec:
        sources = frozenset(s.lower() for s in _patterns(spec["sources"], "filter.sources"))
    if "event_types" in spec:
        event_types = _globs(spec["event_types"], "filter.event_types")
    if "data" in spec:
        if not isinstance(spec["data"], dict):
            raise FilterError("filter.data: an object")
        data = _data(spec["data"], "filter.data", 0, [MAX_CONDITIONS])
    return EventFilter(sources, event_types, data)
