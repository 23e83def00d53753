"""A job stores no copy of an event whose data is a part of the body: the event is put
together from the stored body when read. Put together, it must be the event the connector
made, to the byte of its JSON, for every connector and every shape of body."""

from __future__ import annotations

import orjson
import pytest

from relayforge.connectors import CONNECTORS
from relayforge.events import DomainEvent

PRETTY = b'{\n  "id": "evt_1",\n  "type": "invoice.paid",\n  "created": 1700000000,\n' \
         b'  "data": {"object": {"id": "in_1", "amount": 5, "lines": [1, 2.5, null, "\\u00e9"]}}\n}'

CASES = [
    ("generic", {}, b'{"event": "a.b", "data": {"x": [1, {"y": "z"}], "n": 1.0e3}}'),
    ("generic", {b"x-event-id": b"e-1"}, b'{"event":"a.b"}'),  # no data: null
    ("generic", {}, b'{"event":"a.b","data":"just a string"}'),
    ("stripe", {}, PRETTY),
    ("stripe", {}, b'{"id":"evt_2","type":"x.y"}'),  # no data at all
    ("stripe", {}, b'{"id":"evt_3","type":"x.y","data":{"previous_attributes":{}}}'),
    ("github", {b"x-github-event": b"push", b"content-type": b"application/json"},
     b'{"ref": "refs/heads/main", "commits": [{"id": "abc"}]}'),
    ("gitlab", {b"x-gitlab-event": b"Push Hook"}, b'{"object_kind": "push", "after": "1"}'),
    ("shopify", {b"x-shopify-topic": b"orders/create", b"x-shopify-webhook-id": b"w1"},
     b'{"id": 1, "total": "9.99"}'),
    ("linear", {b"linear-delivery": b"d1"},
     b'{"type": "Issue", "action": "create", "data": {"id": "i1"}, "webhookTimestamp": 1}'),
    ("paddle", {}, b'{"event_id": "ev1", "event_type": "transaction.completed", '
                   b'"data": {"id": "txn_1"}}'),
    ("standard", {b"webhook-id": b"msg_1"}, b'{"type": "user.created", "data": {"id": 1}}'),
]


@pytest.mark.parametrize(("source", "headers", "body"), CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_the_event_put_together_from_the_body_is_the_connectors_own(source, headers, body):
    event = CONNECTORS[source].normalize(headers, body)
    assert not event.stored_whole, "this connector's data is a part of the body"
    again = DomainEvent.stored(
        None, source=source, event_type=event.event_type,
        provider_event_id=event.provider_event_id, occurred_at_unix=event.occurred_at_unix,
        data_path=list(event.data_path or ()), body=body)
    assert again == event
    assert again.to_json() == event.to_json()


def test_an_event_that_is_no_part_of_the_body_is_stored_whole():
    # Slack's slash commands come form-encoded: their data is rebuilt, not found in the body.
    body = b"command=%2Fdeploy&text=now&team_id=T1&user_id=U1"
    event = CONNECTORS["slack"].normalize({b"content-type": b"application/x-www-form-urlencoded"},
                                          body)
    assert event.stored_whole
    # GitHub's form-encoded deliveries carry their JSON in a field
    form = b"payload=%7B%22action%22%3A%22created%22%7D"
    github = CONNECTORS["github"].normalize(
        {b"content-type": b"application/x-www-form-urlencoded"}, form)
    assert github.stored_whole and github.data == {"action": "created"}
    # and so is one carrying test faults (never shown to handlers, kept beside the event)
    faults = CONNECTORS["generic"].normalize({}, b'{"event":"a","fail_until_attempt":2}')
    assert faults.stored_whole and faults.faults == {"fail_until_attempt": 2}


def test_a_stored_event_is_read_as_it_was_written():
    event = DomainEvent("stripe", "x.y", "evt_1", 5, {"a": [1]})
    assert DomainEvent.stored(event.to_json(), source="ignored", event_type="ignored",
                              provider_event_id=None, occurred_at_unix=None, data_path=None,
                              body=None) == event
    with pytest.raises(ValueError):
        DomainEvent.stored(None, source="s", event_type="t", provider_event_id=None,
                           occurred_at_unix=None, data_path=["data"], body=None)
    assert orjson.loads(event.to_json())["data"] == {"a": [1]}
