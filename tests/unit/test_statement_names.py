"""Statements are counted by the name of their query in the project's one SQL file; anything
else falls into a handful of labels, whatever runs."""

from relayforge.db.pool import statement_name
from relayforge.db.queries import Q


def test_a_named_query_is_counted_by_its_name_and_others_by_kind():
    assert statement_name(Q["ingest_accept"]) == "ingest_accept"
    assert statement_name("BEGIN ISOLATION LEVEL READ COMMITTED;") == "begin"
    assert statement_name("COMMIT;") == "commit"
    assert statement_name("ROLLBACK;") == "rollback"
    assert statement_name("SELECT 1") == "other"
    assert statement_name("") == "other"
