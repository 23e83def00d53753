"""Load the ingest path with locust and print throughput, latency percentiles and ratios.

    .venv/bin/python bench/run_load.py                      # batch vs single, 20 s each
    .venv/bin/python bench/run_load.py --seconds 30 --users 200 --modes batch

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


def run(mode: str, seconds: int, users: int, workers: int) -> dict[str, float]:
    name, url = asyncio.run(support.create_database(prefix="rf_bench"))
    port = support.free_port()
    env = support.base_env() | {
        "DATABASE__URL": url, "DATABASE__MIGRATE_ON_START": "true", "SERVER__PORT": str(port),
        "SERVER__WORKERS": str(workers), "INGEST__MODE": mode,
        "WEBHOOKS__GENERIC_HMAC_SECRET": "bench-generic-secret",
        "HARDENING__INGRESS_RATE_LIMIT_PER_SECOND": "1000000", "HARDENING__INGRESS_BURST": "1000000",
        "HARDENING__TENANT_RATE_LIMIT_PER_SECOND": "1000000",
        "HARDENING__TENANT_RATE_LIMIT_BURST": "1000000", "DATABASE__MAX_CONNECTIONS": "20",
        "LOG__LEVEL": "WARNING",
    }
    log = Path(tempfile.gettempdir()) / f"relayforge-bench-{mode}.log"
    server = support.Server(f"http://127.0.0.1:{port}", url, env, "ingest", log)
    server.start()
    out = Path(tempfile.mkdtemp())
    try:
        subprocess.run([
            sys.executable, "-m", "locust", "-f", str(ROOT / "bench" / "locustfile.py"), "--headless",
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
        return stats
    finally:
        server.stop()
        asyncio.run(support.drop_database(name))


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
    args = parser.parse_args()
    results = {}
    print(f"ingest load: {args.users} users, {args.seconds}s, {args.workers} worker(s), "
          f"locust on the same 2-core machine")
    print(f"{'mode':<8}{'req/s':>10}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'requests':>10}"
          f"{'failed':>8}{'inbox rows':>12}")
    for mode in args.modes.split(","):
        s = results[mode] = run(mode, args.seconds, args.users, args.workers)
        print(f"{mode:<8}{s['rps']:>10.1f}{s['p50']:>9.0f}{s['p95']:>9.0f}{s['p99']:>9.0f}"
              f"{s['requests']:>10.0f}{s['failures']:>8.0f}{s['rows']:>12.0f}")
        time.sleep(1)
    if "batch" in results and "single" in results:
        b, s = results["batch"], results["single"]
        print(f"batch/single: throughput {b['rps'] / s['rps']:.2f}x, "
              f"p99 {s['p99'] / max(b['p99'], 1):.2f}x lower")


if __name__ == "__main__":
    main()
