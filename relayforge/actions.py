"""Operator actions: the changes an operator makes, each in one transaction with its audit
record. The admin API, the console and the CLI all call these, so an action is checked, done
and audited the same way whichever door it came through (AuditAction names each one once)."""

from __future__ import annotations

import datetime as dt
import enum
import time
import uuid
from typing import Any

import orjson

from relayforge.connectors import CONNECTORS
from relayforge.connectors.tenant import valid_name
from relayforge.destinations.client import Answer, DeliveryClient
from relayforge.destinations.filters import FilterError, check_filter
from relayforge.destinations.requests import RequestBuilder
from relayforge.destinations.signing import header_context, new_secret
from relayforge.errors import BadRequest, Conflict, InvalidDestination, NotFound, UnknownSource
from relayforge.events import DomainEvent, has_control
from relayforge.ids import new_id
from relayforge.models import (
    ApiKeyCreated,
    DeliveryAttemptView,
    DestinationRecovered,
    SecretRotated,
    SecretView,
    TestEventSent,
)
from relayforge.roles import Actor, Role
from relayforge.security.apikeys import generate_key, hash_key
from relayforge.security.secrets import SecretCipher, store_secret
from relayforge.settings import Settings
from relayforge.stores import Stores
from relayforge.stores.destinations import DestinationFields

MAX_OVERLAP_SECONDS = 31_536_000  # a year: how long a previous secret may stay valid
MAX_BULK, DEFAULT_BULK = 1000, 100  # jobs or deliveries one bulk reprocess takes at most


class AuditAction(enum.StrEnum):
    """What the audit log says was done (admin_audit_log.action)."""

    JOB_REPROCESS = "job.reprocess"
    JOB_REPROCESS_BULK = "job.reprocess_bulk"
    JOB_REDELIVER = "job.redeliver"
    SECRET_SET = "secret.set"
    SECRET_DELETE = "secret.delete"
    API_KEY_CREATE = "api_key.create"
    API_KEY_REVOKE = "api_key.revoke"
    DESTINATION_CREATE = "destination.create"
    DESTINATION_UPDATE = "destination.update"
    DESTINATION_DELETE = "destination.delete"
    DESTINATION_ROTATE_SECRET = "destination.rotate_secret"
    DESTINATION_PAUSE = "destination.pause"
    DESTINATION_RESUME = "destination.resume"
    DESTINATION_RECOVER = "destination.recover"
    DESTINATION_TEST = "destination.test"
    OPERATIONAL_ENDPOINT_SET = "operational_endpoint.set"
    OPERATIONAL_ENDPOINT_DELETE = "operational_endpoint.delete"
    DELIVERY_REPROCESS = "delivery.reprocess"
    DELIVERY_REPROCESS_BULK = "delivery.reprocess_bulk"
    SOURCE_PUT = "source.put"
    SOURCE_DELETE = "source.delete"


# ---------------------------------------------------------------------------------------- jobs

async def reprocess_job(stores: Stores, settings: Settings, actor: Actor,
                        job_id: uuid.UUID) -> None:
    """Reprocess one dead-lettered job; 404 or 409 otherwise."""
    async with stores.transaction() as tx:
        if not await tx.jobs.reprocess(job_id=job_id, limit=1,
                                       extra_attempts=settings.worker.max_attempts):
            state = await tx.jobs.state(job_id=job_id)
            if state is None:
                raise NotFound("no such job")
            raise Conflict(f"only dead_lettered jobs can be reprocessed; this one is "
                           f"{state.status}")
        await tx.audit.write(actor=actor, action=AuditAction.JOB_REPROCESS, target=str(job_id))


async def reprocess_jobs(stores: Stores, settings: Settings, actor: Actor, *,
                         tenant_id: uuid.UUID | None, source: str | None,
                         event_type: str | None, limit: int) -> list[uuid.UUID]:
    """Reprocess the dead-lettered jobs matching every given filter."""
    async with stores.transaction() as tx:
        ids = await tx.jobs.reprocess(tenant_id=tenant_id, source=source, event_type=event_type,
                                      limit=limit, extra_attempts=settings.worker.max_attempts)
        await tx.audit.write(actor=actor, action=AuditAction.JOB_REPROCESS_BULK, target="jobs",
                             detail={"filter": {"tenant_id": str(tenant_id) if tenant_id else None,
                                                "source": source, "event_type": event_type,
                                                "limit": limit}, "count": len(ids),
                                     "job_ids": [str(i) for i in ids]})  # each job's timeline
    return ids


async def reprocess_delivery(stores: Stores, settings: Settings, actor: Actor,
                             delivery_id: uuid.UUID) -> None:
    """Reprocess one dead-lettered delivery; 404 or 409 otherwise."""
    async with stores.transaction() as tx:
        if not await tx.deliveries.reprocess(delivery_id=delivery_id, limit=1,
                                             extra_attempts=settings.worker.max_attempts):
            state = await tx.deliveries.state(delivery_id=delivery_id)
            if state is None:
                raise NotFound("no such delivery")
            raise Conflict(f"only dead_lettered deliveries can be reprocessed; this one is "
                           f"{state[0]}")
        await tx.audit.write(actor=actor, action=AuditAction.DELIVERY_REPROCESS,
                             target=str(delivery_id))


async def reprocess_deliveries(stores: Stores, settings: Settings, actor: Actor, *,
                               tenant_id: uuid.UUID | None, destination_id: uuid.UUID | None,
                               limit: int) -> list[uuid.UUID]:
    """Reprocess the dead-lettered deliveries matching every given filter."""
    async with stores.transaction() as tx:
        ids = await tx.deliveries.reprocess(tenant_id=tenant_id, destination_id=destination_id,
                                            limit=limit,
                                            extra_attempts=settings.worker.max_attempts)
        await tx.audit.write(
            actor=actor, action=AuditAction.DELIVERY_REPROCESS_BULK, target="deliveries",
            detail={"filter": {"tenant_id": str(tenant_id) if tenant_id else None,
                               "destination_id": str(destination_id) if destination_id else None,
                               "limit": limit}, "count": len(ids)})
    return ids


# ------------------------------------------------------------------------------ tenant secrets

async def known_source(stores: Stores, tenant_id: uuid.UUID, name: str) -> str:
    """A built-in source's name, or one of the tenant's own sources (lower-cased); else 404."""
    name = name.lower()
    if name not in CONNECTORS and (not valid_name(name) or await stores.sources.get(
            tenant_id=tenant_id, name=name) is None):
        raise UnknownSource(f"unknown provider {name[:64]!r}")
    return name


async def set_secret(stores: Stores, cipher: SecretCipher, settings: Settings, actor: Actor, *,
                     tenant_id: uuid.UUID, provider: str, secret: str,
                     previous_expires_in_seconds: int) -> SecretView:
    """Make `secret` the tenant's current one for a source (encrypted); the previous ones stay
    valid for the overlap. On a tenant's first stored secret the previous one is the env secret
    it was verified with until now: it is kept, stored, expiring after the same overlap."""
    if not 0 <= previous_expires_in_seconds <= MAX_OVERLAP_SECONDS:
        raise BadRequest(f"previous_expires_in_seconds: 0 to {MAX_OVERLAP_SECONDS}")
    provider = await known_source(stores, tenant_id, provider)
    connector = CONNECTORS.get(provider)
    env_secret = connector.env_secret(settings) if connector else ""
    async with stores.transaction() as tx:
        first = await tx.secrets.mark_managed(tenant_id=tenant_id, provider=provider)
        if first and env_secret and previous_expires_in_seconds > 0:
            await store_secret(tx, cipher, tenant_id, provider, env_secret,
                               expires_in_seconds=float(previous_expires_in_seconds))
        await tx.secrets.expire_previous(tenant_id=tenant_id, provider=provider,
                                         in_seconds=float(previous_expires_in_seconds))
        view = await store_secret(tx, cipher, tenant_id, provider, secret)
        await tx.audit.write(actor=actor, action=AuditAction.SECRET_SET,
                             target=f"{tenant_id}/{provider}",
                             detail={"secret_id": str(view.id), "first": first,
                                     "previous_expires_in_seconds": previous_expires_in_seconds})
    return view


async def retire_secret(stores: Stores, actor: Actor, *, tenant_id: uuid.UUID, provider: str,
                        secret_id: uuid.UUID) -> None:
    """Retire one stored secret at once; 404 when the tenant has no such secret."""
    async with stores.transaction() as tx:
        if not await tx.secrets.retire(tenant_id=tenant_id, provider=provider,
                                       secret_id=secret_id):
            raise NotFound("no such secret")
        await tx.audit.write(actor=actor, action=AuditAction.SECRET_DELETE,
                             target=f"{tenant_id}/{provider}", detail={"secret_id": str(secret_id)})


# ---------------------------------------------------------------------------------- API keys

async def create_key(stores: Stores, actor: Actor, role: Role, name: str) -> ApiKeyCreated:
    """A new key, shown once (only its hash is stored)."""
    key = generate_key()
    async with stores.transaction() as tx:
        view = await tx.api_keys.insert(key_id=new_id(), name=name, key_hash=hash_key(key),
                                        role=role)
        await tx.audit.write(actor=actor, action=AuditAction.API_KEY_CREATE, target=str(view.id),
                             detail={"role": role})
    return ApiKeyCreated(id=view.id, name=view.name, role=view.role, created_at=view.created_at,
                         key=key)


async def revoke_key(stores: Stores, actor: Actor, key_id: uuid.UUID) -> None:
    """Revoke an active key; 404 when there is none with that id."""
    async with stores.transaction() as tx:
        if not await tx.api_keys.revoke(key_id=key_id):
            raise NotFound("no such active key")
        await tx.audit.write(actor=actor, action=AuditAction.API_KEY_REVOKE, target=str(key_id))


# ------------------------------------------------------------------------------- destinations

# Names the delivery sets itself: a custom header may not replace them.
RESERVED_HEADERS = ("content-type", "content-length", "host", "transfer-encoding", "connection",
                    "traceparent", "tracestate", "baggage")
RESERVED_PREFIXES = ("webhook-", "x-relayforge-")


def check_headers(headers: dict[str, str]) -> list[str]:
    """A destination's custom headers: their names, sorted; 400 invalid_destination naming
    the first that may not be used."""
    for name, value in headers.items():
        low = name.lower()
        if low in RESERVED_HEADERS or low.startswith(RESERVED_PREFIXES):
            raise InvalidDestination(f"headers.{name}: set by every delivery; not replaceable")
        if has_control(value):
            raise InvalidDestination(f"headers.{name}: control characters are not allowed")
    return sorted(headers)


def stored_filter(spec: dict[str, Any]) -> str:
    """A destination's filter as stored (JSON); 400 invalid_destination naming the field."""
    try:
        check_filter(spec)
        return orjson.dumps(spec).decode()
    except FilterError as exc:
        raise InvalidDestination(str(exc)) from None
    except orjson.JSONEncodeError:  # a value nested past what is stored (a list in a list…)
        raise InvalidDestination("filter: nested too deeply") from None


async def rotate_destination_secret(stores: Stores, cipher: SecretCipher, actor: Actor,
                                    tenant_id: uuid.UUID, destination_id: uuid.UUID,
                                    overlap_seconds: int) -> SecretRotated:
    """A new signing secret; the previous ones keep signing for the overlap."""
    if await stores.destinations.get(tenant_id=tenant_id, destination_id=destination_id) is None:
        raise NotFound("no such destination")
    secret = new_secret()
    nonce, ciphertext = cipher.encrypt(tenant_id, header_context(destination_id), secret)
    async with stores.transaction() as tx:
        await tx.destinations.expire_secrets(destination_id=destination_id,
                                             in_seconds=overlap_seconds)
        await tx.destinations.add_secret(
            secret_id=new_id(), destination_id=destination_id, nonce=nonce,
            ciphertext=ciphertext, fingerprint=cipher.fingerprint(secret))
        await tx.audit.write(actor=actor, action=AuditAction.DESTINATION_ROTATE_SECRET,
                             target=str(destination_id),
                             detail={"tenant_id": str(tenant_id),
                                     "previous_expires_in_seconds": overlap_seconds})
        view = await tx.destinations.get(tenant_id=tenant_id, destination_id=destination_id)
    assert view is not None
    expires = [s.expires_at for s in view.secrets if s.expires_at is not None]
    return SecretRotated(destination_id=destination_id, signing_secret=secret,
                         previous_expires_at=max(expires) if expires else view.updated_at)


async def set_destination_enabled(stores: Stores, actor: Actor, tenant_id: uuid.UUID,
                                  destination_id: uuid.UUID, enabled: bool) -> None:
    """Enable (clearing why it was disabled, closing its circuit) or disable."""
    async with stores.transaction() as tx:
        if not await tx.destinations.update(tenant_id=tenant_id, destination_id=destination_id,
                                            fields=DestinationFields(enabled=enabled)):
            raise NotFound("no such destination")
        await tx.audit.write(actor=actor, action=AuditAction.DESTINATION_UPDATE,
                             target=str(destination_id),
                             detail={"tenant_id": str(tenant_id), "fields": ["enabled"],
                                     "enabled": enabled})


async def pause_destination(stores: Stores, actor: Actor, tenant_id: uuid.UUID,
                            destination_id: uuid.UUID, paused: bool) -> None:
    """Pause (its deliveries are held, none attempted) or resume (they go out in order)."""
    async with stores.transaction() as tx:
        if not await tx.destinations.pause(tenant_id=tenant_id, destination_id=destination_id,
                                           paused=paused):
            raise NotFound("no such destination")
        await tx.audit.write(
            actor=actor, target=str(destination_id), detail={"tenant_id": str(tenant_id)},
            action=AuditAction.DESTINATION_PAUSE if paused else AuditAction.DESTINATION_RESUME)


async def recover_destination(stores: Stores, settings: Settings, actor: Actor,
                              tenant_id: uuid.UUID, destination_id: uuid.UUID,
                              since: dt.datetime) -> DestinationRecovered:
    """Send again every delivery of the destination that failed at or after `since`: the
    dead-lettered ones (with WORKER__MAX_ATTEMPTS more attempts) and retries waiting for later.
    In batches of MAX_BULK, each with its audit record, until none is left."""
    view = await stores.destinations.get(tenant_id=tenant_id, destination_id=destination_id)
    if view is None:
        raise NotFound("no such destination")
    if not view.enabled:
        raise Conflict("the destination is disabled: enable it first, or every recovered "
                       "delivery is dead-lettered again")
    recovered = 0
    while True:
        async with stores.transaction() as tx:
            ids = await tx.deliveries.recover(destination_id=destination_id, since=since,
                                              limit=MAX_BULK,
                                              extra_attempts=settings.worker.max_attempts)
            await tx.audit.write(actor=actor, action=AuditAction.DESTINATION_RECOVER,
                                 target=str(destination_id),
                                 detail={"tenant_id": str(tenant_id),
                                         "since": since.isoformat(), "count": len(ids)})
        recovered += len(ids)
        if len(ids) < MAX_BULK:
            return DestinationRecovered(destination_id=destination_id, since=since,
                                        recovered=recovered)


TEST_EVENT_TYPE = "relayforge.test"


async def send_test_event(stores: Stores, settings: Settings, cipher: SecretCipher,
                          actor: Actor, tenant_id: uuid.UUID,
                          destination_id: uuid.UUID) -> TestEventSent:
    """A `relayforge.test` event sent to the destination now, signed like every delivery, and
    what its service answered. Paused or disabled, it is sent all the same (to check the
    service before resuming); it is no delivery: nothing retries it, the audit log keeps it."""
    message_id = new_id()
    event = DomainEvent(source="relayforge", event_type=TEST_EVENT_TYPE,
                        provider_event_id=str(message_id), occurred_at_unix=int(time.time()),
                        data={"tenant_id": str(tenant_id), "destination_id": str(destination_id),
                              "message": "a test event sent by an operator"})
    attempt = await stores.destinations.test_request(
        tenant_id=tenant_id, destination_id=destination_id, message_id=message_id,
        event=event.to_json(), event_type=TEST_EVENT_TYPE)
    if attempt is None:
        raise NotFound("no such destination")
    started_at = dt.datetime.now(dt.UTC)
    request = RequestBuilder(cipher).build(attempt, {})
    if isinstance(request, str):
        answer = Answer(None, request, None, 0.0, None)
    else:
        s = settings.destinations
        client = DeliveryClient(s.allow_private_networks, production=settings.production)
        await client.start()
        try:
            answer = await client.post(*request, attempt.timeout_ms)
        finally:
            await client.close()
    await stores.audit.write(actor=actor, action=AuditAction.DESTINATION_TEST,
                             target=str(destination_id),
                             detail={"tenant_id": str(tenant_id), "webhook_id": str(message_id),
                                     "status_code": answer.status, "error": answer.error})
    return TestEventSent(
        destination_id=destination_id, webhook_id=message_id, event_type=TEST_EVENT_TYPE,
        delivered=answer.succeeded,
        attempt=DeliveryAttemptView(attempt=1, started_at=started_at,
                                    duration_ms=answer.duration_ms, status_code=answer.status,
                                    error=answer.error, response_body=answer.body))
