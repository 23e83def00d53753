"""Relayforge: multi-tenant webhook ingestion and job orchestration.

Settings come from the environment (SECTION__KEY, and a .env file); see the README.
"""

# Nothing imported at module level may import the metrics module: with several workers,
# PROMETHEUS_MULTIPROC_DIR must be set before it is first imported (forked workers inherit it).

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, NoReturn, TypeVar

import asyncpg

from relayforge import actions, kernels
from relayforge.connectors import SOURCES
from relayforge.errors import one_line
from relayforge.jobs import JobStatus
from relayforge.observability import logging as log_setup
from relayforge.roles import CLI, Role
from relayforge.settings import (
    MODES,
    ConfigError,
    Settings,
    load_settings,
    master_key,
    read_settings,
    unknown_variables,
)
from relayforge.stores import Stores

log = logging.getLogger(__name__)
T = TypeVar("T")


def _settings() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        print(f"relayforge: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


# A command's connections run a few statements once: prepared statements would gain nothing,
# and without them they work through a pooler in transaction mode (PgBouncer) as they are.
ONE_OFF: dict[str, Any] = {"statement_cache_size": 0}


def _database_url(settings: Settings) -> tuple[str, str]:
    """The database URL and a word for the startup log; starts the embedded server if needed."""
    if settings.database.url:
        return settings.database.url, "postgres"
    from relayforge.db.pool import start_embedded

    try:
        url = start_embedded(settings.database.embedded_dir)
    except ModuleNotFoundError:  # the container image leaves the embedded server out
        print("relayforge: configuration error: DATABASE__URL: required here (this install has no "
              "embedded PostgreSQL; `pip install pgserver` adds it)", file=sys.stderr)
        raise SystemExit(2) from None
    return url, f"embedded postgres ({settings.database.embedded_dir})"


def _fresh_metrics_dir(settings: Settings) -> str:
    """Where worker processes share their metrics, emptied at each start (stale pids' files
    would otherwise be summed in)."""
    import shutil
    from pathlib import Path

    path = Path(settings.database.embedded_dir).resolve().parent / f"metrics-{settings.server.port}"
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return str(path)


def _require_free_port(host: str, port: int) -> None:
    """Granian listens with SO_REUSEPORT (its workers share the port), so a second server on a
    port in use would start and take half its traffic. A plain bind tells first."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is no owner
        try:
            probe.bind((host, port))
        except OSError as exc:
            print(f"relayforge: SERVER__PORT: {host}:{port} is not free ({exc.strerror}); every "
                  "process needs a port of its own", file=sys.stderr)
            raise SystemExit(1) from None


def cmd_serve(args: argparse.Namespace) -> None:
    settings = _settings()
    log_setup.configure(settings.log.level, settings.log.json)
    _require_free_port(settings.server.host, settings.server.port)
    for name in unknown_variables(os.environ):
        log.warning("unknown setting ignored", extra={"variable": name})
    url, database = _database_url(settings)
    os.environ["DATABASE__URL"] = url  # Granian workers read settings from the environment
    os.environ["RELAYFORGE_MODE"] = args.mode
    if settings.server.workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = _fresh_metrics_dir(settings)
    _wait_for_database(url)
    if settings.database.migrate_on_start:
        _migrate(settings.database.listen_url or url)
    _check_master_key(url, settings)
    broker = "rabbitmq" if settings.amqp.url else ("in-process" if args.mode == "all" else "none")
    if args.mode in ("relay", "consume") and not settings.amqp.url:
        print(f"relayforge: configuration error: AMQP__URL: required in mode {args.mode}",
              file=sys.stderr)
        raise SystemExit(2)
    if settings.amqp.url and args.mode != "ingest":
        _wait_for_broker(settings.amqp.url)
    handlers_error = _handlers_error(settings) if "consume" in MODES[args.mode] else None
    if handlers_error:  # a bad handler target stops the start before it listens
        print(f"relayforge: configuration error: {handlers_error}", file=sys.stderr)
        raise SystemExit(2)
    if broker == "in-process" and settings.server.workers > 1:
        print("relayforge: configuration error: SERVER__WORKERS: the in-process broker needs one "
              "worker; set AMQP__URL to run more", file=sys.stderr)
        raise SystemExit(2)
    log.info("relayforge starting", extra={
        "mode": args.mode, "database": database, "broker": broker,
        "kernels": kernels.IMPLEMENTATION,
        "address": f"{settings.server.host}:{settings.server.port}",
        "ingest_mode": settings.ingest.mode,
    })
    from granian import Granian
    from granian.constants import Interfaces, Loops
    from granian.http import HTTP1Settings
    from granian.log import LogLevels

    Granian(
        "relayforge.app:app_factory",
        factory=True,
        address=settings.server.host,
        port=settings.server.port,
        interface=Interfaces.ASGI,
        workers=settings.server.workers,
        loop=Loops.uvloop,
        log_access=False,
        log_level=LogLevels(settings.log.level.lower()),
        log_dictconfig=log_setup.granian_config(settings.log.level, settings.log.json),
        backlog=settings.server.backlog,
        backpressure=settings.server.backpressure,
        http1_settings=HTTP1Settings(header_read_timeout=settings.server.header_read_timeout_ms),
    ).serve()


def cmd_migrate(args: argparse.Namespace) -> None:
    settings = _settings()
    log_setup.configure(settings.log.level, settings.log.json)
    url, _ = _database_url(settings)
    _wait_for_database(url)
    applied, waiting = _migrate(settings.database.listen_url or url, finish=args.finish)
    print(f"applied {len(applied)} migration(s): {', '.join(applied) or 'none pending'}")
    if waiting:
        print(f"{len(waiting)} migration(s) finish the upgrade ({', '.join(waiting)}): run "
              "`relayforge migrate --finish` once every process runs this release")


def _check_master_key(url: str, settings: Settings) -> None:
    """Stop with one line if stored secrets don't decrypt with SECRETS__MASTER_KEY."""
    from relayforge.security.secrets import SecretCipher, WrongMasterKey, check_master_key

    cipher = SecretCipher(master_key(settings))
    try:
        asyncio.run(_with_stores(url, lambda stores: check_master_key(stores, cipher)))
    except WrongMasterKey as exc:
        print(f"relayforge: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    except (OSError, asyncpg.PostgresError) as exc:  # not reachable or not migrated yet
        log.warning("stored secrets not checked", extra={"error": repr(exc)})


MAX_WAIT_SECONDS = 10.0  # between tries while a service is not up yet


def _wait_until_up(variable: str, what: str,
                   connect: Callable[[], Coroutine[Any, Any, None]],
                   refused: Callable[[BaseException], bool]) -> None:
    """Connect once before starting. A service that is not up yet (refused, unreachable,
    starting, a name not resolvable yet) is waited for, with one log line per try and a growing
    pause, as an orchestrator starting the services together expects; one that answers no (no
    such database, wrong password) stops the start with one line naming the variable."""
    delay = 0.5
    while True:
        try:
            asyncio.run(connect())
            return
        except Exception as exc:
            if refused(exc) or not isinstance(exc, (OSError, TimeoutError, asyncpg.PostgresError)):
                print(f"relayforge: {variable}: {one_line(exc)}", file=sys.stderr)
                raise SystemExit(2) from None
            log.warning(f"{what} not reachable yet; retrying", extra={
                "variable": variable, "error": one_line(exc), "retry_in_seconds": delay})
        time.sleep(delay)
        delay = min(MAX_WAIT_SECONDS, delay * 2)


def _wait_for_database(url: str) -> None:
    async def connect() -> None:
        await (await asyncpg.connect(url, timeout=5, **ONE_OFF)).close()

    def refused(exc: BaseException) -> bool:  # it answered, and said no
        return isinstance(exc, (asyncpg.PostgresError, asyncpg.InterfaceError)) and not isinstance(
            exc, (asyncpg.CannotConnectNowError, asyncpg.TooManyConnectionsError))

    _wait_until_up("DATABASE__URL", "database", connect, refused)


def _wait_for_broker(url: str) -> None:
    import aio_pika
    from aio_pika.exceptions import ProbableAuthenticationError

    async def connect() -> None:
        await (await aio_pika.connect(url, timeout=5)).close()

    quiet = logging.getLogger("aiormq.connection")  # it logs each refused try as an error
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)
    try:
        _wait_until_up("AMQP__URL", "broker", connect,
                       lambda exc: isinstance(exc, ProbableAuthenticationError))
    finally:
        quiet.setLevel(level)


def _migrate(url: str, *, finish: bool = False) -> tuple[list[str], list[str]]:
    """Apply pending migrations (those that finish an upgrade with `finish` only): (applied,
    waiting for `finish`). A changed landed migration stops the process with one line."""
    from relayforge.db.migrate import MigrationDrift, migrate_url

    try:
        return asyncio.run(migrate_url(url, finish=finish))
    except MigrationDrift as exc:
        print(f"relayforge: {exc}", file=sys.stderr)
        raise SystemExit(1) from None


def cmd_doctor(args: argparse.Namespace) -> None:
    """Check what a start needs, one line each; exit 1 if anything that applies failed. Every
    check runs even when the configuration has problems (each is a `config: FAILED` line; a bad
    value is checked at its default). The database and the broker are checked when their URLs
    are set (the embedded defaults are started by `serve` only)."""
    settings, problems = read_settings()
    print(f"kernels: {kernels.IMPLEMENTATION}")
    for problem in problems:
        print(f"config: FAILED: {problem}")
    if not problems:
        print("config: ok")
    print(f"app_env: {settings.app_env}")
    print("master key: " + ("set" if settings.secrets.master_key else
                            "not set" if settings.production else "development key"))
    results = [not problems, _doctor_handlers(settings)]
    if settings.database.url:
        results.append(asyncio.run(_doctor_database(settings)))
    else:
        print("database: embedded (started by serve; set DATABASE__URL to check a server)")
    if settings.amqp.url:
        results.append(asyncio.run(_doctor_broker(settings)))
    else:
        print("broker: in-process (mode all only; set AMQP__URL to check RabbitMQ)")
    if not all(results):
        raise SystemExit(1)


def _handlers_error(settings: Settings) -> str | None:
    """Why WORKER__HANDLERS can't be loaded (every target is imported), or None."""
    from relayforge.jobs import HandlerRegistry

    try:
        HandlerRegistry(settings.worker.handlers)
    except ValueError as exc:
        return str(exc)
    return None


def _doctor_handlers(settings: Settings) -> bool:
    error = _handlers_error(settings)
    print(f"handlers: FAILED: {error}" if error else
          f"handlers: {settings.worker.handlers or 'default handler only'}")
    return error is None


async def _doctor_database(settings: Settings) -> bool:
    from relayforge.db.migrate import (
        MigrationDrift,
        available,
        finishing,
        status,
        unbuilt_partition_indexes,
    )

    try:
        conn = await asyncpg.connect(settings.database.url, timeout=10, **ONE_OFF)
    except Exception as exc:  # any failure to connect (a malformed URL included) is the answer
        print(f"database: FAILED: cannot connect: {one_line(exc)}")
        return False
    try:
        pending, unknown = await status(conn)
        unbuilt = await unbuilt_partition_indexes(conn)
    except MigrationDrift as exc:
        print(f"database: FAILED: {exc}")
        return False
    finally:
        await conn.close()
    if unknown:
        print("database: FAILED: applied migrations this version does not know "
              f"({', '.join(unknown)}): it is older than the database")
        return False
    waiting = finishing(pending)
    notes = [f"{len(pending) - len(waiting)} pending: serve or relayforge migrate applies them"
             ] if len(pending) > len(waiting) else []
    notes += [f"{len(waiting)} finish the upgrade: relayforge migrate --finish applies them once "
              "every process runs this release"] if waiting else []
    notes += [f"{unbuilt} partition index(es) still to build: relayforge migrate builds them"
              ] if unbuilt else []
    print(f"database: reachable; migrations {len(available()) - len(pending)}/{len(available())} "
          f"applied" + (f" ({'; '.join(notes)})" if notes else ""))
    return True


async def _doctor_broker(settings: Settings) -> bool:
    import aio_pika

    try:
        connection = await aio_pika.connect(settings.amqp.url, timeout=10)
    except Exception as exc:  # any failure to connect is the answer
        print(f"broker: FAILED: cannot connect to RabbitMQ: {exc!r}")
        return False
    await connection.close()
    print("broker: RabbitMQ reachable")
    return True


async def _with_stores(url: str, work: Callable[[Stores], Awaitable[T]]) -> T:
    pool = await asyncpg.create_pool(url, min_size=1, max_size=2, **ONE_OFF)
    try:
        return await work(Stores(pool))
    finally:
        await pool.close()


def _act(url: str, action: Callable[[Stores], Awaitable[T]], dry_run: bool = False) -> T:
    """Run an operator action (relayforge/actions.py) as the CLI actor; a refusal is one line
    and exit 1. A dry run does all of it in a transaction that is rolled back: what it would
    do, exactly, and nothing done (its audit record included)."""
    from relayforge.errors import RelayforgeError

    async def rolled_back() -> T:
        conn = await asyncpg.connect(url, **ONE_OFF)
        try:
            transaction = conn.transaction()
            await transaction.start()
            try:
                return await action(Stores(conn))
            finally:
                await transaction.rollback()
        finally:
            await conn.close()

    try:
        return asyncio.run(rolled_back() if dry_run else _with_stores(url, action))
    except RelayforgeError as exc:
        print(f"relayforge: {exc.message}", file=sys.stderr)
        raise SystemExit(1) from None


def cmd_keys_create(args: argparse.Namespace) -> None:
    settings = _settings()
    url, _ = _database_url(settings)
    created = _act(url, lambda stores: actions.create_key(stores, CLI, Role(args.role),
                                                          args.name))
    print(created.key)
    print(f"key id {created.id}, role {args.role}: shown once, store it now", file=sys.stderr)


def cmd_secrets_set(args: argparse.Namespace) -> None:
    settings = _settings()
    url, _ = _database_url(settings)
    from relayforge.security.secrets import SecretCipher

    secret = args.secret if args.secret is not None else sys.stdin.readline().rstrip("\n")
    if not secret:
        print("relayforge: the secret is empty", file=sys.stderr)
        raise SystemExit(2)
    cipher = SecretCipher(master_key(settings))
    stored = _act(url, lambda stores: actions.set_secret(
        stores, cipher, settings, CLI, tenant_id=args.tenant, provider=args.provider,
        secret=secret, previous_expires_in_seconds=args.previous_expires_in))
    print(f"secret {stored.id} (fingerprint {stored.fingerprint}) is now current")


def cmd_bench(args: argparse.Namespace) -> None:
    from relayforge.benchmark import main as kernels_table

    print(f"kernels in use: {kernels.IMPLEMENTATION}")
    kernels_table()


class _Parser(argparse.ArgumentParser):
    """Usage errors are one line and exit 2, never a traceback."""

    def error(self, message: str) -> NoReturn:
        command = self.prog.removeprefix("relayforge").strip()
        self.exit(2, f"relayforge: {command + ': ' if command else ''}{message}\n")


def _bounded(low: int, high: int) -> Callable[[str], int]:
    """An integer argument within [low, high], as the admin API bounds the same field."""
    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {value[:32]!r}") from None
        if not low <= number <= high:
            raise argparse.ArgumentTypeError(f"{number} is not between {low} and {high}")
        return number
    return parse


def _uuid(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a UUID: {value[:64]!r}") from None


def cmd_keys_list(args: argparse.Namespace) -> None:
    url, _ = _database_url(_settings())
    for key in asyncio.run(_with_stores(url, lambda stores: stores.api_keys.list())):
        state = f"revoked {key.revoked_at:%Y-%m-%d}" if key.revoked_at else "active"
        print(f"{key.id}  {key.role:<8}  {state:<18}  {key.name}")


def cmd_keys_revoke(args: argparse.Namespace) -> None:
    url, _ = _database_url(_settings())
    _act(url, lambda stores: actions.revoke_key(stores, CLI, args.id))
    print(f"key {args.id} revoked")


def cmd_jobs_reprocess(args: argparse.Namespace) -> None:
    """As the admin API: one dead-lettered job by id, or the ones matching every filter."""
    settings = _settings()
    _reprocess(settings, args, "job(s)",
               one=lambda stores: actions.reprocess_job(stores, settings, CLI, args.id),
               many=lambda stores: actions.reprocess_jobs(
                   stores, settings, CLI, tenant_id=args.tenant,
                   source=args.source.lower() if args.source else None,
                   event_type=args.event_type, limit=args.limit))


def cmd_deliveries_reprocess(args: argparse.Namespace) -> None:
    """As the admin API: one dead-lettered delivery by id, or the ones matching every filter."""
    settings = _settings()
    _reprocess(settings, args, "delivery(ies)",
               one=lambda stores: actions.reprocess_delivery(stores, settings, CLI, args.id),
               many=lambda stores: actions.reprocess_deliveries(
                   stores, settings, CLI, tenant_id=args.tenant,
                   destination_id=args.destination, limit=args.limit))


def _reprocess(settings: Settings, args: argparse.Namespace, what: str,
               one: Callable[[Stores], Awaitable[None]],
               many: Callable[[Stores], Awaitable[list[uuid.UUID]]]) -> None:
    """`one` when --id is given, else `many`; --dry-run rolls it back. Prints the ids."""
    url, _ = _database_url(settings)
    if args.id:
        _act(url, one, args.dry_run)
        ids = [args.id]
    else:
        ids = _act(url, many, args.dry_run)
    verb = ("would be scheduled again (dry run: nothing done)" if args.dry_run
            else "scheduled again")
    print(f"{len(ids)} {what} {verb}" + "".join(f"\n{i}" for i in ids))


def cmd_jobs_list(args: argparse.Namespace) -> None:
    url, _ = _database_url(_settings())
    jobs = asyncio.run(_with_stores(url, lambda stores: stores.jobs.list(
        limit=args.limit, status=JobStatus(args.status) if args.status else None,
        tenant_id=args.tenant,
        source=args.source.lower() if args.source else None)))
    for job in jobs:
        print(f"{job.id}  {job.status:<13}  {job.attempts}/{job.max_attempts}  "
              f"{job.updated_at:%Y-%m-%d %H:%M:%S}  {job.source}  {job.event_type}")


def cmd_jobs_show(args: argparse.Namespace) -> None:
    import msgspec

    url, _ = _database_url(_settings())
    job = asyncio.run(_with_stores(url, lambda stores: stores.jobs.get(job_id=args.id)))
    if job is None:
        print("relayforge: no such job", file=sys.stderr)
        raise SystemExit(1)
    print(msgspec.json.format(msgspec.json.encode(job)).decode())


def cmd_secrets_list(args: argparse.Namespace) -> None:
    url, _ = _database_url(_settings())
    for secret in asyncio.run(_with_stores(url, lambda stores: stores.secrets.list(
            tenant_id=args.tenant, provider=args.provider.lower()))):
        until = f"until {secret.expires_at:%Y-%m-%d %H:%M}" if secret.expires_at else "current"
        print(f"{secret.id}  {secret.fingerprint}  {secret.created_at:%Y-%m-%d %H:%M}  {until}")


def cmd_secrets_retire(args: argparse.Namespace) -> None:
    url, _ = _database_url(_settings())
    _act(url, lambda stores: actions.retire_secret(
        stores, CLI, tenant_id=args.tenant, provider=args.provider.lower(), secret_id=args.id))
    print(f"secret {args.id} retired")


def cmd_retention_run(args: argparse.Namespace) -> None:
    """Prune now what RETENTION__* allows (the relay does it hourly): drop expired partitions,
    delete expired rows of the tables not partitioned. --dry-run prints what would go (the
    deletes in a transaction rolled back) and drops nothing."""
    from relayforge import retention

    settings = _settings()
    url, _ = _database_url(settings)
    report = asyncio.run(retention.prune(settings, settings.database.listen_url or url,
                                         dry_run=args.dry_run))
    if report is None:
        print("relayforge: another process is pruning; nothing done", file=sys.stderr)
        raise SystemExit(1)
    r = settings.retention
    print(f"retention (inbox {r.inbox_days} d, jobs {r.jobs_days} d, outbox {r.outbox_days} d, "
          f"audit {r.audit_days} d):")
    verb = "would drop" if args.dry_run else "dropped"
    for p in report.dropped:
        print(f"  {verb} partition {p.name} ({p.parent}, rows before "
              f"{p.ends_at:%Y-%m-%d %H:%M} UTC)")
    for p in report.kept:
        print(f"  kept partition {p.name}: a job still reads its bodies")
    verb = "would delete" if args.dry_run else "deleted"
    for table, rows in report.deleted.items():
        print(f"  {verb} {rows:,} rows of {table}")


def main(argv: list[str] | None = None) -> None:
    from relayforge import __version__

    defaults = argparse.ArgumentDefaultsHelpFormatter
    parser = _Parser(prog="relayforge", description=__doc__,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"relayforge {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    serve = sub.add_parser("serve", help="run the server", formatter_class=defaults)
    serve.add_argument("--mode", choices=list(MODES), default="all",
                       help="ingest, relay, consume, or all three in one process")
    serve.set_defaults(func=cmd_serve)

    migrate = sub.add_parser("migrate", help="apply pending migrations")
    migrate.add_argument("--finish", action="store_true",
                         help="also those that finish an upgrade: once every process runs this "
                              "release")
    migrate.set_defaults(func=cmd_migrate)
    sub.add_parser("doctor", help="check kernels, handlers, database and broker").set_defaults(
        func=cmd_doctor)
    sub.add_parser("bench", help="kernel ops/s and ratios").set_defaults(func=cmd_bench)

    keys = sub.add_parser("keys", help="admin API keys").add_subparsers(
        dest="keys", required=True, parser_class=_Parser)
    create = keys.add_parser("create", help="create a key and print it once",
                             formatter_class=defaults)
    create.add_argument("--role", choices=[r.value for r in Role], required=True)
    create.add_argument("--name", default="cli", help="a label for people")
    create.set_defaults(func=cmd_keys_create)
    keys.add_parser("list", help="list keys (never the keys themselves)").set_defaults(
        func=cmd_keys_list)
    revoke = keys.add_parser("revoke", help="revoke a key at once")
    revoke.add_argument("--id", type=_uuid, required=True, help="the key's id")
    revoke.set_defaults(func=cmd_keys_revoke)

    secrets = sub.add_parser("secrets", help="tenant provider secrets").add_subparsers(
        dest="secrets", required=True, parser_class=_Parser)
    set_ = secrets.add_parser("set", help="make a secret current (rotation with overlap)",
                              formatter_class=defaults)
    set_.add_argument("--tenant", type=_uuid, required=True, help="tenant UUID")
    set_.add_argument("--provider", choices=SOURCES, required=True)
    set_.add_argument("--secret", help="the secret (read from stdin when absent)")
    set_.add_argument("--previous-expires-in", type=_bounded(0, actions.MAX_OVERLAP_SECONDS),
                      default=86400,
                      help="seconds the previous secrets stay valid")
    set_.set_defaults(func=cmd_secrets_set)
    listed = secrets.add_parser("list", help="a tenant's stored secrets (fingerprints only)")
    listed.add_argument("--tenant", type=_uuid, required=True)
    listed.add_argument("--provider", required=True, choices=SOURCES)
    listed.set_defaults(func=cmd_secrets_list)
    retire = secrets.add_parser("retire", help="retire one stored secret at once")
    retire.add_argument("--tenant", type=_uuid, required=True)
    retire.add_argument("--provider", required=True, choices=SOURCES)
    retire.add_argument("--id", type=_uuid, required=True)
    retire.set_defaults(func=cmd_secrets_retire)

    jobs = sub.add_parser("jobs", help="jobs").add_subparsers(dest="jobs", required=True,
                                                                parser_class=_Parser)
    again = jobs.add_parser("reprocess", help="run dead-lettered jobs again (one, or by filter)",
                            formatter_class=defaults)
    again.add_argument("--id", type=_uuid, help="one job")
    again.add_argument("--tenant", type=_uuid, help="only this tenant's jobs")
    again.add_argument("--source", help="only this source's jobs")
    again.add_argument("--event-type", help="only jobs of this event type")
    again.add_argument("--limit", type=_bounded(1, actions.MAX_BULK), default=actions.DEFAULT_BULK,
                       help="jobs at most (bulk)")
    again.add_argument("--dry-run", action="store_true",
                       help="say which would be scheduled, do nothing")
    again.set_defaults(func=cmd_jobs_reprocess)
    listing = jobs.add_parser("list", help="jobs, newest first", formatter_class=defaults)
    listing.add_argument("--status", choices=[s.value for s in JobStatus])
    listing.add_argument("--tenant", type=_uuid)
    listing.add_argument("--source")
    listing.add_argument("--limit", type=_bounded(1, 500), default=50)
    listing.set_defaults(func=cmd_jobs_list)
    show = jobs.add_parser("show", help="one job, as the admin API shows it")
    show.add_argument("--id", type=_uuid, required=True)
    show.set_defaults(func=cmd_jobs_show)

    deliveries = sub.add_parser("deliveries", help="deliveries").add_subparsers(
        dest="deliveries", required=True, parser_class=_Parser)
    resend = deliveries.add_parser("reprocess", formatter_class=defaults,
                                   help="send dead-lettered deliveries again (one, or by filter)")
    resend.add_argument("--id", type=_uuid, help="one delivery")
    resend.add_argument("--tenant", type=_uuid, help="only this tenant's deliveries")
    resend.add_argument("--destination", type=_uuid, help="only this destination's deliveries")
    resend.add_argument("--limit", type=_bounded(1, actions.MAX_BULK),
                        default=actions.DEFAULT_BULK, help="deliveries at most (bulk)")
    resend.add_argument("--dry-run", action="store_true",
                        help="say which would be sent again, do nothing")
    resend.set_defaults(func=cmd_deliveries_reprocess)

    retention = sub.add_parser("retention", help="retention (RETENTION__*_DAYS)").add_subparsers(
        dest="retention", required=True, parser_class=_Parser)
    run = retention.add_parser("run", help="delete now what retention allows")
    run.add_argument("--dry-run", action="store_true",
                     help="count what would be deleted, delete nothing (rolled back)")
    run.set_defaults(func=cmd_retention_run)

    args = parser.parse_args(argv)
    args.func(args)
