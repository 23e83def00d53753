"""/openapi.json (OpenAPI 3.0.3, built once) and /docs/ (Swagger UI from the assets of the
swagger-ui-bundle package: no CDN, works offline)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from blacksheep import Content, Request, Response

from relayforge import __version__
from relayforge.http.admin import MAX_BULK, MAX_PAGE
from relayforge.http.instrument import route_value
from relayforge.jobs import STATES

JSON_CT = "application/json"
REF = "#/components/schemas/"


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": REF + name}


def _json(schema: dict[str, Any], description: str, headers: dict[str, Any] | None = None
          ) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description, "content": {JSON_CT: {"schema": schema}}}
    out["headers"] = {**COMMON_RESPONSE_HEADERS, **(headers or {})}
    return out


def _error(description: str, codes: list[str], rejected: bool = False,
           retry_after: bool = False) -> dict[str, Any]:
    schema: dict[str, Any] = _ref("RejectedError" if rejected else "Error")
    if codes:
        schema = {"allOf": [schema, {"type": "object", "properties": {
            "code": {"type": "string", "enum": codes}}}]}
    headers = {"Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}} \
        if retry_after else None
    return _json(schema, description, headers)


COMMON_RESPONSE_HEADERS = {
    "X-Request-Id": {"description": "the client's X-Request-Id, or a generated one",
                     "schema": {"type": "string"}},
    "X-Correlation-Id": {"description": "the client's X-Correlation-Id, else the request id",
                         "schema": {"type": "string"}},
}
REQUEST_ID_PARAMS = [
    {"name": "X-Request-Id", "in": "header", "required": False, "schema": {"type": "string"}},
    {"name": "X-Correlation-Id", "in": "header", "required": False, "schema": {"type": "string"}},
]
PROVIDERS = ("generic", "github", "stripe")
SOURCE_PARAM = {"name": "source", "in": "path", "required": True,
                "description": "generic, github or stripe (case-insensitive)",
                "schema": {"type": "string", "enum": list(PROVIDERS)}}
SIGNATURE_HEADERS = [
    {"name": "X-Signature", "in": "header", "required": False,
     "description": "generic: lowercase hex HMAC-SHA256 of the raw body", "schema": {"type": "string"}},
    {"name": "X-Event-Id", "in": "header", "required": False,
     "description": "generic: the provider's event id (dedup key)", "schema": {"type": "string"}},
    {"name": "X-Hub-Signature-256", "in": "header", "required": False,
     "description": "github: sha256=<hex>", "schema": {"type": "string"}},
    {"name": "X-GitHub-Event", "in": "header", "required": False, "schema": {"type": "string"}},
    {"name": "X-GitHub-Delivery", "in": "header", "required": False, "schema": {"type": "string"}},
    {"name": "Stripe-Signature", "in": "header", "required": False,
     "description": "stripe: t=<unix>,v1=<hex>[,v1=...] over '<t>.<body>'",
     "schema": {"type": "string"}},
]
WEBHOOK_BODY = {"required": True, "content": {
    JSON_CT: {"schema": {"oneOf": [_ref("GenericPayload"), _ref("StripePayload"),
                                   _ref("GitHubPayload")]}},
    "application/x-www-form-urlencoded": {"schema": {"type": "object", "properties": {
        "payload": {"type": "string", "description": "github: the JSON payload"}}}},
}}


def _webhook_responses() -> dict[str, Any]:
    return {
        "202": _json(_ref("Accepted"), "recorded (a duplicate returns the same job_id, deduped)"),
        "400": _error("bad tenant id or payload", ["invalid_tenant", "invalid_payload"], True),
        "401": _error("missing, invalid or stale signature",
                      ["missing_signature", "invalid_signature", "stale_timestamp"], True),
        "404": _error("unknown source", ["unknown_source"]),
        "409": _error("Stripe event replayed for this tenant", ["replayed_event"], True),
        "413": _error("body too large", ["payload_too_large"]),
        "429": _error("rate limit or daily quota", ["rate_limited", "quota_exceeded"],
                      retry_after=True),
        "503": _error("database unavailable: nothing recorded", ["unavailable"], retry_after=True),
    }


def _admin(summary: str, role: str, responses: dict[str, Any], params: list[dict[str, Any]] | None
           = None, body: dict[str, Any] | None = None) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary, "tags": ["admin"], "description": f"Role: {role} or higher.",
        "security": [{"bearer": []}],
        "parameters": REQUEST_ID_PARAMS + (params or []),
        "responses": {
            **responses,
            "400": _error("invalid parameter or body", ["bad_request"]),
            "401": _error("missing or unknown API key", ["unauthorized"]),
            "403": _error("role too low", ["forbidden"]),
        },
    }
    if body is not None:
        op["requestBody"] = {"required": True, "content": {JSON_CT: {"schema": body}}}
    return op


def _path(name: str, description: str) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    if name.endswith("_id"):
        schema["format"] = "uuid"
    elif name == "provider":
        schema["enum"] = list(PROVIDERS)
    return {"name": name, "in": "path", "required": True, "description": description,
            "schema": schema}


def _query(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema}


NO_NUL = "^[^\\u0000]*$"


def _text(min_length: int, max_length: int) -> dict[str, Any]:
    return {"type": "string", "minLength": min_length, "maxLength": max_length, "pattern": NO_NUL}


PAGE = [_query("limit", {"type": "integer", "minimum": 1, "maximum": MAX_PAGE}),
        _query("cursor", {"type": "string", "format": "uuid"})]
NOT_FOUND = {"404": _error("not found", ["not_found"])}
UUID = {"type": "string", "format": "uuid"}
TS = {"type": "string", "format": "date-time"}
NULLABLE_STR = {"type": "string", "nullable": True}


def build_spec() -> dict[str, Any]:
    webhook_op = {
        "tags": ["webhooks"], "requestBody": WEBHOOK_BODY, "responses": _webhook_responses(),
    }
    paths: dict[str, Any] = {
        "/webhooks/{source}": {"post": {
            **webhook_op, "summary": "Receive a webhook (tenant from X-Tenant-Id)",
            "parameters": [SOURCE_PARAM, {
                "name": "X-Tenant-Id", "in": "header", "required": False,
                "description": "tenant UUID; absent: TENANT__DEFAULT_ID",
                "schema": {"type": "string", "format": "uuid"}}] + SIGNATURE_HEADERS + REQUEST_ID_PARAMS,
        }},
        "/tenants/{tenant_id}/webhooks/{source}": {"post": {
            **webhook_op, "summary": "Receive a webhook (tenant in the URL)",
            "parameters": [_path("tenant_id", "tenant UUID"), SOURCE_PARAM] + SIGNATURE_HEADERS
            + REQUEST_ID_PARAMS,
        }},
        "/healthz": {"get": {"tags": ["operations"], "summary": "Liveness",
                             "responses": {"200": _json(_ref("Health"), "alive")}}},
        "/readyz": {"get": {"tags": ["operations"], "summary": "Readiness with dependency checks",
                            "responses": {"200": _json(_ref("Ready"), "ready"),
                                          "503": _json(_ref("Ready"), "not ready")}}},
        "/metrics": {"get": {"tags": ["operations"], "summary": "Prometheus metrics",
                             "responses": {"200": {"description": "exposition text",
                                                   "headers": COMMON_RESPONSE_HEADERS,
                                                   "content": {"text/plain": {"schema": {
                                                       "type": "string"}}}}}}},
        "/docs": {"get": {"tags": ["operations"],
                          "summary": "Swagger UI (bundled assets, works offline); /docs redirects "
                                     "to /docs/",
                          "responses": {
                              "200": {"description": "the UI (at /docs/)",
                                      "headers": COMMON_RESPONSE_HEADERS,
                                      "content": {"text/html": {"schema": {"type": "string"}}}},
                              "308": {"description": "redirect to /docs/", "headers": {
                                  **COMMON_RESPONSE_HEADERS,
                                  "Location": {"schema": {"type": "string"}}}}}}},
        "/openapi.json": {"get": {"tags": ["operations"], "summary": "This document",
                                  "responses": {"200": _json({"type": "object"}, "OpenAPI 3")}}},
        "/admin/jobs": {"get": _admin("List jobs, newest first", "viewer", {
            "200": _json(_ref("JobList"), "a page of jobs")}, [
            _query("status", {"type": "string", "enum": list(STATES)}),
            _query("tenant_id", UUID), _query("source", _text(1, 200)), *PAGE])},
        "/admin/jobs/{job_id}": {"get": _admin("Get a job", "viewer", {
            "200": _json(_ref("JobView"), "the job"), **NOT_FOUND}, [_path("job_id", "job UUID")])},
        "/admin/jobs/{job_id}/reprocess": {"post": _admin(
            "Reprocess a dead-lettered job (max_attempts rises by WORKER__MAX_ATTEMPTS)", "operator", {
                "202": _json(_ref("Reprocessed"), "scheduled"), **NOT_FOUND,
                "409": _error("the job is not dead_lettered", ["conflict"])},
            [_path("job_id", "job UUID")])},
        "/admin/jobs/reprocess": {"post": _admin(
            "Reprocess dead-lettered jobs matching a filter", "operator", {
                "202": _json(_ref("BulkReprocessed"), "scheduled")}, body=_ref("BulkReprocess"))},
        "/admin/inbox": {"get": _admin("List inbox rows, newest first", "viewer", {
            "200": _json(_ref("InboxList"), "a page of inbox rows")}, [
            _query("tenant_id", UUID), _query("source", _text(1, 200)),
            _query("accepted", {"type": "string", "enum": ["true", "false"]}), *PAGE])},
        "/admin/inbox/{inbox_id}": {"get": _admin("Get an inbox row with headers and body", "viewer", {
            "200": _json(_ref("InboxDetail"), "the row"), **NOT_FOUND},
            [_path("inbox_id", "inbox UUID")])},
        "/admin/stats": {"get": _admin("Job counts by status, outbox backlog, inbox last 24 h",
                                       "viewer", {"200": _json(_ref("Stats"), "stats")},
                                       [_query("tenant_id", UUID)])},
        "/admin/tenants/{tenant_id}/secrets/{provider}": {
            "put": _admin("Make a secret current; previous ones expire later (rotation)", "admin", {
                "201": _json(_ref("Secret"), "stored (the value is never returned)"),
                "404": _error("unknown provider", ["unknown_source"])},
                [_path("tenant_id", "tenant UUID"), _path("provider", "generic, github, stripe")],
                body=_ref("SecretPut")),
            "get": _admin("List a tenant's active secrets (never values)", "admin", {
                "200": _json(_ref("SecretList"), "secrets"),
                "404": _error("unknown provider", ["unknown_source"])},
                [_path("tenant_id", "tenant UUID"), _path("provider", "generic, github, stripe")]),
        },
        "/admin/tenants/{tenant_id}/secrets/{provider}/{secret_id}": {"delete": _admin(
            "Retire a secret at once", "admin", {
                "204": {"description": "retired", "headers": COMMON_RESPONSE_HEADERS},
                "404": _error("no such secret or provider", ["not_found", "unknown_source"])},
            [_path("tenant_id", "tenant UUID"), _path("provider", "generic, github, stripe"),
             _path("secret_id", "secret UUID")])},
        "/admin/api-keys": {
            "post": _admin("Create an API key (shown once)", "admin", {
                "201": _json(_ref("ApiKeyCreated"), "the new key")}, body=_ref("ApiKeyCreate")),
            "get": _admin("List API keys (never the keys)", "admin", {
                "200": _json(_ref("ApiKeyList"), "keys")}),
        },
        "/admin/api-keys/{key_id}": {"delete": _admin("Revoke an API key", "admin", {
            "204": {"description": "revoked", "headers": COMMON_RESPONSE_HEADERS}, **NOT_FOUND},
            [_path("key_id", "key UUID")])},
    }
    for item in paths.values():
        for op in item.values():
            op["responses"].setdefault("500", _error("unexpected fault (logged)", ["internal"]))
            op["responses"].setdefault("405", _error("method not allowed", ["method_not_allowed"]))
    job_view = {"type": "object", "required": [
        "id", "tenant_id", "source", "event_type", "status", "attempts", "max_attempts",
        "created_at", "updated_at", "first_inbox_id", "last_inbox_id"], "properties": {
        "id": UUID, "tenant_id": UUID, "source": {"type": "string"},
        "event_type": {"type": "string"}, "provider_event_id": NULLABLE_STR,
        "status": {"type": "string", "enum": list(STATES)}, "attempts": {"type": "integer"},
        "max_attempts": {"type": "integer"}, "last_error": NULLABLE_STR,
        "created_at": TS, "updated_at": TS, "first_inbox_id": UUID, "last_inbox_id": UUID}}
    inbox_props = {
        "id": UUID, "tenant_id": UUID, "source": {"type": "string"},
        "event_type": NULLABLE_STR, "provider_event_id": NULLABLE_STR, "dedup_key": NULLABLE_STR,
        "payload_hash": {"type": "string"}, "accepted": {"type": "boolean"},
        "signature_valid": {"type": "boolean"}, "rejection_code": NULLABLE_STR,
        "job_id": {**UUID, "nullable": True}, "request_id": NULLABLE_STR, "received_at": TS}
    secret = {"type": "object", "required": ["id", "fingerprint", "created_at", "expires_at"],
              "properties": {"id": UUID, "fingerprint": {"type": "string"}, "created_at": TS,
                             "expires_at": {**TS, "nullable": True}}}
    api_key = {"id": UUID, "name": {"type": "string"},
               "role": {"type": "string", "enum": ["viewer", "operator", "admin"]},
               "created_at": TS}
    schemas: dict[str, Any] = {
        "Error": {"type": "object", "required": ["error", "code"], "properties": {
            "error": {"type": "string"}, "code": {"type": "string"},
            "signature_valid": {"type": "boolean"}}},
        "RejectedError": {"type": "object", "required": ["error", "code"], "properties": {
            "error": {"type": "string"}, "code": {"type": "string"}, "inbox_id": UUID,
            "accepted": {"type": "boolean", "enum": [False]},
            "signature_valid": {"type": "boolean"}}},
        "Accepted": {"type": "object", "required": [
            "inbox_id", "job_id", "job_created", "deduped", "accepted", "signature_valid"],
            "properties": {"inbox_id": UUID, "job_id": UUID, "job_created": {"type": "boolean"},
                           "deduped": {"type": "boolean"}, "accepted": {"type": "boolean"},
                           "signature_valid": {"type": "boolean"}}},
        "GenericPayload": {"type": "object", "required": ["event"], "additionalProperties": False,
                           "properties": {
                               "event": {"type": "string", "minLength": 1},
                               "data": {"description": "any JSON"},
                               "fail_until_attempt": {"type": "integer", "minimum": 0,
                                                      "maximum": 10000},
                               "force_permanent_fail": {"type": "boolean"}}},
        "StripePayload": {"type": "object", "required": ["id", "type"], "properties": {
            "id": {"type": "string", "minLength": 1}, "type": {"type": "string", "minLength": 1},
            "created": {"type": "integer"},
            "data": {"type": "object", "properties": {"object": {}}}}},
        "GitHubPayload": {"type": "object", "description": "any object; type from X-GitHub-Event "
                                                           "or github.<action>",
                          "properties": {"action": {"type": "string"}}},
        "Health": {"type": "object", "required": ["status", "uptime_seconds"], "properties": {
            "status": {"type": "string", "enum": ["ok"]}, "uptime_seconds": {"type": "number"}}},
        "Ready": {"type": "object", "required": ["status", "checks"], "properties": {
            "status": {"type": "string", "enum": ["ready", "not_ready"]},
            "checks": {"type": "object", "additionalProperties": {"type": "object", "properties": {
                "status": {"type": "string", "enum": ["ok", "error"]},
                "latency_ms": {"type": "number"}, "error": {"type": "string"}}}}}},
        "JobView": job_view,
        "JobList": {"type": "object", "required": ["items", "next_cursor"], "properties": {
            "items": {"type": "array", "items": _ref("JobView")},
            "next_cursor": {**UUID, "nullable": True}}},
        "InboxView": {"type": "object", "required": list(inbox_props), "properties": inbox_props},
        "InboxDetail": {"type": "object", "required": list(inbox_props), "properties": {
            **inbox_props, "headers": {"type": "object"},
            "body_base64": {"type": "string", "nullable": True}}},
        "InboxList": {"type": "object", "required": ["items", "next_cursor"], "properties": {
            "items": {"type": "array", "items": _ref("InboxView")},
            "next_cursor": {**UUID, "nullable": True}}},
        "Stats": {"type": "object", "required": ["jobs", "outbox_pending", "inbox_last_24h"],
                  "properties": {
                      "jobs": {"type": "object", "additionalProperties": {"type": "integer"}},
                      "outbox_pending": {"type": "integer"},
                      "inbox_last_24h": {"type": "object", "properties": {
                          "accepted": {"type": "integer"}, "rejected": {"type": "integer"}}}}},
        "Reprocessed": {"type": "object", "required": ["job_id", "status"], "properties": {
            "job_id": UUID, "status": {"type": "string", "enum": ["pending"]}}},
        "BulkReprocess": {"type": "object", "additionalProperties": False, "properties": {
            "tenant_id": UUID, "source": _text(1, 255), "event_type": _text(1, 255),
            "limit": {"type": "integer", "minimum": 1, "maximum": MAX_BULK}}},
        "BulkReprocessed": {"type": "object", "required": ["reprocessed", "job_ids"], "properties": {
            "reprocessed": {"type": "integer"}, "job_ids": {"type": "array", "items": UUID}}},
        "SecretPut": {"type": "object", "required": ["secret"], "additionalProperties": False,
                      "properties": {
                          "secret": {"type": "string", "minLength": 1, "maxLength": 1024},
                          "previous_expires_in_seconds": {"type": "integer", "minimum": 0,
                                                          "maximum": 31536000}}},
        "Secret": secret,
        "SecretList": {"type": "object", "required": ["items"], "properties": {
            "items": {"type": "array", "items": _ref("Secret")}}},
        "ApiKeyCreate": {"type": "object", "required": ["role"], "additionalProperties": False,
                         "properties": {"role": api_key["role"],
                                        "name": _text(0, 200)}},
        "ApiKeyCreated": {"type": "object", "required": ["id", "key", "role", "name", "created_at"],
                          "properties": {**api_key, "key": {"type": "string"}}},
        "ApiKeyList": {"type": "object", "required": ["items"], "properties": {"items": {
            "type": "array", "items": {"type": "object", "properties": {
                **api_key, "revoked_at": {**TS, "nullable": True}}}}}},
    }
    return {
        "openapi": "3.0.3",
        "info": {"title": "Relayforge", "version": __version__,
                 "description": "Multi-tenant webhook ingestion and job orchestration."},
        "paths": paths,
        "components": {"schemas": schemas, "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer"}}},
    }


def _swagger_dir() -> Path:
    import swagger_ui_bundle

    return Path(str(swagger_ui_bundle.swagger_ui_path))


DOCS_HTML = b"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Relayforge API</title>
<link rel="stylesheet" href="swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="swagger-ui-bundle.js"></script>
<script src="swagger-ui-standalone-preset.js"></script>
<script>
window.ui = SwaggerUIBundle({url: "/openapi.json", dom_id: "#swagger-ui",
  presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset], layout: "BaseLayout"});
</script></body></html>
"""
ASSETS = {
    "swagger-ui.css": b"text/css; charset=utf-8",
    "swagger-ui-bundle.js": b"application/javascript; charset=utf-8",
    "swagger-ui-standalone-preset.js": b"application/javascript; charset=utf-8",
    "favicon-32x32.png": b"image/png",
}


class DocsEndpoints:
    def __init__(self) -> None:
        self._spec = orjson.dumps(build_spec())
        self._assets: dict[str, bytes] = {}

    async def openapi(self, request: Request) -> Response:
        return Response(200, None, Content(JSON_CT.encode(), self._spec))

    async def page(self, request: Request) -> Response:
        """/docs/ is the UI; /docs redirects there so the assets resolve relative to it."""
        if not request.path.endswith("/"):
            return Response(308, [(b"Location", b"/docs/")])
        return Response(200, None, Content(b"text/html; charset=utf-8", DOCS_HTML))

    async def asset(self, request: Request) -> Response:
        name = route_value(request, "asset")
        content_type = ASSETS.get(name)
        if content_type is None:  # a fixed list: no path ever reaches the filesystem
            from relayforge.errors import NotFound

            raise NotFound("no such asset")
        if name not in self._assets:
            self._assets[name] = (_swagger_dir() / name).read_bytes()
        return Response(200, [(b"Cache-Control", b"public, max-age=86400")],
                        Content(content_type, self._assets[name]))
