"""A real HTTP receiver for delivery tests: an aiohttp server on 127.0.0.1 in the test's event
loop, recording every request and answering as the test scripts it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    at: float  # time.monotonic()


@dataclass
class Reply:
    status: int = 200
    body: str = "ok"
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds before answering (a hanging service: longer than the timeout)
    stall: float = 0.0  # seconds the body stops after its first byte, the status long sent


class Receiver:
    """`script(request_number, received) -> Reply`, per path; 200 when none is given."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.scripts: dict[str, Callable[[int, Received], Reply]] = {}
        self.url = ""
        self._runner: web.AppRunner | None = None
        self._arrived = asyncio.Event()
        self.active: dict[str, int] = {}  # requests in progress, per path
        self.most_active: dict[str, int] = {}  # the most at once, per path

    async def start(self) -> Receiver:
        app = web.Application(client_max_size=2**22)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def at(self, path: str) -> list[Received]:
        return [r for r in self.received if r.path == path]

    async def wait_for(self, path: str, count: int, timeout: float = 30.0) -> list[Received]:
        """Until `count` requests reached `path`, repeats included."""
        await self._wait(lambda: len(self.at(path)) >= count, timeout,
                         lambda: f"{path}: {len(self.at(path))} of {count} requests arrived")
        return self.at(path)

    async def wait_for_each(self, path: str, header: str, values: list[str],
                            timeout: float = 30.0) -> list[Received]:
        """Until a request carrying each of `values` in `header` reached `path`: a delivery sent
        twice under faults counts once, so repeats cannot stand in for one still to come."""
        def missing() -> set[str]:
            return set(values) - {r.headers.get(header) for r in self.at(path)}
        await self._wait(lambda: not missing(), timeout,
                         lambda: f"{path}: {len(missing())} of {len(values)} never arrived")
        return self.at(path)

    async def _wait(self, done: Callable[[], bool], timeout: float,
                    failure: Callable[[], str]) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() > deadline:
                raise AssertionError(failure())
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), 0.2)
            except TimeoutError:
                pass

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        got = Received(request.path, {k.lower(): v for k, v in request.headers.items()},
                       await request.read(), time.monotonic())
        self.received.append(got)
        self._arrived.set()
        script = self.scripts.get(request.path)
        reply = script(len(self.at(request.path)), got) if script else Reply()
        path = request.path
        self.active[path] = self.active.get(path, 0) + 1
        self.most_active[path] = max(self.most_active.get(path, 0), self.active[path])
        try:
            if reply.delay:
                await asyncio.sleep(reply.delay)
            if not reply.stall:
                return web.Response(status=reply.status, text=reply.body, headers=reply.headers)
            body = reply.body.encode()
            stalled = web.StreamResponse(status=reply.status, headers=reply.headers)
            stalled.content_length = len(body)
            await stalled.prepare(request)
            await stalled.write(body[:1])
            await asyncio.sleep(reply.stall)
            await stalled.write(body[1:])
            await stalled.write_eof()
            return stalled
        finally:
            self.active[path] -= 1
