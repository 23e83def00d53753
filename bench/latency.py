"""Ingest → succeeded latency at fixed offered rates, mode `all` on RabbitMQ.

    .venv/bin/python bench/latency.py                        # 50, 300, 1000 webhooks/s
    .venv/bin/python bench/latency.py --rates 1000 --seconds 20

Signed unique webhooks are offered at each rate over 32 keep-alive connections (wrk, each
connection paced); the figure is the percentiles of `updated_at - created_at` of the succeeded
jobs, both read from the database: from the request being recorded to the job's final update.
The baseline is the same server's bare HTTP round trip (`GET /healthz`) at the same rate, so
the ratio says how much of a second the pipeline adds. Chart: bench/out/latency.png.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
from pathlib import Path
from typing import Any

from common import (
    ROOT,
    CpuAccount,
    Servers,
    broker_topology,
    chart,
    database,
    next_run,
    per_unit,
    progress,
    statements,
    unique,
)
from ingest_wrk import BENCH, _ms, bodies

OUT = ROOT / "bench" / "out"
CONNECTIONS = 32


def offer(url: str, delay_ms: float, seconds: int, path: str = "") -> tuple[float, float]:
    """Requests at a pace of one per `delay_ms` per connection for `seconds`;
    returns (requests/s achieved, wrk's p50 in ms)."""
    env = os.environ | {"BENCH_BODIES": str(OUT / "bodies.txt"), "BENCH_RUN": next_run(),
                        "BENCH_DELAY_MS": str(max(1, round(delay_ms)))}
    args = ["wrk", "-t2", f"-c{CONNECTIONS}", f"-d{seconds}s", "--latency"]
    if not path:
        args += ["-s", str(BENCH / "wrk_webhooks.lua")]
    out = subprocess.run(args + [url + path], capture_output=True, text=True, env=env,
                         timeout=seconds + 60, check=True).stdout
    achieved = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    return achieved, _ms(re.search(r"\s50%\s+(\S+)", out).group(1))  # type: ignore[union-attr]


def calibrate(url: str, rate: int) -> float:
    """wrk waits `delay` after each response: a short run at the nominal delay shows how much
    the response time slows it, and the delay is shortened by that much."""
    delay = CONNECTIONS * 1000 / rate
    for _ in range(2):  # twice: the response time changes with the rate
        achieved, _ = offer(url, delay, 3)
        delay = max(1.0, delay * achieved / rate)
    return delay


async def db_now(database_url: str) -> object:
    import asyncpg

    conn = await asyncpg.connect(database_url)
    try:
        return await conn.fetchval("SELECT clock_timestamp()")
    finally:
        await conn.close()


async def percentiles(database_url: str, since: object, timeout: float = 120
                      ) -> dict[str, float]:
    """Of the jobs created since `since` (the measured window only), once all are done."""
    import asyncpg

    conn = await asyncpg.connect(database_url)
    try:
        for _ in range(int(timeout * 4)):
            if not await conn.fetchval(
                    "SELECT count(*) FROM jobs WHERE status NOT IN ('succeeded', 'dead_lettered')"):
                break
            await asyncio.sleep(0.25)
        row = await conn.fetchrow("""
            SELECT count(*) AS n,
                   percentile_cont(0.5) WITHIN GROUP (ORDER BY lat) * 1000 AS p50,
                   percentile_cont(0.99) WITHIN GROUP (ORDER BY lat) * 1000 AS p99
            FROM (SELECT extract(epoch FROM j.updated_at - j.created_at) AS lat
                  FROM jobs j
                  WHERE j.status = 'succeeded' AND j.created_at >= $1) l""", since)
        return {k: row[k] for k in ("n", "p50", "p99")}
    finally:
        await conn.close()


def draw(rows: list[tuple[int, dict[str, Any]]], path: Path) -> None:
    with chart(path, "Ingest → succeeded latency (2-core machine, all on one box)",
               "webhooks/s offered (mode all, RabbitMQ)", "request recorded → job succeeded, ms",
               log_y=True) as ax:
        rates = [r for r, _ in rows]
        ax.plot(rates, [s["p50"] for _, s in rows], marker="o", label="p50")
        ax.plot(rates, [s["p99"] for _, s in rows], marker="^", label="p99")
        ax.axhline(20, color="grey", linestyle=":",
                   label="targets at 1,000/s: p50 20 ms, p99 200 ms")
        ax.axhline(200, color="grey", linestyle=":")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", default="50,300,1000")
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--workers", type=int, default=1, help="SERVER__WORKERS of the server")
    args = parser.parse_args()
    OUT.mkdir(exist_ok=True)
    bodies(OUT / "bodies.txt")
    rates = [int(r) for r in args.rates.split(",")]
    prefix = unique("rf.bench.latency")
    rows = []
    with broker_topology(prefix) as names, database() as url, Servers(url, **names) as servers:
        server = servers.start("all", SERVER__WORKERS=str(args.workers))
        assert server.process is not None
        offer(server.url, CONNECTIONS * 1000 / 50, 3)  # warm up: connections, listener
        for i, rate in enumerate(rates):
            progress("offering rates", i, len(rates))
            _, probe_p50 = offer(server.url, CONNECTIONS * 1000 / rate, 5, "/healthz")
            delay = calibrate(server.url, rate)
            since = asyncio.run(db_now(url))
            ran = statements(server.url)
            with CpuAccount(server.process.pid) as cpu:  # until every job is done
                achieved, _ = offer(server.url, delay, args.seconds)
                stats = asyncio.run(percentiles(url, since))
            rows.append((rate, stats | {
                "probe_p50": probe_p50, "achieved": achieved,
                "cpu": cpu.per(int(stats["n"]), "job"),
                "statements": per_unit(ran, statements(server.url), int(stats["n"]))}))
        progress("offering rates", len(rates), len(rates))
    for rate, s in rows:
        print(f"{rate:>5}/s offered ({s['achieved']:,.0f}/s achieved): {s['n']:,.0f} jobs, "
              f"ingest→succeeded p50 {s['p50']:.1f} ms, "
              f"p99 {s['p99']:.1f} ms; bare round trip p50 {s['probe_p50']:.1f} ms "
              f"(targets at 1,000/s: p50 < 20, p99 < 200)")
        print(f"        {s['cpu']}")
        print(f"        {s['statements'].format(unit='job')}")
    draw(rows, OUT / "latency.png")
    print(f"chart: {OUT / 'latency.png'}")


if __name__ == "__main__":
    main()
