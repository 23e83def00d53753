"""GitHub: `X-Hub-Signature-256: sha256=<hex>`, type from X-GitHub-Event, id from
X-GitHub-Delivery; JSON or form-encoded (`payload=<json>`) bodies."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from urllib.parse import parse_qs

from relayforge.connectors.base import (
    MIB,
    Connector,
    HeaderDoc,
    Headers,
    Signed,
    header_identifier,
    identifier,
    parse_json_object,
    require_header,
    verify_hex,
)
from relayforge.errors import InvalidPayload, InvalidSignature
from relayforge.events import DomainEvent
from relayforge.kernels import HmacSha256, parse_github_signature
from relayforge.settings import Settings

FORM = b"application/x-www-form-urlencoded"


class GitHubConnector(Connector):
    name = "github"
    summary = "GitHub: X-Hub-Signature-256 over the body; JSON or a form's payload field"
    header_docs = (
        HeaderDoc("X-Hub-Signature-256", "sha256=<hex HMAC-SHA256 of the raw body>",
                  required=True),
        HeaderDoc("X-GitHub-Event", "the event type (else github.<action>)"),
        HeaderDoc("X-GitHub-Delivery", "the delivery id (dedup key)"),
    )
    body_schema = {"type": "object", "properties": {"action": {"type": "string"}},
                   "description": "the whole payload is the event's data"}
    content_types = ("application/json", "application/x-www-form-urlencoded")
    max_body_bytes = 25 * MIB  # GitHub's own cap on a webhook payload
    evidence_headers = (b"content-type", b"user-agent", b"x-github-event", b"x-github-delivery",
                        b"x-github-hook-id")

    def env_secret(self, settings: Settings) -> str:
        return settings.webhooks.github_secret

    def verify(self, headers: Headers, body: bytes, keys: Sequence[HmacSha256]) -> Signed:
        signature = parse_github_signature(require_header(headers, b"x-hub-signature-256"))
        if signature is None:
            raise InvalidSignature("X-Hub-Signature-256 must be sha256=<hex>",
                                   signature_valid=False)
        verify_hex(keys, body, (signature,))
        return Signed()

    def normalize(self, headers: Headers, body: bytes) -> DomainEvent:
        content_type = headers.get(b"content-type", b"").split(b";", 1)[0].strip().lower()
        if content_type == FORM:
            body = _form_payload(body)
        doc = parse_json_object(body, "github")
        event_type = header_identifier(headers, b"x-github-event")
        if event_type is None:
            action = doc.get("action")
            if action is None:
                raise InvalidPayload(
                    "X-GitHub-Event header or an action field is required", signature_valid=True
                )
            event_type = "github." + (identifier(action, "action", required=True) or "")
        event = DomainEvent.from_part(
            doc, (),
            source=self.name,
            event_type=event_type,
            provider_event_id=header_identifier(headers, b"x-github-delivery"),
            occurred_at_unix=None,
        )
        # A form's JSON is one of its fields, not the body: the job stores that event whole.
        return replace(event, data_path=None) if content_type == FORM else event


def _form_payload(body: bytes) -> bytes:
    try:
        fields = parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=True,
                          max_num_fields=64)
    except (UnicodeDecodeError, ValueError):
        raise InvalidPayload("form body is not valid urlencoded UTF-8",
                             signature_valid=True) from None
    payload = fields.get("payload")
    if not payload or len(payload) != 1:
        raise InvalidPayload("form body must carry exactly one payload field", signature_valid=True)
    try:
        return payload[0].encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidPayload("payload field is not valid UTF-8", signature_valid=True) from None
