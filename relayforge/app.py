"""The BlackSheep application: routes for the process's mode, and its lifecycle.

The HTTP endpoints get what they need (stores, verifiers, the ingest writer) once the runtime
has started; routes are declared before that and reach them through `Endpoints`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import os
from collections.abc import Awaitable, Callable

from blacksheep import Application, Request, Response

from relayforge.console.pages import ROUTES as CONSOLE_ROUTES
from relayforge.console.pages import SECURITY_HEADERS, Console
from relayforge.errors import MethodNotAllowed, NotFound
from relayforge.http.admin import ROUTES, AdminEndpoints
from relayforge.http.errors import error_response
from relayforge.http.instrument import Handler, instrument
from relayforge.http.openapi import DocsEndpoints
from relayforge.http.ops import OpsEndpoints, ReadinessCheck
from relayforge.http.silent import SilentConnections
from relayforge.http.webhooks import WebhookEndpoint
from relayforge.observability import logging as log_setup
from relayforge.observability import tracing
from relayforge.runtime import Runtime
from relayforge.security.limits import BodyBudget, UnverifiedBudget
from relayforge.settings import Settings, load_settings

METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH")
PROBES = {"/healthz", "/readyz", "/metrics"}  # out of the access log unless LOG__PROBES=true


class Endpoints:
    """The endpoints that need the started runtime."""

    webhooks: WebhookEndpoint
    admin: AdminEndpoints
    console: Console

    def start(self, settings: Settings, runtime: Runtime) -> None:
        assert runtime.verifiers and runtime.writer and runtime.stores and runtime.cipher
        assert runtime.sources
        h = settings.hardening
        unverified = UnverifiedBudget(h.unverified_rate_limit_per_second, h.unverified_burst,
                                      h.tenant_bucket_idle_seconds)
        bodies = BodyBudget(h.max_inflight_body_bytes)  # what bodies in flight may take
        self.webhooks = WebhookEndpoint(settings, runtime.verifiers, runtime.writer,
                                        runtime.sources, unverified, bodies, runtime.ingest_share)
        self.admin = AdminEndpoints(settings, runtime.stores, runtime.cipher, unverified)
        self.console = Console(settings, runtime.stores, runtime.cipher, self.admin.auth,
                               unverified, bodies)


class Router:
    """Adds instrumented routes; a parameter route never answers for a path that is another
    method's literal route (GET /admin/jobs/reprocess is a 405, not a job lookup)."""

    def __init__(self, app: Application, settings: Settings) -> None:
        self._app = app
        self._quiet = set() if settings.log.probes else PROBES
        self._body_timeout = settings.server.body_read_timeout_ms / 1000
        self._literal: dict[str, list[str]] = {}  # path without parameters -> its methods

    def add(self, method: str, template: str, handler: Handler) -> None:
        if "{" in template:
            handler = self._literal_paths_first(handler)
        else:
            self._literal.setdefault(template, []).append(method)
        self._app.router.add(method, template, instrument(
            template, handler, self._body_timeout, access_log=template not in self._quiet))

    def _literal_paths_first(self, handler: Handler) -> Handler:
        def guarded(request: Request) -> Awaitable[Response]:  # no coroutine of its own
            methods = self._literal.get(request.path.rstrip("/"))
            if methods is not None:
                raise MethodNotAllowed(f"method {request.method} not allowed", methods)
            return handler(request)

        return guarded

    def fallback(self) -> None:
        """404 for unknown paths, 405 (with Allow) for known paths with another method."""
        app = self._app

        async def fallback(request: Request) -> Response:
            matches = {}
            for method in METHODS:
                match = app.router.get_match_by_method_and_path(method, request.path)
                if match is not None and match.pattern != b"*":
                    matches[method] = match.pattern.count(b"{")
            # /admin/jobs/reprocess also matches /admin/jobs/{job_id}: the literal route wins.
            fewest = min(matches.values(), default=0)
            allowed = [m for m, params in matches.items() if params == fewest]
            if allowed:
                response = error_response(MethodNotAllowed(
                    f"method {request.method} not allowed", allowed))
            else:
                response = error_response(NotFound(f"no route for {request.path[:200]}"))
            # A mistyped console address is still the console's: the same strict headers.
            for name, value in SECURITY_HEADERS:
                response.add_header(name, value)
            return response

        app.router.fallback = instrument("unmatched", fallback, self._body_timeout)


def _late(get: Callable[[], Handler]) -> Handler:
    def handler(request: Request) -> Awaitable[Response]:  # no coroutine of its own
        return get()(request)

    return handler


def create_app(settings: Settings, mode: str = "all") -> Application:
    app = Application(show_error_details=False)
    runtime = Runtime(settings, mode)
    endpoints = Endpoints()
    router = Router(app, settings)

    checks: dict[str, ReadinessCheck] = {"database": runtime.check_database}
    if runtime.relays or runtime.consumes:
        checks["broker"] = runtime.check_broker
    ops = OpsEndpoints(checks, before_metrics=runtime.refresh_lag)
    router.add("GET", "/healthz", ops.healthz)
    router.add("GET", "/readyz", ops.readyz)
    router.add("GET", "/metrics", ops.metrics)

    if runtime.ingests:
        router.add("POST", "/webhooks/{source}", _late(lambda: endpoints.webhooks.by_header))
        router.add("POST", "/tenants/{tenant_id}/webhooks/{source}",
                   _late(lambda: endpoints.webhooks.by_path))
        docs = DocsEndpoints()
        router.add("GET", "/openapi.json", docs.openapi)
        router.add("GET", "/docs", docs.page)  # BlackSheep matches /docs/ here too
        router.add("GET", "/docs/{asset}", docs.asset)
        for route in ROUTES:
            router.add(route.method, route.path,
                       _late(lambda r=route: endpoints.admin.handler(r)))  # type: ignore[misc]
        for page in CONSOLE_ROUTES:
            router.add(page.method, page.path,
                       _late(lambda p=page: endpoints.console.handler(p)))  # type: ignore[misc]
    router.fallback()

    silent = SilentConnections(settings.server.port, settings.server.header_read_timeout_ms)
    sweeps: list[asyncio.Task[None]] = []

    async def on_start(application: Application) -> None:
        sweeps.append(asyncio.get_running_loop().create_task(silent.run()))
        await runtime.start()
        if runtime.ingests:
            endpoints.start(settings, runtime)
        # What start built lives as long as the process: frozen, the cyclic collector stops
        # walking it on every pass; a larger first generation makes passes rarer.
        gc.collect()
        gc.freeze()
        gc.set_threshold(10_000, 50, 100)

    async def on_stop(application: Application) -> None:
        for sweep in sweeps:
            sweep.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweep
        await runtime.stop()

    app.on_start += on_start
    app.on_stop += on_stop
    return app


M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter
MMAP_THRESHOLD_BYTES = 128 << 10  # glibc's initial value


def _return_large_buffers_to_the_os() -> None:
    """Pin glibc's mmap threshold. Left dynamic, it rises to the size of the largest buffer
    freed (a 20 MiB body): later ones come from the heap, whose freed pages stay in the
    process. Forty concurrent 20 MiB uploads peaked 176-240 MiB above the start, 156-160
    with it pinned. Webhooks under 128 KiB are not affected; other C libraries are left be."""
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return
    mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)


def app_factory() -> Application:
    """Entry point for Granian workers: settings from the environment, mode from the CLI."""
    _return_large_buffers_to_the_os()
    settings = load_settings()
    log_setup.configure(settings.log.level, settings.log.json)
    mode = os.environ.get("RELAYFORGE_MODE", "all")
    tracing.configure(settings, mode)
    return create_app(settings, mode)
