"""Operator actions: the changes an operator makes, each in one transaction with its audit
record. The admin API, the console and the CLI all call these, so an action is checked, done
and audited the same way whichever door it came through (AuditAction names each one once)."""

from __future__ import annotations

import enum
import uuid
from typing import Any

import orjson

from relayforge.connectors import CONNECTORS
from relayforge.connectors.tenant import valid_name
from relayforge.destinations.filters import FilterError, check_filter
from relayforge.destinations.signing import header_context, new_secret
from relayforge.errors import BadRequest, Conflict, InvalidDestination, NotFound, UnknownSource
from relayforge.events import has_control
from relayforge.ids import new_id
from relayforge.models import ApiKeyCreated, SecretRotated, SecretView
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
                                                "limit": limit}, "count": len(ids)})
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
