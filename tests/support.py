"""Test support: service URLs, databases cloned from a migrated template, real server processes,
and provider-style signing."""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import hmac
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx

ROOT = Path(__file__).resolve().parent.parent
GENERIC_SECRET = "test-generic-secret"
GITHUB_SECRET = "test-github-secret"
STRIPE_SECRET = "whsec_test_stripe_secret"
ADMIN_KEY, OPERATOR_KEY, VIEWER_KEY = "admin-test-key", "operator-test-key", "viewer-test-key"


def _docker_available() -> bool:
    return shutil.which("docker") is not None and subprocess.run(
        ["docker", "info"], capture_output=True).returncode == 0


def postgres_admin_url() -> str:
    """A server where tests may CREATE DATABASE: RELAYFORGE_TEST_POSTGRES_URL, else this machine's
    PostgreSQL; testcontainers only when Docker runs and no URL is set."""
    url = os.environ.get("RELAYFORGE_TEST_POSTGRES_URL")
    if url:
        return url
    if not _port_open("127.0.0.1", 5432) and _docker_available():  # pragma: no cover
        from testcontainers.postgres import PostgresContainer

        container = PostgresContainer("postgres:16").start()
        os.environ["RELAYFORGE_TEST_POSTGRES_URL"] = container.get_connection_url(driver=None)
        return os.environ["RELAYFORGE_TEST_POSTGRES_URL"]
    return "postgresql://postgres@127.0.0.1:5432/test"


def amqp_url() -> str:
    url = os.environ.get("RELAYFORGE_TEST_AMQP_URL")
    if url:
        return url
    if not _port_open("127.0.0.1", 5672) and _docker_available():  # pragma: no cover
        from testcontainers.rabbitmq import RabbitMqContainer

        container = RabbitMqContainer("rabbitmq:3.13").start()
        port = container.get_exposed_port(5672)
        os.environ["RELAYFORGE_TEST_AMQP_URL"] = f"amqp://guest:guest@127.0.0.1:{port}/"
        return os.environ["RELAYFORGE_TEST_AMQP_URL"]
    return "amqp://guest:guest@127.0.0.1:5672/"


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


def _port_open(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k.split("__")[0] not in ("SERVER", "DATABASE", "AMQP", "WEBHOOKS", "HARDENING",
                                       "WORKER", "RELAY", "INGEST", "ADMIN", "TENANT", "LOG")}
    env.update({
        "WEBHOOKS__GENERIC_HMAC_SECRET": GENERIC_SECRET,
        "WEBHOOKS__GITHUB_SECRET": GITHUB_SECRET,
        "WEBHOOKS__STRIPE_ENDPOINT_SECRET": STRIPE_SECRET,
        "ADMIN__FALLBACK_API_KEYS_JSON": (
            f'[{{"key":"{ADMIN_KEY}","role":"admin"}},{{"key":"{OPERATOR_KEY}","role":"operator"}},'
            f'{{"key":"{VIEWER_KEY}","role":"viewer"}}]'
        ),
        # Tests send refusals by the hundred from one address: the unverified budget's own
        # tests set it back to realistic values.
        "HARDENING__UNVERIFIED_RATE_LIMIT_PER_SECOND": "100000",
        "HARDENING__UNVERIFIED_BURST": "100000",
        "DATABASE__MIGRATE_ON_START": "false",
        "DATABASE__MAX_CONNECTIONS": "5",
        "LOG__LEVEL": "WARNING",
        "PYTHONUNBUFFERED": "1",
    })
    if os.environ.get("RELAYFORGE_TEST_QUEUE_TYPE"):  # the suite on classic queues (CI's twins)
        env["AMQP__QUEUE_TYPE"] = os.environ["RELAYFORGE_TEST_QUEUE_TYPE"]
    return env


def behind_pooler(env: dict[str, str]) -> dict[str, str]:
    """With RELAYFORGE_TEST_PGBOUNCER_URL (a PgBouncer in transaction mode in front of the test
    PostgreSQL), a server's database connections go through it, as a deployment behind one
    runs: DATABASE__STATEMENT_CACHE=false, LISTEN and migrations on the direct URL. A server
    given a URL of another PostgreSQL (or none) is left as it is."""
    pooler = os.environ.get("RELAYFORGE_TEST_PGBOUNCER_URL")
    direct = env.get("DATABASE__URL", "")
    if not pooler or "DATABASE__LISTEN_URL" in env or not direct \
            or urlsplit(direct).netloc != urlsplit(postgres_admin_url()).netloc:
        return env
    through = urlunsplit(urlsplit(direct)._replace(netloc=urlsplit(pooler).netloc))
    return env | {"DATABASE__URL": through, "DATABASE__LISTEN_URL": direct,
                  "DATABASE__STATEMENT_CACHE": "false"}


@dataclass
class Server:
    url: str
    database_url: str
    env: dict[str, str]
    mode: str
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    extra: dict[str, str] = field(default_factory=dict)

    def start(self, timeout: float = 30.0) -> None:
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "relayforge", "serve", "--mode", self.mode],
            env=behind_pooler(self.env), stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {self.log_path.read_text()[-3000:]}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"server did not start: {self.log_path.read_text()[-3000:]}")

    def stop(self, sig: int = 15, timeout: float = 20.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, sig)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, 9)
            self.process.wait()

    def kill(self) -> None:
        self.stop(sig=9)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


async def eventually(check, timeout: float = 15.0, interval: float = 0.05):  # type: ignore[no-untyped-def]
    """Poll `check()` (sync or async) until it returns something truthy, and return that;
    AssertionError after `timeout`. For what the server does in its own time (a NOTIFY
    clearing a cache, a log line written), instead of a fixed sleep."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {getattr(check, '__name__', check)}")
        await asyncio.sleep(interval)


def sign_generic(body: bytes, secret: str = GENERIC_SECRET) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def sign_github(body: bytes, secret: str = GITHUB_SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def sign_stripe(body: bytes, secret: str = STRIPE_SECRET, timestamp: int | None = None) -> str:
    """Stripe-Signature as the `stripe` package's own signing code computes it (that code takes
    text, so a body that is not UTF-8 is signed the same way over its bytes)."""
    import stripe

    t = int(time.time()) if timestamp is None else timestamp
    try:
        signature = stripe.WebhookSignature._compute_signature(f"{t}.{body.decode()}", secret)
    except UnicodeDecodeError:
        signature = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={signature}"


def generic_body(**extra: object) -> bytes:
    """A unique generic body (the same body twice is one event)."""
    import orjson

    return orjson.dumps({"event": "order.created", "data": {"n": uuid.uuid4().hex}, **extra})


async def post_generic(client: httpx.AsyncClient, server: Server, body: bytes, tenant: str | None,
                       **headers: str) -> httpx.Response:
    h = {"X-Signature": sign_generic(body), "Content-Type": "application/json", **headers}
    if tenant is not None:
        h["X-Tenant-Id"] = tenant
    return await client.post(f"{server.url}/webhooks/generic", content=body, headers=h)


def stripe_event(event_id: str | None = None, **extra: object) -> bytes:
    import orjson

    return orjson.dumps({
        "id": event_id or f"evt_{uuid.uuid4().hex}", "type": "invoice.paid", "created": 1700000000,
        "data": {"object": {"id": "in_1", "amount_paid": 4200}}, **extra,
    })


def new_tenant() -> str:
    return str(uuid.uuid4())


def run_sync(coro):  # type: ignore[no-untyped-def]
    """Run a coroutine to completion from sync code, even inside a running event loop."""
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


async def create_database(template: str | None = None, prefix: str = "rf") -> tuple[str, str]:
    """A new database (a clone of `template` when given) on the test server: (name, url)."""
    import asyncpg

    admin = postgres_admin_url()
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(admin)
    try:
        clause = f' TEMPLATE "{template}"' if template else ""
        await conn.execute(f'CREATE DATABASE "{name}"{clause}')
    finally:
        await conn.close()
    return name, with_database(admin, name)


async def drop_database(name: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(postgres_admin_url())
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def read_response(
    reader: asyncio.StreamReader,
) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response framed by Content-Length, from a raw connection: (status,
    headers with lower-case names, body)."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    lines = head.decode("latin-1").split("\r\n")
    headers = {name.strip().lower(): value.strip()
               for name, _, value in (line.partition(":") for line in lines[1:] if line)}
    body = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), 10)
    return int(lines[0].split()[1]), headers, body


class LateProxy:
    """A TCP proxy to `target` on a port of its own that starts listening only after
    `after_seconds`: a service that is not up yet when its clients start."""

    def __init__(self, target: tuple[str, int], after_seconds: float) -> None:
        import threading

        self.port = free_port()
        self._target = target
        self._after = after_seconds
        self._stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def close(self) -> None:
        self._stop.set()

    def _serve(self) -> None:
        import socket
        import threading

        if self._stop.wait(self._after):
            return
        with socket.create_server(("127.0.0.1", self.port)) as listener:
            listener.settimeout(0.2)
            while not self._stop.is_set():
                try:
                    client, _ = listener.accept()
                except TimeoutError:
                    continue
                upstream = socket.create_connection(self._target)
                for a, b in ((client, upstream), (upstream, client)):
                    threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for end in (a, b):
                try:
                    end.shutdown(2)  # SHUT_RDWR
                except OSError:
                    pass


def statements(metrics: str) -> dict[str, float]:
    """`db_statements_total` from a /metrics page: statements run, by query name."""
    counts: dict[str, float] = {}
    for line in metrics.splitlines():
        if line.startswith("db_statements_total{"):
            name = line.split('query="', 1)[1].split('"', 1)[0]
            counts[name] = counts.get(name, 0) + float(line.rsplit(" ", 1)[1])
    return counts


def uuid7_at(moment: datetime.datetime) -> uuid.UUID:
    """A version-7 UUID as Relayforge makes them, for another moment than now (rows of days
    past, for retention)."""
    raw = bytearray(int(moment.timestamp() * 1000).to_bytes(6, "big") + os.urandom(10))
    raw[6] = 0x70 | raw[6] & 0x0F
    raw[8] = 0x80 | raw[8] & 0x3F
    return uuid.UUID(bytes=bytes(raw))
