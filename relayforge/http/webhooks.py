"""POST /webhooks/{source} and /tenants/{tenant_id}/webhooks/{source}.

The order of checks is the contract's: cheap and unauthenticated first, nothing tenant-visible
before the signature verified.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable

from blacksheep import Request, Response

from relayforge.connectors import CONNECTORS, Connector
from relayforge.connectors.tenant import valid_name
from relayforge.errors import (
    InvalidSignature,
    InvalidTenant,
    MissingSignature,
    PayloadTooLarge,
    RateLimited,
    RelayforgeError,
    StaleTimestamp,
    UnknownSource,
)
from relayforge.http.bodies import read_body
from relayforge.http.errors import json_response
from relayforge.http.instrument import client_address, note_access, request_ids, route_value
from relayforge.ids import parse_uuid
from relayforge.ingest import IngestWriter, arrive
from relayforge.ingest.sources import TenantSources
from relayforge.observability import logging as log_context
from relayforge.observability import metrics
from relayforge.security.limits import (
    BodyBudget,
    Buckets,
    TokenBucket,
    UnverifiedBudget,
    retry_after_seconds,
)
from relayforge.security.secrets import SecretVerifiers
from relayforge.settings import Settings
from relayforge.shares import Share

log = logging.getLogger(__name__)

# Refusals of requests that proved nothing: charged to the client address's unverified budget.
UNVERIFIED = (InvalidTenant, UnknownSource, PayloadTooLarge, MissingSignature, InvalidSignature,
              StaleTimestamp)


class WebhookEndpoint:
    def __init__(self, settings: Settings, secrets: SecretVerifiers, writer: IngestWriter,
                 sources: TenantSources, unverified: UnverifiedBudget,
                 bodies: BodyBudget, share: Share) -> None:
        h = settings.hardening
        self._settings = settings
        self._secrets = secrets
        self._sources = sources
        self._writer = writer
        self._max_body = h.max_body_bytes
        self._budget = bodies
        self._ingress = TokenBucket(h.ingress_rate_limit_per_second, h.ingress_burst)
        self._tenants: Buckets[uuid.UUID] = Buckets(
            h.tenant_rate_limit_per_second, h.tenant_rate_limit_burst, h.tenant_bucket_idle_seconds
        )
        self._unverified = unverified
        self._share = share
        self._reshare()
        share.on_change(self._reshare)

    def _reshare(self) -> None:
        """The ingress and tenant limits are per deployment: this process enforces its share."""
        h, share = self._settings.hardening, self._share
        self._ingress.rescale(share.of_rate(h.ingress_rate_limit_per_second),
                              share.of_rate(h.ingress_burst))
        self._tenants.rescale(share.of_rate(h.tenant_rate_limit_per_second),
                              share.of_rate(h.tenant_rate_limit_burst))

    # Plain functions that hand back the coroutine: one frame fewer per request.
    def by_header(self, request: Request) -> Awaitable[Response]:
        return self._receive(request, request.get_first_header(b"x-tenant-id"))

    def by_path(self, request: Request) -> Awaitable[Response]:
        return self._receive(request, route_value(request, "tenant_id").encode())

    async def _receive(self, request: Request, raw_tenant: bytes | None) -> Response:
        source = route_value(request, "source").lower()
        try:
            return await self._handle(request, raw_tenant, source)
        except RelayforgeError as exc:
            if isinstance(exc, UNVERIFIED):
                exc = self._unverified.refusal(client_address(request), exc)
            # a tenant's own source names are unbounded: one label for all of them
            metrics.child(metrics.WEBHOOKS_REJECTED, source if source in CONNECTORS else "other",
                          exc.code).inc()
            raise exc from None

    async def _handle(self, request: Request, raw_tenant: bytes | None, source: str) -> Response:
        connector: Connector | None = CONNECTORS.get(source)
        tenant_id = None
        # A tenant's own source? Only a name one could have is looked up (its tenant id first),
        # and not for an address that has spent its unverified budget.
        if connector is None and valid_name(source) and self._unverified.has_budget(
                client_address(request)):
            tenant_id = self._tenant(raw_tenant)
            connector = await self._sources.get(tenant_id, source)
        if connector is None:  # decided before a byte of the body is read
            if valid_name(source):  # a tenant source's name: said as for a defined one
                raise _no_such_tenant_source(source)
            raise UnknownSource(f"unknown webhook source {source[:64]!r}")
        with self._budget.holding() as held:
            body = await read_body(request, connector.max_body_bytes or self._max_body, held)
            if tenant_id is None:
                tenant_id = self._tenant(raw_tenant)
            return await self._verified(request, tenant_id, connector, body)

    async def _verified(self, request: Request, tenant_id: uuid.UUID, connector: Connector,
                        body: bytes) -> Response:
        headers = dict(request.scope["headers"])

        keys = self._secrets.known(tenant_id, connector.name, connector.algorithm)
        if keys is None:  # not cached: a query, or waiting for one
            keys = await self._secrets.verifiers(tenant_id, connector.name, connector.algorithm)
        try:
            if not keys:
                raise InvalidSignature("no secret is configured for this source",
                                       signature_valid=False)
            signed = connector.verify(headers, body, keys)
        except (MissingSignature, InvalidSignature) as exc:
            if connector.name in CONNECTORS:
                raise
            # A tenant's own source answers a failed signature as if it did not exist, so
            # probing can't tell which names a tenant defined; the reason goes to the log.
            log.info("tenant source signature refused", extra={
                "tenant_id": str(tenant_id), "source": connector.name, "reason": exc.message})
            raise _no_such_tenant_source(connector.name) from None
        log_context.tenant_id.set(str(tenant_id))
        direct = connector.direct_answer(headers, body)
        if direct is not None:  # a signed handshake (Slack's url_verification): no job, but
            # held to the same freshness as a webhook (a day-old one is a replay)
            connector.check_freshness(signed, int(time.time()), self._settings)
            return json_response(200, direct)

        # Charged only once the signature verified: the tenant's own bucket first, so a tenant
        # over its limit takes nothing of the ingress limit the others share.
        wait = self._tenants.take(tenant_id)
        if wait:
            raise RateLimited("tenant rate limit exceeded", retry_after=retry_after_seconds(wait))
        wait = self._ingress.take()
        if wait:
            raise RateLimited("ingress rate limit exceeded", retry_after=retry_after_seconds(wait))

        request_id, correlation_id, carrier = request_ids()
        arrival = arrive(connector, self._settings, tenant_id=tenant_id, headers=headers,
                           body=body, signed=signed, request_id=request_id,
                           correlation_id=correlation_id, trace_carrier=carrier)
        await self._writer.record(arrival)
        if arrival.failure is not None:
            raise arrival.failure
        note_access(job_id=str(arrival.job_id), inbox_id=str(arrival.inbox_id),
                    deduped=not arrival.job_created)
        return json_response(202, {
            "inbox_id": str(arrival.inbox_id),
            "job_id": str(arrival.job_id),
            "job_created": arrival.job_created,
            "deduped": not arrival.job_created,
            "accepted": True,
            "signature_valid": True,
        })

    def _tenant(self, raw: bytes | None) -> uuid.UUID:
        if raw is None:
            return self._settings.tenant.default_id
        try:
            if len(raw) > 64:
                raise ValueError
            return parse_uuid(raw.decode("ascii"))
        except (ValueError, UnicodeDecodeError):
            raise InvalidTenant("tenant id must be a UUID") from None


def _no_such_tenant_source(name: str) -> UnknownSource:
    return UnknownSource(f"no source {name!r} for this tenant, or the request's signature did "
                         "not verify")
