"""GitLab: `X-Gitlab-Token` equal to the webhook's secret token (compared in constant time), or,
when the webhook has a signing token, Standard Webhooks headers (`webhook-id`,
`webhook-timestamp`, `webhook-signature`) checked as the `standard` source does.

Dedup key `Idempotency-Key`, else `X-Gitlab-Event-UUID`; event type `X-Gitlab-Event`
(`Push Hook`), else the body's `object_kind`; the data is the whole body.
"""

from __future__ import annotations

from collections.abc import Sequence

from relayforge.connectors.base import (
    Connector,
    HeaderDoc,
    Headers,
    Signed,
    check_tolerance,
    header_identifier,
    identifier,
    parse_json_object,
    require_header,
    verify_token,
)
from relayforge.connectors.standard import verify_standard, whsec_key
from relayforge.events import DomainEvent
from relayforge.kernels import HmacSha256
from relayforge.settings import Settings


class GitLabConnector(Connector):
    name = "gitlab"
    summary = "GitLab: X-Gitlab-Token (the secret token), or Standard Webhooks headers with a " \
              "signing token"
    header_docs = (
        HeaderDoc("X-Gitlab-Token", "the secret token, compared in constant time"),
        HeaderDoc("X-Gitlab-Event", "the event type (Push Hook)"),
        HeaderDoc("Idempotency-Key", "the delivery id (dedup key); else X-Gitlab-Event-UUID"),
        HeaderDoc("webhook-signature", "with a signing token: Standard Webhooks, as "
                  "/webhooks/standard"),
    )
    evidence_headers = (b"content-type", b"user-agent", b"x-gitlab-event", b"x-gitlab-event-uuid",
                        b"x-gitlab-instance", b"x-gitlab-webhook-uuid", b"idempotency-key",
                        b"webhook-id", b"webhook-timestamp")

    def env_secret(self, settings: Settings) -> str:
        return settings.webhooks.gitlab_secret

    def signing_key(self, secret: str) -> bytes:
        return whsec_key(secret)  # a signing token is whsec_…; a secret token is used as it is

    def verify(self, headers: Headers, body: bytes, keys: Sequence[HmacSha256]) -> Signed:
        if b"webhook-signature" in headers:
            return verify_standard(headers, body, keys)
        token = require_header(headers, b"x-gitlab-token")
        verify_token(keys, self.signing_key(token.decode("latin-1")))
        return Signed()

    def normalize(self, headers: Headers, body: bytes) -> DomainEvent:
        doc = parse_json_object(body, "gitlab")
        event_type = header_identifier(headers, b"x-gitlab-event") or identifier(
            doc.get("object_kind"), "object_kind", required=True)
        event_id = header_identifier(headers, b"idempotency-key") or header_identifier(
            headers, b"x-gitlab-event-uuid")
        return DomainEvent.from_part(doc, (), source=self.name, event_type=event_type or "",
                                     provider_event_id=event_id, occurred_at_unix=None)

    def check_freshness(self, signed: Signed, now: int, settings: Settings) -> None:
        if signed.timestamp is not None:  # only the signing-token scheme has a timestamp
            check_tolerance(signed, now, settings.webhooks.signature_tolerance_seconds,
                            "webhook-timestamp")
