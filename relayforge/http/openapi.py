"""/openapi.json (OpenAPI 3.0.3, built once: the admin API from its route table and models, the
webhook routes from what each connector declares) and /docs/ (Swagger UI from the assets of the
swagger-ui-bundle package: no CDN, works offline)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import orjson
from blacksheep import Content, Request, Response

from relayforge import __version__
from relayforge.connectors import CONNECTORS, SOURCES, Connector
from relayforge.connectors.generic import GenericBody
from relayforge.http.admin import ROUTES
from relayforge.http.instrument import route_value
from relayforge.http.routing import AdminRoute
from relayforge.models import Accepted, ErrorBody, Health, Ready, RejectedError

JSON_CT = "application/json"
SOURCE_NAME_PATTERN = "^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"  # lower-cased on arrival
REF = "#/components/schemas/{name}"


def _ref(t: type) -> dict[str, Any]:
    return {"$ref": REF.format(name=_name(t))}


def _name(t: Any) -> str:
    """The component name msgspec gives a type (Page[JobView] -> Page_JobView_)."""
    args = getattr(t, "__args__", None)
    origin = getattr(t, "__origin__", t)
    if args:
        return f"{origin.__name__}_{'_'.join(a.__name__ for a in args)}_"
    return str(t.__name__)


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


def _json(schema: dict[str, Any], description: str, headers: dict[str, Any] | None = None
          ) -> dict[str, Any]:
    return {"description": description, "content": {JSON_CT: {"schema": schema}},
            "headers": {**COMMON_RESPONSE_HEADERS, **(headers or {})}}


def _error(description: str, codes: list[str], rejected: bool = False,
           retry_after: bool = False) -> dict[str, Any]:
    schema: dict[str, Any] = _ref(RejectedError if rejected else ErrorBody)
    if codes:
        schema = {"allOf": [schema, {"type": "object", "properties": {
            "code": {"type": "string", "enum": codes}}}]}
    headers = {"Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}} \
        if retry_after else None
    return _json(schema, description, headers)


def _path_param(name: str) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    description = name
    if name.endswith("_id"):
        schema["format"] = "uuid"
    elif name in ("provider", "source", "name"):
        schema["pattern"] = SOURCE_NAME_PATTERN
        description = ("case-insensitive: a built-in source (" + ", ".join(SOURCES)
                       + ") or one of the tenant's own")
    return {"name": name, "in": "path", "required": True, "schema": schema,
            "description": description}


# ------------------------------------------------------------------ from the connectors
# The webhook routes verify the raw body before anything parses it, so no model describes the
# request: each connector declares its headers and body (relayforge/connectors), and each
# built-in source gets its own path; {source} stands for a tenant's own sources.

TENANT_HEADER = {"name": "X-Tenant-Id", "in": "header", "required": False,
                 "description": "tenant UUID; absent: TENANT__DEFAULT_ID",
                 "schema": {"type": "string", "format": "uuid"}}
class _TenantSource(Connector):
    """What the document says of a tenant-defined source (its definition says the rest)."""

    name = "{source}"
    summary = ("A tenant's own source: the headers its definition names (HMAC, token or basic "
               "auth); the body is a JSON object")


def _webhook_op(connector: Connector, params: list[dict[str, Any]]) -> dict[str, Any]:
    headers = [{"name": h.name, "in": "header", "required": h.required,
                "description": h.description, "schema": {"type": "string"}}
               for h in connector.header_docs]
    form = {"type": "object", "properties": {"payload": {
        "type": "string", "description": "the JSON payload (or a slash command's fields)"}}}
    responses: dict[str, Any] = {
        "202": _json(_ref(Accepted), "recorded (a duplicate returns the same job_id, deduped)"),
        "400": _error("bad tenant id or payload", ["invalid_tenant", "invalid_payload"], True),
        "401": _error("missing, invalid or stale signature",
                      ["missing_signature", "invalid_signature", "stale_timestamp"], True),
        "404": _error("unknown source (or, for a tenant's own source, a signature that did "
                      "not verify)", ["unknown_source"]),
        "408": _error("the body did not arrive within SERVER__BODY_READ_TIMEOUT_MS",
                      ["request_timeout"]),
        "409": _error("an event replayed for this tenant (Stripe)", ["replayed_event"], True),
        "413": _error("body too large", ["payload_too_large"]),
        "429": _error("rate limit or daily quota, or too many unverified requests from "
                      "this address", ["rate_limited", "quota_exceeded"], retry_after=True),
        "503": _error("database unavailable, or too many body bytes in flight: nothing "
                      "recorded", ["unavailable", "overloaded"], retry_after=True),
    }
    if connector.direct_answer_schema is not None:
        responses["200"] = _json(connector.direct_answer_schema,
                                 "a signed handshake, answered at once (no job)")
    return {
        "tags": ["webhooks"], "summary": connector.summary,
        "parameters": params + headers + REQUEST_ID_PARAMS,
        "requestBody": {"required": True, "content": {
            ct: {"schema": connector.body_schema if ct == JSON_CT else form}
            for ct in connector.content_types}},
        "responses": responses,
    }


def _webhook_paths() -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for name, connector in [*CONNECTORS.items(), ("{source}", _TenantSource())]:
        source = [_path_param("source")] if name == "{source}" else []
        paths[f"/webhooks/{name}"] = {"post": _webhook_op(connector, source + [TENANT_HEADER])}
        paths[f"/tenants/{{tenant_id}}/webhooks/{name}"] = {
            "post": _webhook_op(connector, [_path_param("tenant_id"), *source])}
    return paths


def _ops_paths() -> dict[str, Any]:
    text = {"200": {"description": "exposition text", "headers": COMMON_RESPONSE_HEADERS,
                    "content": {"text/plain": {"schema": {"type": "string"}}}}}
    docs = {"200": {"description": "the UI (at /docs/)", "headers": COMMON_RESPONSE_HEADERS,
                    "content": {"text/html": {"schema": {"type": "string"}}}},
            "308": {"description": "redirect to /docs/", "headers": {
                **COMMON_RESPONSE_HEADERS, "Location": {"schema": {"type": "string"}}}}}

    def op(summary: str, responses: dict[str, Any]) -> dict[str, Any]:
        return {"get": {"tags": ["operations"], "summary": summary, "responses": responses}}

    return {
        "/healthz": op("Liveness", {"200": _json(_ref(Health), "alive")}),
        "/readyz": op("Readiness with dependency checks", {
            "200": _json(_ref(Ready), "ready"), "503": _json(_ref(Ready), "not ready")}),
        "/metrics": op("Prometheus metrics", text),
        "/docs": op("Swagger UI (bundled assets, works offline); /docs redirects to /docs/",
                    docs),
        "/openapi.json": op("This document", {"200": _json({"type": "object"}, "OpenAPI 3.0")}),
    }


# ------------------------------------------------------------------- generated from types


def _query_params(schema: dict[str, Any]) -> list[dict[str, Any]]:
    """One query parameter per field of the route's query model, its schema as declared
    (without the null a Python default stands for)."""
    params = []
    for name, prop in schema.get("properties", {}).items():
        options = [o for o in prop.get("anyOf", [prop]) if o.get("type") != "null"]
        param_schema = options[0] if len(options) == 1 else {"anyOf": options}
        if prop.get("default") is not None:
            param_schema = {**param_schema, "default": prop["default"]}
        params.append({"name": name, "in": "query", "required": False, "schema": param_schema})
    return params


def _admin_op(route: AdminRoute, components: dict[str, Any]) -> dict[str, Any]:
    status, answer = route.ok
    ok: dict[str, Any] = {"description": "done", "headers": COMMON_RESPONSE_HEADERS} \
        if answer is None else _json(_ref(answer), "done")
    responses: dict[str, Any] = {
        str(status): ok,
        "400": _error("invalid parameter or body", ["bad_request"]),
        "401": _error("missing or unknown API key", ["unauthorized"]),
        "403": _error("role too low", ["forbidden"]),
        "429": _error("too many wrong API keys from this address", ["rate_limited"],
                      retry_after=True),
    }
    for code, other in route.also_ok.items():
        responses[str(code)] = _json(_ref(other), "done")
    for code, (description, codes) in route.errors.items():  # a route's own say wins
        responses[str(code)] = _error(description, codes)
    params = [_path_param(p.split("}")[0]) for p in route.path.split("{")[1:]]
    op: dict[str, Any] = {
        "summary": route.summary, "tags": ["admin"], "security": [{"bearer": []}],
        "description": f"Role: {route.role} or higher.",
        "parameters": REQUEST_ID_PARAMS + params
        + _query_params(components[_name(route.query)]),
        "responses": responses,
    }
    if route.body is not None:
        op["requestBody"] = {"required": True, "content": {JSON_CT: {"schema": _ref(route.body)}}}
    return op


def _openapi30(schema: Any) -> Any:
    """msgspec writes JSON Schema 2020-12; OpenAPI 3.0 (what the bundled Swagger UI reads)
    says `nullable` where it says `anyOf [..., {"type": "null"}]`, `enum` for `const`, a
    boolean `exclusiveMinimum` beside `minimum`, has no empty `required`, and no
    `propertyNames` (its pattern goes into the description)."""
    if isinstance(schema, list):
        return [_openapi30(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    dropped = ("const", "propertyNames", "exclusiveMinimum", "exclusiveMaximum")
    out = {k: _openapi30(v) for k, v in schema.items()
           if k not in dropped and not (k == "required" and v == [])}  # 3.0: at least one
    if "const" in schema:
        out["enum"] = [schema["const"]]
    for bound, limit in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if bound in schema:
            out[limit], out[bound] = schema[bound], True
    if "propertyNames" in schema:
        names = schema["propertyNames"]
        out["description"] = (schema.get("description", "") + " Names: " + ", ".join(
            f"{k} {v}" for k, v in names.items())).strip()
    options = out.get("anyOf")
    if options and {"type": "null"} in options:
        rest = [o for o in options if o != {"type": "null"}]
        del out["anyOf"]
        if len(rest) == 1 and "$ref" not in rest[0]:
            out.update(rest[0])
        else:
            out["anyOf" if len(rest) > 1 else "allOf"] = rest
        out["nullable"] = True
    return out


def build_spec() -> dict[str, Any]:
    types: set[Any] = {Accepted, ErrorBody, RejectedError, GenericBody, Health, Ready}
    for route in ROUTES:
        types |= {route.query} | ({route.body} if route.body else set())
        if route.ok[1] is not None:
            types.add(route.ok[1])
    _, components = msgspec.json.schema_components(sorted(types, key=_name),
                                                   ref_template=REF)
    paths: dict[str, Any] = {**_webhook_paths(), **_ops_paths()}
    for route in ROUTES:
        paths.setdefault(route.path, {})[route.method.lower()] = _admin_op(route, components)
    for item in paths.values():
        for op in item.values():
            op["responses"].setdefault("500", _error("unexpected fault (logged)", ["internal"]))
            op["responses"].setdefault("405", _error("method not allowed", ["method_not_allowed"]))
    return {
        "openapi": "3.0.3",
        "info": {"title": "Relayforge", "version": __version__,
                 "description": "Multi-tenant webhook ingestion and job orchestration."},
        "paths": paths,
        "components": {"schemas": _openapi30(components), "securitySchemes": {
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
