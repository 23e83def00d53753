"""Operations routes: /healthz, /readyz, /metrics (served in every mode)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping

from blacksheep import Content, Request, Response

from relayforge.http.errors import view_response
from relayforge.models import Check, Health, Ready
from relayforge.observability import metrics

ReadinessCheck = Callable[[], Awaitable[None]]
CHECK_TIMEOUT_SECONDS = 2.0


class OpsEndpoints:
    def __init__(self, checks: Mapping[str, ReadinessCheck],
                 before_metrics: Callable[[], Awaitable[None]] | None = None) -> None:
        self._started = time.monotonic()
        self._checks = checks
        self._before_metrics = before_metrics  # refreshes gauges read from the database

    async def healthz(self, request: Request) -> Response:
        return view_response(200, Health(
            uptime_seconds=round(time.monotonic() - self._started, 3)))

    async def readyz(self, request: Request) -> Response:
        results = await self._check_all()
        ready = all(c.status == "ok" for c in results)
        return view_response(200 if ready else 503, Ready(
            status="ready" if ready else "not_ready",
            checks=dict(zip(self._checks, results, strict=True))))

    async def _check_all(self) -> list[Check]:
        """Every readiness check, also kept in `readiness_check_ok` for alerting."""
        results = await asyncio.gather(*(self._run(c) for c in self._checks.values()))
        for name, result in zip(self._checks, results, strict=True):
            metrics.child(metrics.READINESS, name).set(1 if result.status == "ok" else 0)
        return list(results)

    @staticmethod
    async def _run(check: ReadinessCheck) -> Check:
        started = time.perf_counter()
        try:
            await asyncio.wait_for(check(), CHECK_TIMEOUT_SECONDS)
        except Exception as exc:  # any failure means not ready; say which and why
            return Check(status="error", error=f"{type(exc).__name__}: {exc}"[:300])
        return Check(status="ok", latency_ms=round((time.perf_counter() - started) * 1000, 3))

    async def metrics(self, request: Request) -> Response:
        if self._before_metrics is not None:
            await self._before_metrics()
        await self._check_all()  # a process that is up but not ready is seen by Prometheus too
        body, content_type = metrics.render()
        return Response(200, None, Content(content_type.encode(), body))
