"""Durable ingest under wrk, next to a bare BlackSheep + Granian app in the same run.

    .venv/bin/python bench/ingest_wrk.py                     # 15 s at 64 connections + a sweep
    .venv/bin/python bench/ingest_wrk.py --seconds 10 --no-sweep

Both servers get the same requests: signed ~1 KiB generic webhooks, each from a new tenant (so
each makes a new job), 2 wrk threads, one Granian worker. The figure is relayforge's req/s (every
request recorded: inbox + job + outbox in PostgreSQL) over the bare app's (reads the body,
answers 202), with the non-2xx count, latency percentiles, the ingest worker's peak RSS and
the statements it ran on PostgreSQL per request (its `db_statements_total`).
For each run it also says where the machine's CPU went per request (the server, PostgreSQL, the
rest): on a machine where the load generator and the database share the cores, that is what the
ratio follows. The sweep over connection counts draws latency against throughput for both
(bench/out/ingest.png).
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import os
import re
import shutil
import subprocess
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

from common import (
    ROOT,
    SECRET,
    CpuAccount,
    Servers,
    chart,
    database,
    echo_server,
    next_run,
    per_unit,
    process_tree,
    progress,
    report,
    statements,
)

from tests import support

OUT = ROOT / "bench" / "out"
BENCH = ROOT / "bench"


@dataclass
class WrkResult:
    rps: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    requests: int


def bodies(path: Path, n: int = 200) -> None:
    lines = []
    filler = "x" * 900
    for i in range(n):
        body = (f'{{"event":"bench.ingest","data":{{"id":"{uuid.uuid4().hex}","n":{i},'
                f'"pad":"{filler}"}}}}')
        sig = hmac.new(SECRET.encode(), body.encode(), hashlib.sha256).hexdigest()
        lines.append(f"{sig} {body}")
    path.write_text("\n".join(lines) + "\n")


def require_wrk() -> None:
    if shutil.which("wrk") is None:
        raise SystemExit("needs wrk (apt-get install wrk)")
    OUT.mkdir(exist_ok=True)


def _ms(text: str) -> float:
    value, unit = re.match(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def wrk(url: str, seconds: int, connections: int, bodies_file: Path) -> WrkResult:
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "--timeout", "10s",
         "-s", str(BENCH / "wrk_webhooks.lua"), url],
        capture_output=True, text=True,
        env=os.environ | {"BENCH_BODIES": str(bodies_file), "BENCH_RUN": next_run()},
        timeout=seconds + 60, check=True).stdout
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return WrkResult(
        rps=float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        p50_ms=_ms(re.search(r"\s50%\s+(\S+)", out).group(1)),  # type: ignore[union-attr]
        p99_ms=_ms(re.search(r"\s99%\s+(\S+)", out).group(1)),  # type: ignore[union-attr]
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        requests=int(re.search(r"(\d+) requests in", out).group(1)),  # type: ignore[union-attr]
    )


class PeakRss:
    """Samples the resident memory of a process tree; `peak` is the largest single process."""

    def __init__(self, root_pid: int) -> None:
        self._root = root_pid
        self.peak_mib = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            for pid in process_tree(self._root):
                try:
                    status = Path(f"/proc/{pid}/status").read_text()
                except OSError:
                    continue
                kib = re.search(r"VmRSS:\s+(\d+) kB", status)
                if kib:
                    self.peak_mib = max(self.peak_mib, int(kib.group(1)) / 1024)


def sweep(url: str, label: str, bodies_file: Path, steps: list[int]) -> list[WrkResult]:
    results = []
    for i, c in enumerate(steps):
        progress(f"sweep {label}", i, len(steps))
        results.append(wrk(url, 5, c, bodies_file))
    progress(f"sweep {label}", len(steps), len(steps))
    return results


def draw(ours: list[WrkResult], echo: list[WrkResult], path: Path) -> None:
    with chart(path, "Ingest latency against load (2-core machine, all on one box)",
               "requests/s achieved (wrk, 8 to 256 connections)", "latency, ms",
               log_y=True) as ax:
        for results, name, style in ((ours, "relayforge ingest", "-"),
                                     (echo, "bare echo app", "--")):
            x = [r.rps for r in results]
            ax.plot(x, [r.p50_ms for r in results], style, marker="o", label=f"{name} p50")
            ax.plot(x, [r.p99_ms for r in results], style, marker="^", label=f"{name} p99")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--no-sweep", action="store_true")
    args = parser.parse_args()
    require_wrk()
    bodies_file = OUT / "bodies.txt"
    bodies(bodies_file)
    steps = [8, 16, 32, 64, 128, 256]

    port = support.free_port()
    echo = echo_server(port)
    try:
        echo_url = f"http://127.0.0.1:{port}"
        with CpuAccount(echo.pid) as echo_cpu:
            echo_result = wrk(echo_url, args.seconds, args.connections, bodies_file)
        echo_sweep = [] if args.no_sweep else sweep(echo_url, "echo", bodies_file, steps)
    finally:
        echo.terminate()
        echo.wait()

    with database() as url, Servers(url) as servers:
        ingest = servers.start("ingest")
        assert ingest.process is not None
        with PeakRss(ingest.process.pid) as rss:
            ran = statements(ingest.url)
            with CpuAccount(ingest.process.pid) as ours_cpu:
                ours = wrk(ingest.url, args.seconds, args.connections, bodies_file)
            ran = per_unit(ran, statements(ingest.url), ours.requests)
            ours_sweep = [] if args.no_sweep else sweep(ingest.url, "relayforge", bodies_file,
                                                        steps)
    report(f"durable ingest, {args.connections} connections, {args.seconds}s", ours.rps,
           echo_result.rps, "bare BlackSheep+Granian", "req/s", target=0.35)
    print(f"  relayforge: p50 {ours.p50_ms:.1f} ms, p99 {ours.p99_ms:.1f} ms, "
          f"{ours.requests:,} requests, {ours.non_2xx} non-2xx; peak RSS of one process "
          f"{rss.peak_mib:.0f} MiB (target < 150)")
    print(f"  echo:       p50 {echo_result.p50_ms:.1f} ms, p99 {echo_result.p99_ms:.1f} ms, "
          f"{echo_result.requests:,} requests, {echo_result.non_2xx} non-2xx")
    # Both runs leave about the same share of the cores idle, so the ratio of requests per
    # second follows the ratio of CPU per request: this says where relayforge's goes.
    print(f"  relayforge: {ours_cpu.per(ours.requests, 'request')}")
    print(f"  relayforge: {ran.format(unit='request')} on PostgreSQL")
    print(f"  echo:       {echo_cpu.per(echo_result.requests, 'request')}")
    if ours_sweep:
        # Each server's best over the sweep: the bare app is CPU-bound at any count, while
        # ingest's requests also wait for their batch's commit, so it gains from more
        # connections in flight.
        best = max(ours_sweep + [ours], key=lambda r: r.rps)
        best_echo = max(echo_sweep + [echo_result], key=lambda r: r.rps)
        report("durable ingest, best over the sweep", best.rps, best_echo.rps,
               "bare BlackSheep+Granian (its best)", "req/s", target=0.35)
        print(f"  relayforge's best: p50 {best.p50_ms:.1f} ms, p99 {best.p99_ms:.1f} ms")
        draw(ours_sweep, echo_sweep, OUT / "ingest.png")
        print(f"chart: {OUT / 'ingest.png'}")


if __name__ == "__main__":
    main()
