"""Fixtures: a migrated template database per run, a fresh database per server, real servers."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator

import asyncpg
import httpx
import pytest

from tests import support


@pytest.fixture(scope="session")
def template_db() -> Iterator[str]:
    """A database migrated by `relayforge migrate` (the real CLI), cloned for every server."""
    name, url = support.run_sync(support.create_database(prefix="rf_tpl"))
    env = support.base_env() | {"DATABASE__URL": url}
    out = subprocess.run([sys.executable, "-m", "relayforge", "migrate"], env=env,
                         capture_output=True, text=True, cwd=support.ROOT)
    assert out.returncode == 0, out.stderr
    yield name
    support.run_sync(support.drop_database(name))


@pytest.fixture(scope="session")
def fresh_database(template_db: str) -> Iterator[Callable[[], str]]:
    created: list[str] = []

    def make() -> str:
        name, url = support.run_sync(support.create_database(template_db))
        created.append(name)
        return url

    yield make
    for name in created:
        support.run_sync(support.drop_database(name))


class ServerFactory:
    """Starts real `relayforge serve` processes, each on its own database, and stops them all."""

    def __init__(self, fresh_database: Callable[[], str], tmp: pytest.TempPathFactory) -> None:
        self._fresh_database = fresh_database
        self._tmp = tmp
        self.servers: list[support.Server] = []

    def __call__(self, mode: str = "ingest", database_url: str | None = None,
                 **env: str) -> support.Server:
        port = support.free_port()
        db = database_url or self._fresh_database()
        full_env = support.base_env() | {
            "DATABASE__URL": db, "SERVER__PORT": str(port), "WORKER__ENABLE_TEST_FAULTS": "true",
        } | env
        log_path = self._tmp.mktemp("server") / f"{mode}-{port}.log"
        server = support.Server(f"http://127.0.0.1:{port}", db, full_env, mode, log_path)
        self.servers.append(server)
        server.start()
        return server

    def stop_all(self) -> None:
        for server in self.servers:
            server.stop()


@pytest.fixture
def start_server(fresh_database, tmp_path_factory) -> Iterator[ServerFactory]:
    """Servers for one test, stopped when it ends."""
    factory = ServerFactory(fresh_database, tmp_path_factory)
    yield factory
    factory.stop_all()


@pytest.fixture(scope="module")
def module_servers(fresh_database, tmp_path_factory) -> Iterator[ServerFactory]:
    """Servers shared by one module's tests, stopped when the module ends."""
    factory = ServerFactory(fresh_database, tmp_path_factory)
    yield factory
    factory.stop_all()


@pytest.fixture(scope="session")
def ingest_server(fresh_database, tmp_path_factory) -> Iterator[support.Server]:
    """The shared ingest-only server; tests isolate themselves with their own tenant ids."""
    factory = ServerFactory(fresh_database, tmp_path_factory)
    yield factory("ingest")
    factory.stop_all()


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30) as c:
        yield c


@pytest.fixture
async def db() -> AsyncIterator[Callable[[str], asyncpg.Connection]]:
    conns: list[asyncpg.Connection] = []

    async def connect(url: str) -> asyncpg.Connection:
        conn = await asyncpg.connect(url)
        conns.append(conn)
        return conn

    yield connect  # type: ignore[misc]
    for conn in conns:
        await conn.close()

