"""Load the ingest path with locust and print throughput, latency percentiles and ratios.

    .venv/bin/python bench/run_load.py                      # batch vs single, 20 s each
    .venv/bin/python bench/run_load.py --seconds 30 --users 200 --modes batch
    .venv/bin/python bench/run_load.py --server-mode all --modes batch   # + relay and consumer
                                                                         # on RabbitMQ: jobs/s

Starts `relayforge serve --mode ingest` on a fresh database of the PostgreSQL at
RELAYFORGE_TEST_POSTGRES_URL (default: this machine's), with limits raised so the run measures
the server, not the limiter; only loopback traffic, bounded in time.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests import support  # noqa: E402


def run(mode: str, seconds: int, users: int, workers: int, server_mode: str) -> dict[str, float]:
    name, url = asyncio.run(support.create_database(prefix="rf_bench"))
    port = support.free_port()
    env = support.base_env() | {
        "DATABASE__URL": url, "DATABASE__MIGRATE_ON_START": "true", "SERVER__PORT": str(port),
        "SERVER__WORKERS": str(workers), "INGEST__MODE": mode,
        "WEBHOOKS__GENERIC_HMAC_SECRET": "bench-generic-secret",
        "HARDENING__INGRESS_RATE_LIMIT_PER_SECOND": "1000000",
        "HARDENING__INGRESS_BURST": "1000000",
        "HARDENING__TENANT_RATE_LIMIT_PER_SECOND": "1000000",
        "HARDENING__TENANT_RATE_LIMIT_BURST": "1000000", "DATABASE__MAX_CONNECTIONS": "20",
        "LOG__LEVEL": "WARNING",
    }
    prefix = f"rf.bench.{name}"
    if server_mode == "all":
        env |= {"AMQP__URL": support.amqp_url(), "AMQP__EXCHANGE": f"{prefix}.events",
                "AMQP__QUEUE": f"{prefix}.jobs", "AMQP__DLX": f"{prefix}.dlx",
                "AMQP__DLQ": f"{prefix}.dlq", "WORKER__CONCURRENCY": "64",
                "WORKER__PREFETCH": "128"}
    log = Path(tempfile.gettempdir()) / f"relayforge-bench-{mode}.log"
    server = support.Server(f"http://127.0.0.1:{port}", url, env, server_mode, log)
    server.start()
    started = time.monotonic()
    out = Path(tempfile.mkdtemp())
    try:
        subprocess.run([
            sys.executable, "-m", "locust", "-f", str(ROOT / "bench" / "locustfile.py"),
            "--headless",
            "-u", str(users), "-r", str(users), "-t", f"{seconds}s", "--host", server.url,
            "--csv", str(out / "run"), "--only-summary", "--stop-timeout", "5",
        ], check=False, capture_output=True, cwd=ROOT, timeout=seconds + 120)
        with open(out / "run_stats.csv") as f:
            row = next(r for r in csv.DictReader(f) if r["Name"] == "Aggregated")
        stats = {
            "rps": float(row["Requests/s"]), "p50": float(row["50%"]), "p95": float(row["95%"]),
            "p99": float(row["99%"]), "requests": float(row["Request Count"]),
            "failures": float(row["Failure Count"]),
        }
        stats["rows"] = asyncio.run(_count(url))
        if server_mode == "all":
            jobs = asyncio.run(_drain(url))
            stats["jobs"] = jobs
            stats["jobs_per_s"] = jobs / (time.monotonic() - started)
        return stats
    finally:
        server.stop()
        asyncio.run(support.drop_database(name))


async def _drain(url: str, timeout: float = 300) -> float:
    """Wait until every job is terminal; return how many succeeded."""
    import asyncpg

    conn = await asyncpg.connect(url)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        open_jobs = await conn.fetchval(
            "SELECT count(*) FROM jobs WHERE status NOT IN ('succeeded', 'dead_lettered')")
        if open_jobs == 0:
            break
        await asyncio.sleep(0.2)
    done = await conn.fetchval("SELECT count(*) FROM jobs WHERE status = 'succeeded'")
    await conn.close()
    return float(done)


async def _count(url: str) -> float:
    import asyncpg

    conn = await asyncpg.connect(url)
    n = await conn.fetchval("SELECT count(*) FROM webhook_inbox")
    await conn.close()
    return float(n)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--modes", default="batch,single")
    parser.add_argument("--server-mode", choices=("ingest", "all"), default="ingest")
    args = parser.parse_args()
    results = {}
    print(f"{args.server_mode} load: {args.users} users, {args.seconds}s, "
          f"{args.workers} worker(s), locust on the same 2-core machine")
    print(f"{'mode':<8}{'req/s':>10}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'requests':>10}"
          f"{'failed':>8}{'inbox rows':>12}")
    for mode in args.modes.split(","):
        s = results[mode] = run(mode, args.seconds, args.users, args.workers, args.server_mode)
        print(f"{mode:<8}{s['rps']:>10.1f}{s['p50']:>9.0f}{s['p95']:>9.0f}{s['p99']:>9.0f}"
              f"{s['requests']:>10.0f}{s['failures']:>8.0f}{s['rows']:>12.0f}")
        if "jobs" in s:
            print(f"         {s['jobs']:.0f} jobs succeeded, {s['jobs_per_s']:.0f} jobs/s from the "
                  "first request until the last job finished")
        time.sleep(1)
    if "batch" in results and "single" in results:
        b, s = results["batch"], results["single"]
        print(f"batch/single: throughput {b['rps'] / s['rps']:.2f}x, "
              f"p99 {s['p99'] / max(b['p99'], 1):.2f}x lower")


if __name__ == "__main__":
    main()
