"""The BlackSheep application: routes for the process's mode, and its lifecycle."""

from __future__ import annotations

import logging
import os

from blacksheep import Application, Request, Response

from relayforge.errors import MethodNotAllowed, NotFound
from relayforge.http.admin import AdminEndpoints
from relayforge.http.errors import error_response
from relayforge.http.instrument import Handler, instrument
from relayforge.http.openapi import DocsEndpoints
from relayforge.http.ops import OpsEndpoints, ReadinessCheck
from relayforge.http.webhooks import WebhookEndpoint
from relayforge.observability import logging as log_setup
from relayforge.observability import tracing
from relayforge.runtime import Runtime
from relayforge.settings import Settings, load_settings

log = logging.getLogger("relayforge")
METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH")


def create_app(settings: Settings, mode: str = "all") -> Application:
    app = Application(show_error_details=False)
    runtime = Runtime(settings, mode)
    app.services.register(Runtime, instance=runtime)

    literal_routes: dict[str, list[str]] = {}  # path without parameters -> its methods

    def route(method: str, template: str, handler: Handler) -> None:
        if "{" in template:
            handler = _literal_paths_first(handler, literal_routes)
        else:
            literal_routes.setdefault(template, []).append(method)
        app.router.add(method, template, instrument(template, handler))

    checks: dict[str, ReadinessCheck] = {"database": runtime.check_database}
    if runtime.relays or runtime.consumes:
        checks["broker"] = runtime.check_broker
    ops = OpsEndpoints(checks)
    route("GET", "/healthz", ops.healthz)
    route("GET", "/readyz", ops.readyz)
    route("GET", "/metrics", ops.metrics)

    webhooks: WebhookEndpoint | None = None
    if runtime.ingests:
        async def by_header(request: Request) -> Response:
            assert webhooks is not None
            return await webhooks.by_header(request)

        async def by_path(request: Request) -> Response:
            assert webhooks is not None
            return await webhooks.by_path(request)

        route("POST", "/webhooks/{source}", by_header)
        route("POST", "/tenants/{tenant_id}/webhooks/{source}", by_path)

        docs = DocsEndpoints()
        route("GET", "/openapi.json", docs.openapi)
        route("GET", "/docs", docs.page)  # BlackSheep matches /docs/ here too
        route("GET", "/docs/{asset}", docs.asset)

        admin = AdminEndpoints(runtime)
        for method, template, role, handler in admin.routes():
            route(method, template, admin.guard(role, handler))

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
            return error_response(MethodNotAllowed(f"method {request.method} not allowed", allowed))
        return error_response(NotFound(f"no route for {request.path[:200]}"))

    app.router.fallback = instrument("unmatched", fallback)

    async def on_start(application: Application) -> None:
        nonlocal webhooks
        await runtime.start()
        if runtime.ingests:
            assert runtime.secrets is not None and runtime.writer is not None
            webhooks = WebhookEndpoint(settings, runtime.secrets, runtime.writer)

    async def on_stop(application: Application) -> None:
        await runtime.stop()

    app.on_start += on_start
    app.on_stop += on_stop
    return app


def _literal_paths_first(handler: Handler, literal_routes: dict[str, list[str]]) -> Handler:
    """A parameter route never answers for a path that is another method's literal route:
    GET /admin/jobs/reprocess is a 405, not a job lookup of id "reprocess"."""

    async def guarded(request: Request) -> Response:
        methods = literal_routes.get(request.path.rstrip("/"))
        if methods is not None:
            raise MethodNotAllowed(f"method {request.method} not allowed", methods)
        return await handler(request)

    return guarded


def app_factory() -> Application:
    """Entry point for Granian workers: settings from the environment, mode from the CLI."""
    settings = load_settings()
    log_setup.configure(settings.log.level, settings.log.json)
    mode = os.environ.get("RELAYFORGE_MODE", "all")
    tracing.configure(settings, mode)
    return create_app(settings, mode)
