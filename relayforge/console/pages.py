"""The console's pages and actions. Each reads through the stores and acts through the same
functions as the admin API; the role a page or action needs is the admin API's for the same
thing, checked here on the server whatever the page shows."""

from __future__ import annotations

import datetime as dt
import importlib.resources
import logging
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode

import msgspec
import orjson
from blacksheep import Content, Request, Response, StreamedContent
from jinja2 import Environment, PackageLoader, select_autoescape

from relayforge import actions
from relayforge.console import charts
from relayforge.console.sessions import COOKIE, Session, Sessions, check_csrf
from relayforge.deliveries import WAITING, DeliveryStatus
from relayforge.errors import BadRequest, Forbidden, NotFound, RateLimited, RelayforgeError
from relayforge.events import has_control
from relayforge.http.bodies import read_body
from relayforge.http.destinations import DestinationEndpoints
from relayforge.http.instrument import client_address, query_string, route_value
from relayforge.http.models import (
    MAX_FILTER_LENGTH,
    ApiKeyCreate,
    BulkReprocess,
    DestinationCreate,
    DestinationPatch,
    JobsQuery,
    SecretPut,
    convert_text,
    given,
    instant,
    lower,
)
from relayforge.http.routing import path_uuid
from relayforge.jobs import JobStatus
from relayforge.observability import metrics
from relayforge.roles import Role
from relayforge.security.apikeys import ApiKeyAuth
from relayforge.security.limits import BodyBudget, UnverifiedBudget
from relayforge.security.secrets import SecretCipher
from relayforge.settings import Settings
from relayforge.stores import Stores
from relayforge.stores.audit import AuditEntry

log = logging.getLogger(__name__)

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
       "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; "
       "report-uri /console/csp-report")
SECURITY_HEADERS = [
    (b"Content-Security-Policy", CSP.encode()), (b"X-Content-Type-Options", b"nosniff"),
    (b"X-Frame-Options", b"DENY"), (b"Referrer-Policy", b"same-origin"),
    (b"Cache-Control", b"no-store")]
STATIC = {"console.css": b"text/css; charset=utf-8",
          "console.js": b"text/javascript; charset=utf-8"}
MAX_FORM = 65536
MAX_CSP_REPORT = 8192  # a real report is a few hundred bytes
PAGE = 50
MAX_PICKER_TENANTS = 500
# The create form's plain fields (filter and headers are JSON objects, parsed apart)
DESTINATION_TEXT = ("url", "name", "payload", "timeout_ms", "rate_limit_per_second",
                    "max_concurrency")
CLEARABLE = ("name", "rate_limit_per_second", "max_concurrency")  # blank in the edit form
VIEWER, OPERATOR, ADMIN = Role.VIEWER, Role.OPERATOR, Role.ADMIN
NAV = [("/console/overview", "Overview", VIEWER), ("/console/jobs", "Events and jobs", VIEWER),
       ("/console/dead-letters", "Dead letters", VIEWER),
       ("/console/deliveries", "Deliveries", VIEWER),
       ("/console/destinations", "Destinations", VIEWER), ("/console/secrets", "Secrets", ADMIN),
       ("/console/api-keys", "API keys", ADMIN), ("/console/audit", "Audit log", ADMIN)]
JOB_STATES = [s.value for s in JobStatus]
DELIVERY_STATES = [s.value for s in WAITING]
DELIVERY_STATUSES = [s.value for s in DeliveryStatus]
BODY_PREVIEW = 16384  # of each request's body on the job page; the whole body is a download
BODY_CHUNK = 1 << 20  # bytes read from the database at a time for a download

Handler = Callable[[Request, Session], Awaitable[Response]]


@dataclass(frozen=True, slots=True)
class TimelineItem:
    at: dt.datetime
    what: str
    detail: str | None


@dataclass(frozen=True)
class ConsoleRoute:
    method: str
    path: str
    role: Role | None  # None: no session needed (sign-in, assets, CSP reports)
    handler: str


ROUTES = [
    ConsoleRoute("GET", "/console", None, "home"),
    ConsoleRoute("GET", "/console/login", None, "login_page"),
    ConsoleRoute("POST", "/console/login", None, "login"),
    ConsoleRoute("POST", "/console/logout", VIEWER, "logout"),
    ConsoleRoute("GET", "/console/static/{asset}", None, "static"),
    ConsoleRoute("POST", "/console/csp-report", None, "csp_report"),
    ConsoleRoute("GET", "/console/overview", VIEWER, "overview"),
    ConsoleRoute("GET", "/console/overview/live", VIEWER, "overview_live"),
    ConsoleRoute("GET", "/console/jobs", VIEWER, "jobs"),
    ConsoleRoute("GET", "/console/jobs/{job_id}", VIEWER, "job"),
    ConsoleRoute("GET", "/console/jobs/{job_id}/status", VIEWER, "job_status"),
    ConsoleRoute("GET", "/console/inbox/{inbox_id}/body", VIEWER, "inbox_body"),
    ConsoleRoute("POST", "/console/jobs/{job_id}/reprocess", OPERATOR, "reprocess"),
    ConsoleRoute("GET", "/console/dead-letters", VIEWER, "dead_letters"),
    ConsoleRoute("GET", "/console/dead-letters/confirm", OPERATOR, "confirm_bulk"),
    ConsoleRoute("POST", "/console/dead-letters/reprocess", OPERATOR, "reprocess_bulk"),
    ConsoleRoute("GET", "/console/deliveries", VIEWER, "deliveries"),
    ConsoleRoute("GET", "/console/deliveries/confirm", OPERATOR, "confirm_deliveries"),
    ConsoleRoute("POST", "/console/deliveries/reprocess", OPERATOR, "reprocess_deliveries"),
    ConsoleRoute("GET", "/console/deliveries/{delivery_id}", VIEWER, "delivery"),
    ConsoleRoute("GET", "/console/deliveries/{delivery_id}/status", VIEWER, "delivery_status"),
    ConsoleRoute("POST", "/console/deliveries/{delivery_id}/reprocess", OPERATOR,
                 "reprocess_delivery"),
    ConsoleRoute("GET", "/console/destinations", VIEWER, "destinations"),
    ConsoleRoute("POST", "/console/destinations", ADMIN, "create_destination"),
    ConsoleRoute("GET", "/console/destinations/{destination_id}/edit", ADMIN,
                 "edit_destination"),
    ConsoleRoute("POST", "/console/destinations/{destination_id}/edit", ADMIN,
                 "change_destination"),
    ConsoleRoute("POST", "/console/destinations/{destination_id}/test", OPERATOR,
                 "test_destination"),
    ConsoleRoute("POST", "/console/destinations/{destination_id}/recover", OPERATOR,
                 "recover_destination"),
    ConsoleRoute("POST", "/console/destinations/{destination_id}/pause", OPERATOR, "pause"),
    ConsoleRoute("POST", "/console/destinations/{destination_id}/resume", OPERATOR, "resume"),
    ConsoleRoute("POST", "/console/destinations/{destination_id}/enable", ADMIN, "enable"),
    ConsoleRoute("POST", "/console/destinations/{destination_id}/disable", ADMIN, "disable"),
    ConsoleRoute("POST", "/console/destinations/{destination_id}/rotate-secret", ADMIN,
                 "rotate_destination_secret"),
    ConsoleRoute("GET", "/console/secrets", ADMIN, "secrets"),
    ConsoleRoute("POST", "/console/secrets/rotate", ADMIN, "rotate_secret"),
    ConsoleRoute("POST", "/console/secrets/retire", ADMIN, "retire_secret"),
    ConsoleRoute("GET", "/console/api-keys", ADMIN, "api_keys"),
    ConsoleRoute("POST", "/console/api-keys", ADMIN, "create_key"),
    ConsoleRoute("POST", "/console/api-keys/{key_id}/revoke", ADMIN, "revoke_key"),
    ConsoleRoute("GET", "/console/audit", ADMIN, "audit"),
]


# Every response gets its own list: BlackSheep adds headers to the list it is given.
def _html(status: int, body: str, headers: list[tuple[bytes, bytes]] | None = None) -> Response:
    return Response(status, [*SECURITY_HEADERS, *(headers or [])],
                    Content(b"text/html; charset=utf-8", body.encode()))


def _who(entry: AuditEntry) -> str:
    """The actor of an audit entry, as the timeline names it: role and key."""
    key = f"key {entry.key_id}" if entry.key_id else f"{entry.key_source} key"
    return f"{entry.role} ({key})"


def _json_object(text: str, field: str) -> dict[str, Any]:
    """A form field holding a JSON object (a destination's filter or headers)."""
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"{field}: not JSON ({exc})") from None
    if not isinstance(value, dict):
        raise BadRequest(f"{field}: must be a JSON object")
    return value


def _json(status: int, doc: dict[str, Any]) -> Response:
    return Response(status, list(SECURITY_HEADERS),
                    Content(b"application/json", orjson.dumps(doc)))


def _redirect(location: str, headers: list[tuple[bytes, bytes]] | None = None) -> Response:
    return Response(303, [*SECURITY_HEADERS, (b"Location", location.encode()), *(headers or [])],
                    None)


def _wants_json(request: Request) -> bool:
    return b"application/json" in (request.get_first_header(b"accept") or b"")


def _query(request: Request) -> dict[str, str]:
    try:
        return {k: v.strip() for k, v in parse_qsl((query_string(request) or b"").decode(
            "utf-8"), keep_blank_values=False) if v.strip()}
    except (UnicodeDecodeError, ValueError):
        raise BadRequest("the query string must be UTF-8") from None


async def _form(request: Request) -> dict[str, str]:
    raw = await read_body(request, MAX_FORM)
    try:
        return dict(parse_qsl(raw.decode("utf-8"), keep_blank_values=True))
    except (UnicodeDecodeError, ValueError):
        raise BadRequest("the form must be UTF-8") from None


def _uuid(value: str | None, what: str) -> uuid.UUID | None:
    if not value:
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        raise BadRequest(f"{what} must be a UUID") from None


JOB_FILTERS = ("status", "tenant_id", "source", "event_type", "provider_event_id", "since",
               "until", "cursor")
BULK_FILTERS = ("tenant_id", "source", "event_type")
# what a browser's datetime-local field sends: no zone (read as UTC), seconds only if set
_LOCAL_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}(:[0-9]{2})?")


def _jobs_query(q: dict[str, str]) -> JobsQuery:
    values = {k: v for k, v in q.items() if k in JOB_FILTERS}
    for name in ("since", "until"):
        local = _LOCAL_TIME.fullmatch(values.get(name, ""))
        if local:
            values[name] += "Z" if local.group(1) else ":00Z"
    return convert_text(values, JobsQuery, "query")


def _text(value: str | None, what: str) -> str | None:
    """A free-text filter, held to the admin API's bounds: at most MAX_FILTER_LENGTH
    characters, no control characters (PostgreSQL text can't hold NUL)."""
    if not value:
        return None
    if len(value) > MAX_FILTER_LENGTH or has_control(value):
        raise BadRequest(f"{what}: at most {MAX_FILTER_LENGTH} characters, without control "
                         "characters")
    return value


def _lower_text(value: str | None, what: str) -> str | None:
    text = _text(value, what)
    return text.lower() if text else None


def _age(seconds: float | None) -> str:
    if not seconds:
        return "none"
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


def _preview_text(preview: bytes | None, size: int | None) -> str:
    """A body's first BODY_PREVIEW bytes as text: indented when that is the whole body and
    JSON."""
    if preview is None or size is None:
        return "(not kept)"
    if size <= len(preview):
        try:
            return orjson.dumps(orjson.loads(preview), option=orjson.OPT_INDENT_2).decode()
        except orjson.JSONDecodeError:
            pass
    return preview.decode("utf-8", "replace")


class Console:
    def __init__(self, settings: Settings, stores: Stores, cipher: SecretCipher,
                 auth: ApiKeyAuth, unverified: UnverifiedBudget, bodies: BodyBudget) -> None:
        self._settings = settings
        self._bodies = bodies
        self._unverified = unverified
        self._stores = stores
        self._cipher = cipher
        self.sessions = Sessions(stores, auth, settings)
        self._destination_api = DestinationEndpoints(settings, stores, cipher)
        self._env = Environment(loader=PackageLoader("relayforge.console"),
                                autoescape=select_autoescape(default=True), auto_reload=False)

    # ------------------------------------------------------------------ plumbing

    def handler(self, route: ConsoleRoute) -> Callable[[Request], Awaitable[Response]]:
        handle: Handler = getattr(self, route.handler)

        async def guarded(request: Request) -> Response:
            session = None
            try:
                if route.role is not None:
                    session = await self.sessions.find(request.cookies.get(COOKIE))
                    if session is None:
                        if request.method == "GET" and not _wants_json(request):
                            return _redirect("/console/login")
                        raise Forbidden("sign in first")
                    session.actor.require(route.role)
                    if request.method == "POST":
                        given = request.get_first_header(b"x-csrf-token")
                        if given is None:
                            form = await _form(request)
                            request.console_form = form  # type: ignore[attr-defined]
                            check_csrf(session, form.get("csrf"))
                        else:
                            check_csrf(session, given.decode("latin-1"))
                return await handle(request, session)  # type: ignore[arg-type]
            except RelayforgeError as exc:
                if _wants_json(request):
                    return _json(exc.status, {"status": "error", "message": exc.message})
                return self._render(exc.status, "message.html", session, "/console",
                                    title="Not done", kind="error", message=exc.message,
                                    back="/console/overview")

        return guarded

    def _render(self, status: int, template: str, session: Session | None, here: str,
                response_headers: list[tuple[bytes, bytes]] | None = None,
                **context: Any) -> Response:
        role = session.actor.role if session else None
        html = self._env.get_template(template).render(
            role=role.value if role else None, csrf=session.csrf if session else "",
            nav=NAV, here=here, allowed=lambda needed: role is not None and role.allows(needed),
            job_states=JOB_STATES, delivery_states=DELIVERY_STATES, **context)
        return _html(status, html, response_headers)

    async def _known_tenants(self) -> list[uuid.UUID]:
        """For the tenant picker (a datalist: any other id can still be typed)."""
        return await self._stores.tenants.known(limit=MAX_PICKER_TENANTS)

    async def _form_of(self, request: Request) -> dict[str, str]:
        cached: dict[str, str] | None = getattr(request, "console_form", None)
        return cached if cached is not None else await _form(request)

    # ------------------------------------------------------------------ sign-in

    async def home(self, request: Request, session: None) -> Response:
        return _redirect("/console/overview")

    async def login_page(self, request: Request, session: None) -> Response:
        return self._render(200, "login.html", None, "/console/login", title="Sign in")

    async def login(self, request: Request, session: None) -> Response:
        key = (await _form(request)).get("key", "")
        try:
            token, _ = await self.sessions.sign_in(key)
        except RelayforgeError as exc:  # guessing keys costs the address its budget
            refusal = self._unverified.refusal(client_address(request), exc)
            if isinstance(refusal, RateLimited):
                return self._render(429, "login.html", None, "/console/login", title="Sign in",
                                    error="Too many attempts from your address; wait a "
                                          "minute and try again.",
                                    response_headers=[(b"Retry-After",
                                                       str(refusal.retry_after).encode())])
            return self._render(401, "login.html", None, "/console/login", title="Sign in",
                                error="That key is not valid.")
        return _redirect("/console/overview", [(b"Set-Cookie", self.sessions.cookie(token))])

    async def logout(self, request: Request, session: Session) -> Response:
        await self.sessions.sign_out(request.cookies.get(COOKIE))
        return _redirect("/console/login", [(b"Set-Cookie", self.sessions.cookie("", 0))])

    async def static(self, request: Request, session: None) -> Response:
        name = route_value(request, "asset")
        if name not in STATIC:
            raise NotFound("no such asset")
        data = importlib.resources.files("relayforge.console").joinpath("static", name)
        return Response(200, [(b"Cache-Control", b"max-age=300"),
                              (b"X-Content-Type-Options", b"nosniff")],
                        Content(STATIC[name], data.read_bytes()))

    async def csp_report(self, request: Request, session: None) -> Response:
        """Unauthenticated by nature (the browser sends it): bounded in size, and each one is
        charged to the address's unverified budget, so it can't flood the log."""
        refusal = self._unverified.charge(client_address(request))
        if refusal is not None:
            raise refusal
        report = await read_body(request, MAX_CSP_REPORT)
        metrics.CONSOLE_CSP_VIOLATIONS.inc()
        log.warning("console CSP violation reported",
                    extra={"report": report.decode("utf-8", "replace")})
        return Response(204)

    # ------------------------------------------------------------------ overview

    async def _overview_context(self) -> dict[str, Any]:
        s = self._stores
        lag, deliveries = await s.outbox.lag(), await s.deliveries.lag()
        minutes = await s.inbox.per_minute(minutes=60)
        accepted = [m.accepted for m in minutes]
        refused = [m.refused for m in minutes]
        counts = await s.jobs.counts()
        return {
            "jobs": {st: getattr(counts, st) for st in JOB_STATES},
            "deliveries": deliveries, "dead_deliveries": deliveries.dead_lettered,
            "lag": {"outbox_oldest": _age(lag.outbox_oldest_age),
                    "outbox_pending": lag.outbox_pending,
                    "oldest_waiting": _age(lag.oldest_waiting_age)},
            "chart": charts.per_minute(
                {"accepted": accepted, "refused": refused},
                "Webhooks accepted, and refused after their signature verified, per minute"),
            "totals": {"accepted": sum(accepted), "refused": sum(refused)},
        }

    async def overview(self, request: Request, session: Session) -> Response:
        return self._render(200, "overview.html", session, "/console/overview", title="Overview",
                            **await self._overview_context())

    async def overview_live(self, request: Request, session: Session) -> Response:
        return self._render(200, "overview_live.html", session, "/console/overview",
                            **await self._overview_context())

    # ------------------------------------------------------------------ events and jobs

    async def _job_list(self, request: Request, session: Session, dead: bool) -> Response:
        q = _query(request)
        here = "/console/dead-letters" if dead else "/console/jobs"
        f = _jobs_query(q)  # the admin API's query type: one set of bounds for both
        limit = PAGE
        jobs = await self._stores.jobs.list(
            limit=limit, status=JobStatus.DEAD_LETTERED if dead else given(f.status),
            tenant_id=given(f.tenant_id), source=lower(given(f.source)),
            event_type=given(f.event_type), provider_event_id=given(f.provider_event_id),
            since=instant(given(f.since), "since"), until=instant(given(f.until), "until"),
            cursor=given(f.cursor))
        filters = {k: v for k, v in q.items() if k != "cursor"}
        next_url = (f"{here}?{urlencode({**filters, 'cursor': str(jobs[-1].id)})}"
                    if len(jobs) == limit else None)
        return self._render(200, "jobs.html", session, here,
                            title="Dead letters" if dead else "Events and jobs", jobs=jobs,
                            q=q, dead=dead, filters=filters, next_url=next_url,
                            can_reprocess=session.actor.role.allows(OPERATOR),
                            tenants=await self._known_tenants())

    async def jobs(self, request: Request, session: Session) -> Response:
        return await self._job_list(request, session, dead=False)

    async def dead_letters(self, request: Request, session: Session) -> Response:
        return await self._job_list(request, session, dead=True)

    async def job(self, request: Request, session: Session) -> Response:
        job_id = path_uuid(request, "job_id")
        job = await self._stores.jobs.get(job_id=job_id)
        if job is None:
            raise NotFound("no such job")
        context = await self._stores.jobs.context(job_id=job_id)
        inbox = await self._stores.inbox.for_job(job_id=job_id, preview_bytes=BODY_PREVIEW)
        attempts = await self._stores.jobs.attempts_log(job_id=job_id)
        deliveries = []
        for d in await self._stores.deliveries.search(limit=100, tenant_id=None,
                                                      destination_id=None, job_id=job_id,
                                                      status=None, cursor=None):
            deliveries.append({**msgspec.structs.asdict(d), "attempts_log":
                               await self._stores.deliveries.attempts_log(delivery_id=d.id)})
        timeline = [TimelineItem(r.received_at, "request received (" + (
            "accepted" if r.accepted else f"refused: {r.rejection_code}") + ")", r.request_id)
            for r in inbox]
        timeline += [TimelineItem(a.finished_at, f"attempt {a.attempt} failed", a.error)
                     for a in attempts]
        timeline += [TimelineItem(e.created_at, f"{e.action.replace('_', ' ')} by {_who(e)}",
                                  None) for e in await self._stores.audit.for_job(job_id=job_id)]
        timeline.append(TimelineItem(job.updated_at, f"now {job.status}", None))
        timeline.sort(key=lambda item: item.at)
        rows = [{"id": r.id, "received_at": r.received_at, "request_id": r.request_id,
                 "accepted": r.accepted, "rejection_code": r.rejection_code,
                 "headers": r.headers, "body_text": _preview_text(r.body_preview, r.body_size),
                 "body_size": r.body_size,
                 "truncated": r.body_size is not None and r.body_size > BODY_PREVIEW}
                for r in inbox]
        return self._render(200, "job.html", session, "/console/jobs", title=f"Job {job.id}",
                            job=job, trace_id=context.trace_id,
                            correlation_id=context.correlation_id, inbox=rows,
                            timeline=timeline, deliveries=deliveries,
                            can_reprocess=session.actor.role.allows(OPERATOR))

    async def inbox_body(self, request: Request, session: Session) -> Response:
        """A request's whole body, streamed from the database a chunk at a time, each chunk
        held against the process's body budget (503 when it is spent) while it is sent."""
        inbox_id = path_uuid(request, "inbox_id")
        size = await self._stores.inbox.body_size(inbox_id=inbox_id)
        if size is None:
            raise NotFound("no such request, or its body was not kept")
        inbox, bodies = self._stores.inbox, self._bodies
        with bodies.holding() as probe:  # refuse now rather than fail mid-stream
            probe.take(min(size, BODY_CHUNK))

        async def chunks() -> AsyncIterator[bytes]:
            for offset in range(0, size, BODY_CHUNK):
                with bodies.holding() as held:
                    held.take(min(BODY_CHUNK, size - offset))
                    yield await inbox.body_chunk(inbox_id=inbox_id, offset=offset,
                                                 length=BODY_CHUNK)

        return Response(200, [*SECURITY_HEADERS, (b"Content-Disposition",
                                                  f'inline; filename="{inbox_id}.body"'.encode())],
                        StreamedContent(b"text/plain; charset=utf-8", chunks, size))

    async def job_status(self, request: Request, session: Session) -> Response:
        job_id = path_uuid(request, "job_id")
        state = await self._stores.jobs.state(job_id=job_id)
        if state is None:
            raise NotFound("no such job")
        return _json(200, {"status": state.status.value, "attempts": state.attempts,
                           "max_attempts": state.max_attempts,
                           "last_error": state.last_error})

    async def reprocess(self, request: Request, session: Session) -> Response:
        job_id = path_uuid(request, "job_id")
        await actions.reprocess_job(self._stores, self._settings, session.actor, job_id)
        if _wants_json(request):
            return _json(202, {"status": "pending", "message": "Reprocessing…"})
        return _redirect(f"/console/jobs/{job_id}")

    def _bulk_filters(self, values: dict[str, str]) -> dict[str, Any]:
        """The admin API's bulk filter type, from a console form or query."""
        f = convert_text({k: v for k, v in values.items() if k in BULK_FILTERS and v},
                         BulkReprocess, "form")
        return {"tenant_id": given(f.tenant_id), "source": lower(given(f.source)),
                "event_type": given(f.event_type)}

    async def confirm_bulk(self, request: Request, session: Session) -> Response:
        q = _query(request)
        count = await self._stores.jobs.dead_lettered_count(**self._bulk_filters(q))
        filters = {k: v for k, v in q.items() if k in ("tenant_id", "source", "event_type")}
        return self._render(200, "confirm.html", session, "/console/dead-letters",
                            title="Confirm", count=count, limit=actions.MAX_BULK, filters=filters,
                            extra=self._settings.worker.max_attempts, singular="job",
                            plural="jobs", action="/console/dead-letters/reprocess",
                            back="/console/dead-letters")

    async def reprocess_bulk(self, request: Request, session: Session) -> Response:
        form = await self._form_of(request)
        ids = await actions.reprocess_jobs(self._stores, self._settings, session.actor,
                                   limit=actions.MAX_BULK, **self._bulk_filters(form))
        return self._render(202, "message.html", session, "/console/dead-letters",
                            title="Reprocessing", kind="notice",
                            message=f"{len(ids)} job(s) are being reprocessed.",
                            back="/console/dead-letters")

    # ------------------------------------------------------------------ deliveries

    async def deliveries(self, request: Request, session: Session) -> Response:
        q = _query(request)
        tenant_id = _uuid(q.get("tenant_id"), "tenant id")
        destination_id = _uuid(q.get("destination_id"), "destination id")
        status = q.get("status") or None
        if status is not None and status not in DELIVERY_STATUSES:
            raise BadRequest(f"status: one of {', '.join(DELIVERY_STATUSES)}")
        cursor = _uuid(q.get("cursor"), "cursor")
        found = await self._stores.deliveries.search(
            limit=PAGE, tenant_id=tenant_id, destination_id=destination_id, job_id=None,
            status=status, cursor=cursor)
        filters = {k: v for k, v in q.items() if k != "cursor" and v}
        next_url = (f"/console/deliveries?{urlencode({**filters, 'cursor': str(found[-1].id)})}"
                    if len(found) == PAGE else None)
        return self._render(200, "deliveries.html", session, "/console/deliveries",
                            title="Deliveries", deliveries=found, q=q, next_url=next_url,
                            statuses=DELIVERY_STATUSES, tenants=await self._known_tenants(),
                            can_reprocess=session.actor.role.allows(OPERATOR),
                            filters={k: v for k, v in filters.items()
                                     if k in ("tenant_id", "destination_id")})

    def _delivery_filters(self, values: dict[str, str]) -> dict[str, uuid.UUID | None]:
        return {"tenant_id": _uuid(values.get("tenant_id"), "tenant id"),
                "destination_id": _uuid(values.get("destination_id"), "destination id")}

    async def confirm_deliveries(self, request: Request, session: Session) -> Response:
        filters = self._delivery_filters(_query(request))
        count = await self._stores.deliveries.dead_lettered_count(**filters)
        return self._render(200, "confirm.html", session, "/console/deliveries",
                            title="Confirm", count=count, limit=actions.MAX_BULK,
                            filters={k: str(v) for k, v in filters.items() if v},
                            extra=self._settings.worker.max_attempts, singular="delivery",
                            plural="deliveries", action="/console/deliveries/reprocess",
                            back="/console/deliveries")

    async def reprocess_deliveries(self, request: Request, session: Session) -> Response:
        filters = self._delivery_filters(await self._form_of(request))
        ids = await actions.reprocess_deliveries(self._stores, self._settings, session.actor,
                                                 limit=actions.MAX_BULK, **filters)
        return self._render(202, "message.html", session, "/console/deliveries",
                            title="Reprocessing", kind="notice",
                            message=f"{len(ids)} delivery(ies) are being reprocessed.",
                            back="/console/deliveries")

    async def delivery(self, request: Request, session: Session) -> Response:
        delivery_id = path_uuid(request, "delivery_id")
        found = await self._stores.deliveries.detail(delivery_id=delivery_id)
        if found is None:
            raise NotFound("no such delivery")
        return self._render(200, "delivery.html", session, "/console/deliveries",
                            title=f"Delivery {delivery_id}", d=found,
                            can_reprocess=session.actor.role.allows(OPERATOR))

    async def delivery_status(self, request: Request, session: Session) -> Response:
        found = await self._stores.deliveries.get(delivery_id=path_uuid(request, "delivery_id"))
        if found is None:
            raise NotFound("no such delivery")
        return _json(200, {"status": found.status, "attempts": found.attempts,
                           "max_attempts": found.max_attempts, "last_error": found.last_error})

    async def reprocess_delivery(self, request: Request, session: Session) -> Response:
        delivery_id = path_uuid(request, "delivery_id")
        await actions.reprocess_delivery(self._stores, self._settings, session.actor,
                                         delivery_id)
        if _wants_json(request):
            return _json(202, {"status": "pending", "message": "Reprocessing…"})
        return _redirect(f"/console/deliveries/{delivery_id}")

    # ------------------------------------------------------------------ destinations

    async def destinations(self, request: Request, session: Session) -> Response:
        return await self._destinations_page(
            session, _uuid(_query(request).get("tenant_id"), "tenant id"))

    async def _destinations_page(self, session: Session, tenant_id: uuid.UUID | None, *,
                                 new_secret: str | None = None,
                                 notice: str | None = None) -> Response:
        found, stats = [], {}
        if tenant_id is not None:
            found = await self._stores.destinations.of_tenant(tenant_id=tenant_id)
            stats = await self._stores.destinations.recent_stats(tenant_id=tenant_id)
        return self._render(200, "destinations.html", session, "/console/destinations",
                            title="Destinations", tenant_id=tenant_id, destinations=found,
                            stats=stats, new_secret=new_secret, notice=notice,
                            can_admin=session.actor.role.allows(ADMIN),
                            can_operate=session.actor.role.allows(OPERATOR),
                            tenants=await self._known_tenants())

    async def create_destination(self, request: Request, session: Session) -> Response:
        """The admin API's create, from a form: the same model and the same checks."""
        form = await self._form_of(request)
        tenant_id = _uuid(form.get("tenant_id"), "tenant id")
        if tenant_id is None:
            raise BadRequest("tenant id is required")
        text = {k: v.strip() for k, v in form.items() if k in DESTINATION_TEXT and v.strip()}
        body = convert_text(text, DestinationCreate, "form")  # digits, bounds, types
        objects = {k: _json_object(form.get(k, ""), k) for k in ("filter", "headers")
                   if form.get(k, "").strip()}
        if objects:
            body = convert_text({**text, **objects}, DestinationCreate, "form")
        created = await self._destination_api.add(session.actor, tenant_id, body)
        return await self._destinations_page(session, tenant_id,
                                             new_secret=created.signing_secret)

    async def edit_destination(self, request: Request, session: Session) -> Response:
        q = _query(request)
        tenant_id = _uuid(q.get("tenant_id"), "tenant id")
        destination_id = path_uuid(request, "destination_id")
        found = None if tenant_id is None else await self._stores.destinations.get(
            tenant_id=tenant_id, destination_id=destination_id)
        if found is None:
            raise NotFound("no such destination")
        return self._render(200, "destination_edit.html", session, "/console/destinations",
                            title=f"Edit destination {destination_id}", d=found,
                            filter_json=orjson.dumps(found.filter).decode())

    async def change_destination(self, request: Request, session: Session) -> Response:
        """The admin API's change, from the edit form: the same model and the same checks.
        A blank name or limit clears it; blank headers leave them as they are."""
        tenant_id, destination_id = await self._destination_form(request)
        form = await self._form_of(request)
        text = {k: v.strip() for k, v in form.items() if k in DESTINATION_TEXT and v.strip()}
        values: dict[str, Any] = {**text, **{k: None for k in CLEARABLE if k not in text}}
        values["filter"] = _json_object(form.get("filter", "").strip() or "{}", "filter")
        if form.get("headers", "").strip():
            values["headers"] = _json_object(form["headers"], "headers")
        body = convert_text(values, DestinationPatch, "form")
        await self._destination_api.change(session.actor, tenant_id, destination_id, body)
        return await self._destinations_page(session, tenant_id,
                                             notice=f"Destination {destination_id} changed.")

    async def recover_destination(self, request: Request, session: Session) -> Response:
        tenant_id, destination_id = await self._destination_form(request)
        since = instant((await self._form_of(request)).get("since") or None, "since")
        if since is None:
            raise BadRequest("since: required")
        if since.tzinfo is None:  # the form's local time is the console's: UTC
            since = since.replace(tzinfo=dt.UTC)
        recovered = await actions.recover_destination(
            self._stores, self._settings, session.actor, tenant_id, destination_id, since)
        return await self._destinations_page(session, tenant_id, notice=(
            f"{recovered.recovered} delivery(ies) that failed since {since:%Y-%m-%d %H:%M} UTC"
            " are being sent again."))

    async def test_destination(self, request: Request, session: Session) -> Response:
        tenant_id, destination_id = await self._destination_form(request)
        sent = await actions.send_test_event(self._stores, self._settings, self._cipher,
                                             session.actor, tenant_id, destination_id)
        a = sent.attempt
        said = f"HTTP {a.status_code}" if a.status_code is not None else (a.error or "no answer")
        return await self._destinations_page(session, tenant_id, notice=(
            f"Test event {sent.webhook_id}: {'delivered' if sent.delivered else 'not delivered'}"
            f" ({said}, {a.duration_ms:.0f} ms)."))

    async def _destination_form(self, request: Request) -> tuple[uuid.UUID, uuid.UUID]:
        form = await self._form_of(request)
        tenant_id = _uuid(form.get("tenant_id"), "tenant id")
        destination_id = _uuid(route_value(request, "destination_id"), "destination id")
        if tenant_id is None or destination_id is None:
            raise BadRequest("tenant id and destination id are required")
        return tenant_id, destination_id

    async def enable(self, request: Request, session: Session) -> Response:
        tenant_id, destination_id = await self._destination_form(request)
        await actions.set_destination_enabled(self._stores, session.actor, tenant_id,
                                          destination_id, True)
        return _redirect(f"/console/destinations?tenant_id={tenant_id}")

    async def disable(self, request: Request, session: Session) -> Response:
        tenant_id, destination_id = await self._destination_form(request)
        await actions.set_destination_enabled(self._stores, session.actor, tenant_id,
                                          destination_id, False)
        return _redirect(f"/console/destinations?tenant_id={tenant_id}")

    async def pause(self, request: Request, session: Session) -> Response:
        tenant_id, destination_id = await self._destination_form(request)
        await actions.pause_destination(self._stores, session.actor, tenant_id, destination_id,
                                        True)
        return _redirect(f"/console/destinations?tenant_id={tenant_id}")

    async def resume(self, request: Request, session: Session) -> Response:
        tenant_id, destination_id = await self._destination_form(request)
        await actions.pause_destination(self._stores, session.actor, tenant_id, destination_id,
                                        False)
        return _redirect(f"/console/destinations?tenant_id={tenant_id}")

    async def rotate_destination_secret(self, request: Request, session: Session) -> Response:
        tenant_id, destination_id = await self._destination_form(request)
        rotated = await actions.rotate_destination_secret(
            self._stores, self._cipher, session.actor, tenant_id, destination_id,
            overlap_seconds=86_400)
        return await self._destinations_page(session, tenant_id,
                                             new_secret=rotated.signing_secret)

    # ------------------------------------------------------------------ secrets and keys

    async def secrets(self, request: Request, session: Session) -> Response:
        q = _query(request)
        tenant_id = _uuid(q.get("tenant_id"), "tenant id")
        provider = _lower_text(q.get("provider"), "source")
        found = []
        if tenant_id is not None and provider is not None:
            found = await self._stores.secrets.list(tenant_id=tenant_id, provider=provider)
        return self._render(200, "secrets.html", session, "/console/secrets", title="Secrets",
                            tenant_id=tenant_id, provider=provider, secrets=found,
                            tenants=await self._known_tenants())

    async def rotate_secret(self, request: Request, session: Session) -> Response:
        form = await self._form_of(request)
        tenant_id = _uuid(form.get("tenant_id"), "tenant id")
        provider = _lower_text(form.get("provider"), "source")
        if tenant_id is None or not provider:
            raise BadRequest("tenant id and source are required")
        fields = {"secret": form.get("secret", "")}
        if form.get("previous_expires_in_seconds"):
            fields["previous_expires_in_seconds"] = form["previous_expires_in_seconds"]
        body = convert_text(fields, SecretPut, "form")  # the API's own bounds and overlap
        await actions.set_secret(self._stores, self._cipher, self._settings, session.actor,
                                 tenant_id=tenant_id, provider=provider, secret=body.secret,
                                 previous_expires_in_seconds=body.previous_expires_in_seconds)
        return _redirect("/console/secrets?" + urlencode({"tenant_id": tenant_id,
                                                          "provider": provider}))

    async def retire_secret(self, request: Request, session: Session) -> Response:
        form = await self._form_of(request)
        tenant_id = _uuid(form.get("tenant_id"), "tenant id")
        secret_id = _uuid(form.get("secret_id"), "secret id")
        provider = _lower_text(form.get("provider"), "source")
        if tenant_id is None or secret_id is None or not provider:
            raise BadRequest("tenant id, source and secret id are required")
        await actions.retire_secret(self._stores, session.actor, tenant_id=tenant_id,
                                    provider=provider, secret_id=secret_id)
        return _redirect("/console/secrets?" + urlencode({"tenant_id": tenant_id,
                                                          "provider": provider}))

    async def api_keys(self, request: Request, session: Session,
                       created: Any = None) -> Response:
        return self._render(200, "api_keys.html", session, "/console/api-keys", title="API keys",
                            keys=await self._stores.api_keys.list(), created=created)

    async def create_key(self, request: Request, session: Session) -> Response:
        form = await self._form_of(request)
        body = convert_text({"role": form.get("role", ""), "name": form.get("name", "")},
                            ApiKeyCreate, "form")
        created = await actions.create_key(self._stores, session.actor, body.role, body.name)
        return await self.api_keys(request, session, created=created)

    async def revoke_key(self, request: Request, session: Session) -> Response:
        key_id = path_uuid(request, "key_id")
        await actions.revoke_key(self._stores, session.actor, key_id)
        return _redirect("/console/api-keys")

    async def audit(self, request: Request, session: Session) -> Response:
        q = _query(request)
        cursor = q.get("cursor")
        if cursor and not (cursor.isascii() and cursor.isdigit() and len(cursor) <= 18):
            raise BadRequest("cursor must be an audit entry's number")
        before = int(cursor) if cursor else None
        entries = await self._stores.audit.list(limit=PAGE, before=before)
        next_url = (f"/console/audit?cursor={entries[-1].id}" if len(entries) == PAGE else None)
        return self._render(200, "audit.html", session, "/console/audit", title="Audit log",
                            entries=entries, next_url=next_url)


__all__ = ["ROUTES", "Console"]
