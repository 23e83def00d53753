"""Loads sql/queries.sql once into a dict of named queries (`-- name: x` blocks)."""

from __future__ import annotations

import re
from pathlib import Path

_NAME = re.compile(r"^--\s*name:\s*(\w+)\s*$", re.MULTILINE)


def _load(path: Path) -> dict[str, str]:
    text = path.read_text()
    parts = _NAME.split(text)
    queries: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in queries:
            raise ValueError(f"query {name!r} is defined twice in {path}")
        queries[name] = body.strip().rstrip(";")
    return queries


Q: dict[str, str] = _load(Path(__file__).with_name("sql") / "queries.sql")
