"""What the benchmarks share: a fresh database, servers with the limiter out of the way, unique
RabbitMQ names, a progress bar, and the one way each prints its figure next to its baseline.

Every benchmark sends traffic to loopback only and is bounded in count and time.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests import support  # noqa: E402
from tests.e2e.pipeline_support import delete_topology  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")

SECRET = "bench-generic-secret"
UNLIMITED = {
    "HARDENING__INGRESS_RATE_LIMIT_PER_SECOND": "1000000", "HARDENING__INGRESS_BURST": "1000000",
    "HARDENING__TENANT_RATE_LIMIT_PER_SECOND": "1000000",
    "HARDENING__TENANT_RATE_LIMIT_BURST": "1000000", "HARDENING__TENANT_DAILY_QUOTA": "0",
}


@contextmanager
def broker_topology(prefix: str) -> Iterator[dict[str, str]]:
    """AMQP__* settings naming a topology of this run's own under `prefix`. Its queues and
    exchanges are deleted on the way out: enter it before `Servers`, so that they are gone
    after the servers stopped (a live server would declare them again)."""
    try:
        yield {"AMQP__URL": support.amqp_url(), "AMQP__EXCHANGE": f"{prefix}.events",
               "AMQP__QUEUE": f"{prefix}.jobs", "AMQP__DLX": f"{prefix}.dlx",
               "AMQP__DLQ": f"{prefix}.dlq"}
    finally:
        asyncio.run(delete_topology(prefix))


# A deployment in its steady state holds a partition per day of history (RETENTION__*_DAYS):
# RELAYFORGE_BENCH_HISTORY_DAYS=N gives every benchmark's database N days of them, empty.
HISTORY_DAYS = int(os.environ.get("RELAYFORGE_BENCH_HISTORY_DAYS", "0"))


@contextmanager
def database() -> Iterator[str]:
    """A fresh, migrated database on the test PostgreSQL (with HISTORY_DAYS of partitions),
    dropped afterwards."""
    name, url = asyncio.run(support.create_database(prefix="rf_bench"))
    try:
        if HISTORY_DAYS:
            asyncio.run(_history(url, HISTORY_DAYS))
        yield url
    finally:
        asyncio.run(support.drop_database(name))


async def _history(url: str, days: int) -> None:
    import asyncpg

    from relayforge.db.migrate import migrate_url

    await migrate_url(url)
    conn = await asyncpg.connect(url)
    try:
        await conn.fetch(
            "SELECT relayforge_ensure_partitions(current_date - $1::int, current_date)", days)
    finally:
        await conn.close()


class Servers:
    """`relayforge serve` processes for one benchmark, stopped together."""

    def __init__(self, database_url: str, **env: str) -> None:
        self._env = support.base_env() | {
            "DATABASE__URL": database_url, "DATABASE__MIGRATE_ON_START": "true",
            "WEBHOOKS__GENERIC_HMAC_SECRET": SECRET, "DATABASE__MAX_CONNECTIONS": "20",
            "LOG__LEVEL": "WARNING",
        } | UNLIMITED | env
        self.database_url = database_url
        self.started: list[support.Server] = []

    def start(self, mode: str, **env: str) -> support.Server:
        port = support.free_port()
        log = Path(tempfile.gettempdir()) / f"relayforge-bench-{mode}-{port}.log"
        server = support.Server(f"http://127.0.0.1:{port}", self.database_url,
                                self._env | {"SERVER__PORT": str(port)} | env, mode, log)
        server.start(timeout=60)
        self.started.append(server)
        return server

    def __enter__(self) -> Servers:
        return self

    def __exit__(self, *exc: object) -> None:
        for server in self.started:
            server.stop()


def progress(label: str, done: float, total: float) -> None:
    width = 30
    filled = int(width * min(done / total, 1)) if total else width
    sys.stderr.write(f"\r{label:<28} [{'#' * filled}{'.' * (width - filled)}] "
                     f"{done:,.0f}/{total:,.0f}")
    if done >= total:
        sys.stderr.write("\n")
    sys.stderr.flush()


def report(figure: str, ours: float, baseline: float, baseline_name: str, unit: str,
           target: float | None = None) -> None:
    """The project's figure, the baseline measured in the same run, and their ratio."""
    ratio = ours / baseline if baseline else float("nan")
    print(f"{figure}: relayforge {ours:,.0f} {unit}, {baseline_name} {baseline:,.0f} {unit}, "
          f"ratio {ratio:.2f}" + (f" (target >= {target})" if target is not None else ""))


@contextmanager
def chart(path: Path, title: str, xlabel: str, ylabel: str, log_y: bool = False) -> Iterator[Any]:
    """A matplotlib axes to draw on; saved as a PNG (same size and style for every benchmark)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    yield ax
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if log_y:
        ax.set_yscale("log")
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


_runs = iter(range(1, 65536))


def next_run() -> str:
    """A number for each load run of this process: the wrk script keeps its tenants apart."""
    return str(next(_runs))


def unique(prefix: str) -> str:
    return f"{prefix}.{uuid.uuid4().hex[:8]}"


def now() -> float:
    return time.monotonic()


def process_tree(root: int) -> list[int]:
    pids, frontier = [root], [root]
    while frontier:
        pid = frontier.pop()
        try:
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:
            continue
        pids += map(int, children)
        frontier += map(int, children)
    return pids


def _cpu_seconds(pids: list[int]) -> dict[int, float]:
    """User + system CPU of each of these processes so far (not its reaped children's)."""
    seconds = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        seconds[pid] = (int(fields[11]) + int(fields[12])) / TICK
    return seconds


def _named(comm: str) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and (proc / "comm").read_text().strip() == comm:
                pids.append(int(proc.name))
        except OSError:
            continue
    return pids


def _machine_busy_seconds() -> float:
    """CPU seconds all cores spent busy (not idle, not waiting for I/O, not stolen)."""
    user, nice, system, _idle, _iowait, irq, softirq, *_ = map(
        int, Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:])
    return (user + nice + system + irq + softirq) / TICK


class CpuAccount:
    """Where the machine's cores went while the block ran: busy time in all, the server's
    process tree, PostgreSQL's processes, RabbitMQ's, and the rest (the load generator, the
    kernel's loopback networking, anything else). On a machine where they all share the
    cores, the figures follow the CPU each unit of work costs."""

    GROUPS = (("PostgreSQL", "postgres"), ("RabbitMQ", "beam.smp"))

    def __init__(self, server_pid: int) -> None:
        self._server_pid = server_pid
        self.spent: dict[str, float] = {}

    def _processes(self) -> dict[str, dict[int, float]]:
        return {"server": _cpu_seconds(process_tree(self._server_pid))} | {
            name: _cpu_seconds(_named(comm)) for name, comm in self.GROUPS}

    def __enter__(self) -> CpuAccount:
        self._busy, self._before = _machine_busy_seconds(), self._processes()
        return self

    def __exit__(self, *exc: object) -> None:
        self.spent = {"machine": _machine_busy_seconds() - self._busy}
        for name, processes in self._processes().items():
            before = self._before[name]
            # a process started meanwhile (a new database backend) counts from zero
            self.spent[name] = sum(seconds - before.get(pid, 0.0)
                                   for pid, seconds in processes.items())

    def per(self, count: int, unit: str) -> str:
        """µs per unit of work, e.g. per request answered."""
        us = {name: 1e6 * seconds / max(count, 1) for name, seconds in self.spent.items()}
        parts = [f"server {us['server']:.0f}"] + [
            f"{name} {us[name]:.0f}" for name, _ in self.GROUPS if us[name] >= 0.5]
        rest = us["machine"] - sum(v for name, v in us.items() if name != "machine")
        return (f"{us['machine']:.0f} µs of busy CPU per {unit} on the machine: "
                + ", ".join(parts) + f", load generator and the rest {rest:.0f}")


def statements(server_url: str) -> dict[str, float]:
    """The server's `db_statements_total` by named query: every round trip to PostgreSQL."""
    import httpx

    return support.statements(httpx.get(server_url + "/metrics", timeout=10).text)


def per_unit(before: dict[str, float], after: dict[str, float], n: int) -> str:
    """Statements per unit of work between two `statements()` readings, the largest first."""
    spent = {k: v - before.get(k, 0) for k, v in after.items()}
    n = max(n, 1)
    parts = [f"{k} {v / n:.3f}" for k, v in sorted(spent.items(), key=lambda x: -x[1])
             if v / n >= 0.001]
    return f"{sum(spent.values()) / n:.3f} statements per " + "{unit}" + f" ({', '.join(parts)})"


def echo_server(port: int) -> subprocess.Popen[bytes]:
    """The bare app (echo_app.py) on Granian, one worker: the ingest benchmark's ceiling and
    the delivery benchmarks' receiver."""
    import httpx

    process = subprocess.Popen(
        [sys.executable, "-m", "granian", "--interface", "asgi", "--loop", "uvloop",
         "--workers", "1", "--host", "127.0.0.1", "--port", str(port), "--no-log",
         "echo_app:app"], cwd=ROOT / "bench", stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            httpx.post(f"http://127.0.0.1:{port}/webhooks/generic", content=b"{}", timeout=1)
            return process
        except httpx.TransportError:
            time.sleep(0.1)
    process.kill()
    raise SystemExit("the echo app did not start")
