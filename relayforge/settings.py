"""Every environment variable Relayforge reads, named once, parsed into one frozen object.

Variables are `SECTION__KEY` (a `.env` file in the working directory is honoured, the real
environment winning). A bad value raises ConfigError with one line naming the variable.
"""

from __future__ import annotations

import base64
import os
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar
from urllib.parse import urlsplit

T = TypeVar("T")

# Values that only make sense on a developer's machine; APP_ENV=production refuses them.
DEV_GENERIC_SECRET = "dev-generic-secret"
DEV_GITHUB_SECRET = "dev-github-secret"
DEV_STRIPE_SECRET = "whsec_dev_stripe_secret"
DEV_SECRETS = {DEV_GENERIC_SECRET, DEV_GITHUB_SECRET, DEV_STRIPE_SECRET}
# A fixed development master key: secrets stored with it are only as secret as this source file.
DEV_MASTER_KEY = base64.b64encode(b"relayforge-dev-master-key-32byte").decode()


# What `relayforge serve --mode` runs, declared once (relayforge/runtime.py assembles each).
MODES: dict[str, frozenset[str]] = {
    "all": frozenset({"ingest", "relay", "consume"}),
    "ingest": frozenset({"ingest"}),
    "relay": frozenset({"relay"}),
    "consume": frozenset({"consume"}),
}


class ConfigError(ValueError):
    """A configuration variable is missing or malformed; the message names it."""


@dataclass(frozen=True)
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    # Connections a worker serves at once. Granian's default (backlog / workers) let 2,100
    # connections that send nothing take every slot: probes and webhooks then waited forever.
    backpressure: int = 16384
    backlog: int = 4096  # connections the kernel queues before they are accepted
    # A request's headers must arrive within this; it is also how long an idle keep-alive
    # connection stays open (the HTTP server has one timer for both). Longer than clients'
    # idle expiry (httpx 5 s, aiohttp 15 s): at 5 s, a client reusing a connection just as
    # the server closed it lost its request now and then.
    header_read_timeout_ms: int = 20000
    # A request's body must arrive within this of its headers: a client that declares a body
    # and sends it slowly, or never, holds nothing (no connection slot, no body budget) longer.
    body_read_timeout_ms: int = 30000


@dataclass(frozen=True)
class DatabaseSettings:
    url: str = ""  # empty: start the embedded PostgreSQL under ./var/
    max_connections: int = 10
    embedded_dir: str = "var/postgres"
    migrate_on_start: bool = True
    # Behind a pooler in transaction mode (PgBouncer): no named prepared statements, and what
    # needs a session of its own (LISTEN, the migration lock) on a direct URL.
    statement_cache: bool = True
    listen_url: str = ""  # empty: DATABASE__URL


@dataclass(frozen=True)
class AmqpSettings:
    url: str = ""  # empty in mode `all`: the in-process broker
    exchange: str = "relayforge.events"
    queue: str = "relayforge.jobs"
    dlx: str = "relayforge.dlx"
    dlq: str = "relayforge.jobs.dlq"
    routing_prefix: str = "job"
    # The DLQ keeps the newest this many (the database is the source of truth for dead letters).
    dlq_max_length: int = 100_000
    # quorum: replicated, survives a node's loss (RabbitMQ's advice for durable work); classic.
    queue_type: str = "quorum"


@dataclass(frozen=True)
class WebhookSettings:
    generic_hmac_secret: str = DEV_GENERIC_SECRET
    github_secret: str = DEV_GITHUB_SECRET
    stripe_endpoint_secret: str = DEV_STRIPE_SECRET
    stripe_signature_tolerance_seconds: int = 300
    store_rejected_bodies: bool = False
    # The connectors below have no development default: a tenant secret, or these.
    standard_secret: str = ""
    shopify_secret: str = ""
    slack_secret: str = ""
    gitlab_secret: str = ""
    paddle_secret: str = ""
    linear_secret: str = ""
    signature_tolerance_seconds: int = 300  # freshness of every timestamped scheme but Stripe's


@dataclass(frozen=True)
class TenantSettings:
    default_id: uuid.UUID = uuid.UUID(int=0)


@dataclass(frozen=True)
class AdminSettings:
    fallback_api_keys_json: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class HardeningSettings:
    ingress_rate_limit_per_second: float = 200.0
    ingress_burst: int = 400
    max_body_bytes: int = 262144  # for sources that set no limit of their own
    max_inflight_body_bytes: int = 268435456  # body bytes held at once by one process
    tenant_rate_limit_per_second: float = 100.0
    tenant_rate_limit_burst: int = 200
    tenant_daily_quota: int = 100000
    tenant_bucket_idle_seconds: int = 300
    # per client address, for requests that prove nothing (security/limits.UnverifiedBudget)
    unverified_rate_limit_per_second: float = 50.0
    unverified_burst: int = 100


@dataclass(frozen=True)
class IngestSettings:
    mode: str = "batch"  # batch: group commit; single: one transaction per request (comparison)
    batch_max_size: int = 256
    writers: int = 2


@dataclass(frozen=True)
class WorkerSettings:
    handlers: str = ""  # "source[:event_type]=module:callable;..." (see jobs.py)
    max_attempts: int = 5
    backoff_base_ms: int = 500
    backoff_max_ms: int = 60000
    concurrency: int = 64
    prefetch: int = 128
    job_timeout_seconds: float = 30.0
    lease_seconds: int = 120
    # While the oldest outcome not yet written is older than this, no new handler starts: a
    # consume process killed meanwhile repeats only the handlers it had in flight.
    max_outcome_lag_ms: int = 1000
    # A process that ingests and consumes begins new jobs itself, while it has free slots,
    # with no message through the relay and the broker (ingest/writer.py).
    begin_at_ingest: bool = True
    enable_test_faults: bool = False


@dataclass(frozen=True)
class DestinationsSettings:
    circuit_failures: int = 20  # consecutive failures that open a destination's circuit
    circuit_probe_seconds: float = 30.0  # one probe attempt this often while it is open
    disable_after_hours: float = 120.0  # failing this long disables the destination
    allow_private_networks: bool = False  # loopback/private targets (local development)
    max_concurrency: int = 10  # per destination and consume process, unless it sets its own


@dataclass(frozen=True)
class RelaySettings:
    batch_size: int = 200
    poll_interval_ms: int = 1000
    claim_timeout_seconds: int = 30
    max_publish_failures: int = 5
    queued_timeout_seconds: int = 300


@dataclass(frozen=True)
class RetentionSettings:
    inbox_days: int = 30
    jobs_days: int = 90
    outbox_days: int = 7
    audit_days: int = 365


@dataclass(frozen=True)
class LogSettings:
    level: str = "INFO"
    json: bool = True
    probes: bool = False  # access lines for /healthz, /readyz and /metrics too


@dataclass(frozen=True)
class OtelSettings:
    enabled: bool = False
    exporter_otlp_endpoint: str = "http://127.0.0.1:4318"
    exporter_otlp_timeout_ms: int = 10000
    service_name: str = "relayforge"


@dataclass(frozen=True)
class SecretsSettings:
    master_key: bytes = b""  # 32 bytes, base64 in the environment


@dataclass(frozen=True)
class Settings:
    app_env: str = "development"
    server: ServerSettings = field(default_factory=ServerSettings)
    database: DatabaseSettings = field(default_factory=DatabaseSettings)
    amqp: AmqpSettings = field(default_factory=AmqpSettings)
    webhooks: WebhookSettings = field(default_factory=WebhookSettings)
    tenant: TenantSettings = field(default_factory=TenantSettings)
    admin: AdminSettings = field(default_factory=AdminSettings)
    hardening: HardeningSettings = field(default_factory=HardeningSettings)
    ingest: IngestSettings = field(default_factory=IngestSettings)
    worker: WorkerSettings = field(default_factory=WorkerSettings)
    relay: RelaySettings = field(default_factory=RelaySettings)
    destinations: DestinationsSettings = field(default_factory=DestinationsSettings)
    retention: RetentionSettings = field(default_factory=RetentionSettings)
    log: LogSettings = field(default_factory=LogSettings)
    otel: OtelSettings = field(default_factory=OtelSettings)
    secrets: SecretsSettings = field(default_factory=SecretsSettings)

    @property
    def production(self) -> bool:
        return self.app_env == "production"


# Plain names some platforms set, accepted as aliases of the sectioned ones.
ALIASES = {"DATABASE_URL": "DATABASE__URL", "AMQP_URL": "AMQP__URL"}


def _parse_bool(raw: str) -> bool:
    low = raw.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected true or false")


def _parse_non_negative_int(raw: str) -> int:
    value = int(raw)
    if value < 0:
        raise ValueError("must not be negative")
    return value


def _parse_non_negative_float(raw: str) -> float:
    value = float(raw)
    if not value >= 0:
        raise ValueError("must not be negative")
    return value


def _parse_api_keys(raw: str) -> tuple[tuple[str, str], ...]:
    import orjson

    from relayforge.roles import Role

    roles = [r.value for r in Role]
    data = orjson.loads(raw)
    if not isinstance(data, list):
        raise ValueError(f'expected [{{"key": "...", "role": "{"|".join(roles)}"}}]')
    keys = []
    for item in data:
        if not isinstance(item, dict) or not isinstance(item.get("key"), str) or not item["key"]:
            raise ValueError('each entry needs a non-empty "key"')
        if item.get("role") not in roles:
            raise ValueError(f"role must be one of {', '.join(roles)}")
        keys.append((item["key"], item["role"]))
    return tuple(keys)


def _parse_master_key(raw: str) -> bytes:
    key = base64.b64decode(raw, validate=True)
    if len(key) != 32:
        raise ValueError("must be 32 bytes, base64-encoded (openssl rand -base64 32)")
    return key


def _parse_level(raw: str) -> str:
    level = raw.strip().upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ValueError("expected DEBUG, INFO, WARNING, ERROR or CRITICAL")
    return level


def _parse_ingest_mode(raw: str) -> str:
    if raw not in ("batch", "single"):
        raise ValueError("expected batch or single")
    return raw


def _parse_queue_type(raw: str) -> str:
    if raw not in ("quorum", "classic"):
        raise ValueError("expected quorum or classic")
    return raw


PARSERS: dict[tuple[str, str], Callable[[str], Any]] = {
    ("tenant", "default_id"): uuid.UUID,
    ("admin", "fallback_api_keys_json"): _parse_api_keys,
    ("secrets", "master_key"): _parse_master_key,
    ("log", "level"): _parse_level,
    ("ingest", "mode"): _parse_ingest_mode,
    ("amqp", "queue_type"): _parse_queue_type,
}
TYPE_PARSERS: dict[Any, Callable[[str], Any]] = {
    "bool": _parse_bool,
    "int": _parse_non_negative_int,
    "float": _parse_non_negative_float,
    "str": str,
}


def _section(cls: type[T], name: str, env: Mapping[str, str], problems: list[str]) -> T:
    """The section from its variables; a bad value is a line in `problems` and keeps its default."""
    values: dict[str, Any] = {}
    for f in fields(cls):  # type: ignore[arg-type]
        var = f"{name.upper()}__{f.name.upper()}"
        raw = env.get(var)
        if raw is None:
            continue
        parser = PARSERS.get((name, f.name)) or TYPE_PARSERS[f.type]
        try:
            values[f.name] = parser(raw)
        except (ValueError, TypeError) as exc:
            problems.append(f"{var}: invalid value {raw[:40]!r}: {exc}")
    return cls(**values)


def unknown_variables(env: Mapping[str, str]) -> list[str]:
    """`SECTION__KEY` variables of a known section that name no setting (a typo, most likely)."""
    known = {f"{f.name.upper()}__{g.name.upper()}"
             for f in fields(Settings) if f.name != "app_env"
             for g in fields(f.default_factory)}  # type: ignore[arg-type]
    sections = {f.name.upper() + "__" for f in fields(Settings) if f.name != "app_env"}
    return sorted(k for k in env if k.split("__")[0] + "__" in sections and "__" in k
                  and k not in known)


def load_settings(env: Mapping[str, str] | None = None, dotenv: bool = True) -> Settings:
    """Settings from `env` (default: the process environment plus ./.env); the first problem
    raises ConfigError."""
    settings, problems = read_settings(env, dotenv)
    if problems:
        raise ConfigError(problems[0])
    return settings


def read_settings(env: Mapping[str, str] | None = None,
                  dotenv: bool = True) -> tuple[Settings, list[str]]:
    """Settings and every problem with them, one line each naming the variable; a bad value
    keeps its default (so `doctor` can still check everything else)."""
    if env is None:
        if dotenv and os.path.exists(".env"):
            from dotenv import dotenv_values

            merged = {k: v for k, v in dotenv_values(".env").items() if v is not None}
            merged.update(os.environ)
            env = merged
        else:
            env = os.environ
    env = dict(env)
    for alias, name in ALIASES.items():
        if alias in env and name not in env:
            env[name] = env[alias]
    problems: list[str] = []
    try:
        app_env = _parse_app_env(env.get("APP_ENV", "development"))
    except ConfigError as exc:
        problems.append(exc.args[0])
        app_env = "production"  # the strictest reading of a misspelt environment
    sections: dict[str, Any] = {
        f.name: _section(f.default_factory, f.name, env, problems)  # type: ignore[arg-type]
        for f in fields(Settings)
        if f.name != "app_env"
    }
    settings = Settings(app_env=app_env, **sections)
    problems.extend(_problems(settings))
    return settings, problems


APP_ENVS = ("development", "production", "test")
MIN_PRODUCTION_SECRET = 16  # characters of an env webhook secret or fallback admin key


def _parse_app_env(raw: str) -> str:
    """Case and surrounding space don't matter; any other value stops the start (a typo must
    never run production as development)."""
    value = raw.strip().lower()
    if value not in APP_ENVS:
        raise ConfigError(f"APP_ENV: invalid value {raw[:40]!r}: expected one of "
                          f"{', '.join(APP_ENVS)}")
    return value


def _problems(s: Settings) -> Iterator[str]:
    if s.database.url and urlsplit(s.database.url).scheme not in ("postgresql", "postgres"):
        yield ("DATABASE__URL: not a PostgreSQL URL (expected "
               "postgresql://user:password@host:5432/database)")
    if s.server.port > 65535:
        yield "SERVER__PORT: must be at most 65535"
    if s.server.workers < 1:
        yield "SERVER__WORKERS: must be at least 1"
    if s.worker.max_attempts < 1:
        yield "WORKER__MAX_ATTEMPTS: must be at least 1"
    if s.database.max_connections < 2:
        yield "DATABASE__MAX_CONNECTIONS: must be at least 2"
    if s.ingest.batch_max_size < 1:
        yield "INGEST__BATCH_MAX_SIZE: must be at least 1"
    if s.worker.lease_seconds <= s.worker.job_timeout_seconds:
        yield "WORKER__LEASE_SECONDS: must exceed WORKER__JOB_TIMEOUT_SECONDS"
    if s.worker.prefetch < 1 or s.worker.concurrency < 1:
        yield "WORKER__PREFETCH: prefetch and concurrency must be at least 1"
    for f in fields(RetentionSettings):
        if getattr(s.retention, f.name) < 1:
            yield (f"RETENTION__{f.name.upper()}: must be at least 1 (0 would delete "
                   "every row at the next prune)")
    if s.production:
        yield from _production_problems(s)


def _production_problems(s: Settings) -> Iterator[str]:
    """What APP_ENV=production refuses: development secrets and keys, test faults."""
    if not s.secrets.master_key:
        yield "SECRETS__MASTER_KEY: required when APP_ENV=production"
    elif s.secrets.master_key == base64.b64decode(DEV_MASTER_KEY):
        yield ("SECRETS__MASTER_KEY: the development key (published in the source) "
               "is refused when APP_ENV=production")
    for var, value in (
        ("WEBHOOKS__GENERIC_HMAC_SECRET", s.webhooks.generic_hmac_secret),
        ("WEBHOOKS__GITHUB_SECRET", s.webhooks.github_secret),
        ("WEBHOOKS__STRIPE_ENDPOINT_SECRET", s.webhooks.stripe_endpoint_secret),
    ):
        if value in DEV_SECRETS:
            yield f"{var}: the development default is refused when APP_ENV=production"
    if s.worker.enable_test_faults:
        yield "WORKER__ENABLE_TEST_FAULTS: refused when APP_ENV=production"
    if s.destinations.allow_private_networks:
        yield ("DESTINATIONS__ALLOW_PRIVATE_NETWORKS: refused when APP_ENV=production "
               "(destinations could reach the services beside Relayforge)")
    for f in fields(WebhookSettings):
        value = getattr(s.webhooks, f.name)
        if f.name.endswith("secret") and value and len(value) < MIN_PRODUCTION_SECRET:
            yield (f"WEBHOOKS__{f.name.upper()}: at least {MIN_PRODUCTION_SECRET} "
                   "characters when APP_ENV=production (empty: no env fallback)")
    if any(len(key) < MIN_PRODUCTION_SECRET for key, _ in s.admin.fallback_api_keys_json):
        yield (f"ADMIN__FALLBACK_API_KEYS_JSON: every key at least {MIN_PRODUCTION_SECRET} "
               "characters when APP_ENV=production")


def master_key(s: Settings) -> bytes:
    """The key that encrypts tenant secrets at rest (the dev key outside production)."""
    return s.secrets.master_key or base64.b64decode(DEV_MASTER_KEY)
