"""Slack: `X-Slack-Signature: v0=<hex>`, HMAC-SHA256 of "v0:<X-Slack-Request-Timestamp>:<body>"
under the app's signing secret, with a freshness window.

Events API (JSON): `event_callback` → event type `event.type`, dedup key `event_id`; a signed
`url_verification` is answered at once with `200 {"challenge": …}` and makes no job; other
types (`app_rate_limited`) by their `type`. Interactivity (form-encoded `payload=<json>`): event
type the payload's `type` (`block_actions`, `view_submission`, …). Slash commands (form fields,
no payload): event type `slash_command`, data the fields.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qs

import orjson

from relayforge.connectors.base import (
    Connector,
    HeaderDoc,
    Headers,
    Signed,
    check_tolerance,
    identifier,
    parse_json_object,
    parse_timestamp,
    require_header,
    verify_hex,
)
from relayforge.errors import InvalidPayload, InvalidSignature
from relayforge.events import DomainEvent
from relayforge.kernels import HmacSha256
from relayforge.settings import Settings

FORM = b"application/x-www-form-urlencoded"
MAX_FORM_FIELDS = 64
MAX_CHALLENGE = 255


class SlackConnector(Connector):
    name = "slack"
    summary = "Slack: X-Slack-Signature over 'v0:<timestamp>:<body>'; url_verification " \
              "answered with its challenge"
    header_docs = (
        HeaderDoc("X-Slack-Signature", "v0=<hex HMAC-SHA256 of 'v0:<timestamp>:<body>'>",
                  required=True),
        HeaderDoc("X-Slack-Request-Timestamp", "unix seconds, within the tolerance",
                  required=True),
    )
    body_schema = {"type": "object", "properties": {
        "type": {"type": "string"}, "challenge": {"type": "string"},
        "event_id": {"type": "string"}, "event": {"type": "object"}},
        "description": "Events API JSON; interactivity and slash commands as forms"}
    content_types = ("application/json", "application/x-www-form-urlencoded")
    direct_answer_schema = {"type": "object", "required": ["challenge"],
                            "properties": {"challenge": {"type": "string"}}}
    evidence_headers = (b"content-type", b"user-agent", b"x-slack-request-timestamp",
                        b"x-slack-retry-num", b"x-slack-retry-reason")

    def env_secret(self, settings: Settings) -> str:
        return settings.webhooks.slack_secret

    def verify(self, headers: Headers, body: bytes, keys: Sequence[HmacSha256]) -> Signed:
        signature = require_header(headers, b"x-slack-signature").strip()
        timestamp = parse_timestamp(require_header(headers, b"x-slack-request-timestamp"),
                                    "X-Slack-Request-Timestamp")
        if not signature.startswith(b"v0="):
            raise InvalidSignature("X-Slack-Signature must be v0=<hex>", signature_valid=False)
        verify_hex(keys, body, (signature[3:].lower(),), prefix=b"v0:%d:" % timestamp)
        return Signed(timestamp=timestamp)

    def direct_answer(self, headers: Headers, body: bytes) -> dict[str, Any] | None:
        if _is_form(headers):
            return None
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(doc, dict) or doc.get("type") != "url_verification":
            return None
        challenge = doc.get("challenge")
        if not isinstance(challenge, str) or not 0 < len(challenge) <= MAX_CHALLENGE:
            raise InvalidPayload("url_verification needs a challenge string", signature_valid=True)
        return {"challenge": challenge}

    def normalize(self, headers: Headers, body: bytes) -> DomainEvent:
        if _is_form(headers):
            return self._form(body)
        doc = parse_json_object(body, "slack")
        kind = identifier(doc.get("type"), "type", required=True)
        if kind == "event_callback":
            event = doc.get("event")
            if not isinstance(event, dict):
                raise InvalidPayload("event_callback needs an event object", signature_valid=True)
            return DomainEvent(
                source=self.name,
                event_type=identifier(event.get("type"), "event.type", required=True) or "",
                provider_event_id=identifier(doc.get("event_id"), "event_id", required=True),
                occurred_at_unix=_unix(doc.get("event_time")),
                data=event,
            )
        return DomainEvent(source=self.name, event_type=kind or "", provider_event_id=None,
                           occurred_at_unix=None, data=doc)

    def _form(self, body: bytes) -> DomainEvent:
        try:
            fields = parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=True,
                              max_num_fields=MAX_FORM_FIELDS)
        except (UnicodeDecodeError, ValueError):
            raise InvalidPayload("form body is not valid urlencoded UTF-8",
                                 signature_valid=True) from None
        payload = fields.get("payload")
        if payload is None:  # a slash command: its fields are the event
            data = {k: v[0] for k, v in fields.items() if len(v) == 1}
            if "command" not in data:
                raise InvalidPayload("form body needs a payload or a command field",
                                     signature_valid=True)
            return DomainEvent(source=self.name, event_type="slash_command",
                               provider_event_id=None, occurred_at_unix=None, data=data)
        if len(payload) != 1:
            raise InvalidPayload("form body must carry one payload field", signature_valid=True)
        doc = parse_json_object(payload[0].encode(), "slack payload")
        return DomainEvent(
            source=self.name,
            event_type=identifier(doc.get("type"), "payload type", required=True) or "",
            provider_event_id=None, occurred_at_unix=None, data=doc)

    def check_freshness(self, signed: Signed, now: int, settings: Settings) -> None:
        check_tolerance(signed, now, settings.webhooks.signature_tolerance_seconds,
                        "X-Slack-Request-Timestamp")


def _is_form(headers: Headers) -> bool:
    return headers.get(b"content-type", b"").split(b";", 1)[0].strip().lower() == FORM


def _unix(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and \
        0 <= value < 2**53 else None
