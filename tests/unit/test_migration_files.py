"""Landed migrations are immutable by test, not by habit: migrations/SHA256SUMS lists every
landed file's checksum (`sha256sum -c` reads it too). A listed file that changed, or a
migration missing from the list, fails here before it can reach a database (where the runner
refuses to start on a changed applied file as well). A new migration is added to the list in
the commit that adds it: `cd migrations && sha256sum *.sql > SHA256SUMS`."""

from __future__ import annotations

import hashlib

from relayforge.db.migrate import available
from tests.support import ROOT

MIGRATIONS = ROOT / "migrations"


def _listed() -> dict[str, str]:
    listed = {}
    for line in (MIGRATIONS / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split(maxsplit=1)
        listed[name.lstrip("*")] = digest
    return listed


def test_no_landed_migration_changed():
    changed = [name for name, digest in _listed().items()
               if hashlib.sha256((MIGRATIONS / name).read_bytes()).hexdigest() != digest]
    assert not changed, f"landed migrations are never edited; add a new one instead: {changed}"


def test_every_migration_is_listed_and_every_listed_one_ships():
    on_disk = sorted(p.name for p in MIGRATIONS.glob("*.sql"))
    assert sorted(_listed()) == on_disk
    assert [m.version + ".sql" for m in available()] == on_disk  # what the runner applies
