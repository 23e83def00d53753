"""Request bodies: a deadline for each, what a handler left unread drained before the answer,
and a bounded read for the routes that take small bodies."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from blacksheep import Request
from blacksheep.contents import ASGIContent
from blacksheep.exceptions import MessageAborted

from relayforge.errors import Overloaded, PayloadTooLarge, RequestTimeout
from relayforge.security.limits import Held

# What a handler left of a body unread (a refusal decided before the body arrived) is read and
# dropped before the answer, up to this many bytes and seconds; past them the answer closes
# the connection instead.
DRAIN_BYTES = 1 << 20
DRAIN_SECONDS = 5.0


class _BodyReceipt:
    """The request's ASGI `receive`, with a deadline for the body and a note of when all of
    it has arrived.

    The deadline (SERVER__BODY_READ_TIMEOUT_MS): a client that declares a body and sends it
    slowly or never would otherwise hold its connection slot, and what it sent of the body
    budget, for as long as it likes. Past it the read raises RequestTimeout (408).

    The note: the HTTP server closes a keep-alive connection whose request body was not read
    to the end, and when it does so after the answer went out, the answer does not say so: a
    client that reuses the connection at that moment loses its next request. So whatever a
    handler leaves unread is drained before the answer, or the answer says
    `Connection: close`."""

    __slots__ = ("receive", "remaining", "done", "_task", "_timer", "_waiting", "_expired")

    def __init__(self, receive: Callable[[], Awaitable[dict[str, object]]],
                 declared: int | None, timeout: float) -> None:
        self.receive = receive
        self.remaining = declared  # None: chunked, done only at the last message
        self.done = False
        # One get_running_loop() (a getpid() system call on Python 3.11) per request, not two:
        # current_task() makes its own unless given the loop.
        loop = asyncio.get_running_loop()
        self._task = asyncio.current_task(loop)
        self._timer = loop.call_later(timeout, self._expire)
        self._waiting = False
        self._expired = False

    def _expire(self) -> None:
        self._expired = True
        if self._waiting and self._task is not None:  # parked in receive(): nowhere else
            self._task.cancel()

    async def __call__(self) -> dict[str, object]:
        if self._expired:
            raise RequestTimeout("the request body did not arrive in time")
        self._waiting = True
        try:
            message = await self.receive()
        except asyncio.CancelledError:
            if self._expired and self._task is not None and self._task.uncancel() == 0:
                raise RequestTimeout("the request body did not arrive in time") from None
            raise  # the server's own cancellation (shutdown)
        finally:
            self._waiting = False
        body = message.get("body", b"")
        if self.remaining is not None and isinstance(body, bytes):
            self.remaining -= len(body)
            if self.remaining <= 0:  # all declared bytes are in: the server needs no more
                self._arrived()
        if not message.get("more_body", False):
            self._arrived()
        return message

    def _arrived(self) -> None:
        self.done = True
        self._timer.cancel()

    async def finish(self) -> bool:
        """Drain what the handler left unread; False if the connection must close instead."""
        if self.done:
            return True
        self._timer.cancel()  # the drain has a shorter bound of its own
        if self._expired or (self.remaining is not None and self.remaining > DRAIN_BYTES):
            return False
        self._timer = asyncio.get_running_loop().call_later(DRAIN_SECONDS, self._expire)
        seen = 0
        try:
            while not self.done:
                message = await self()
                if message.get("type") == "http.disconnect":
                    return False
                body = message.get("body", b"")
                seen += len(body) if isinstance(body, bytes) else 0
                if seen > DRAIN_BYTES:
                    return False
        except RequestTimeout:
            return False
        finally:
            self._timer.cancel()
        return True


def track_body(request: Request, timeout: float) -> _BodyReceipt | None:
    """A receipt for a request that has a body (none for GETs: nothing to track)."""
    content = request.content
    if not isinstance(content, ASGIContent) or content.receive is None:
        return None
    length = request.get_first_header(b"content-length")
    if length is None:
        if request.get_first_header(b"transfer-encoding") is None:
            return None
        declared = None
    elif length.isdigit():
        declared = int(length)
        if declared == 0:
            return None
    else:
        return None  # the server refuses a malformed length before we run
    receipt = _BodyReceipt(content.receive, declared, timeout)
    request.content = ASGIContent(receipt)  # its `receive` is read-only
    return receipt


async def read_body(request: Request, limit: int, held: Held | None = None) -> bytes:
    """The whole body, at most `limit` bytes of it in memory (request.read() would take any
    size); with `held`, its bytes are charged to the process's body budget as they arrive.
    An oversized body is read and dropped up to DRAIN_BYTES past the limit before the 413, so a
    client still sending gets the answer instead of a reset connection; one declared larger
    than that is refused at once (and the answer closes the connection)."""
    declared = request.get_first_header(b"content-length")
    if declared is not None and declared.isdigit():
        length = int(declared)
        if length > limit + DRAIN_BYTES:
            raise PayloadTooLarge(f"body exceeds {limit} bytes")
        if length <= limit:  # framed by the server: never more than declared
            return await _read_declared(request, length, held)
    chunks: list[bytes] = []
    size = 0
    # also bounds chunked bodies with no length (BlackSheep's stub mistypes stream())
    async for chunk in request.stream():  # type: ignore[attr-defined]
        size += len(chunk)
        if size > limit + DRAIN_BYTES:
            break
        if size <= limit and chunk:
            if held is not None:
                held.take(len(chunk))
            chunks.append(chunk)
    if size > limit:
        raise PayloadTooLarge(f"body exceeds {limit} bytes")
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def _read_declared(request: Request, length: int, held: Held | None) -> bytes:
    """A body framed by its Content-Length, from the ASGI channel itself: done once `length`
    bytes are in. request.read() would wait for the server's empty end-of-body message too,
    one more round trip to its I/O thread per request (about a fifth of a bare app's CPU per
    request). Fewer bytes than declared and no more coming: what arrived, as read() gives.

    The budget is charged as the bytes arrive, not for the declared length up front: a client
    that declares a body and never sends it holds none of the budget (it used to take it all
    with a few such connections, and every other webhook was refused)."""
    content = request.content
    if not isinstance(content, ASGIContent):  # not from an ASGI server: its own reader
        body = await request.read() or b""
        if held is not None:
            held.take(len(body))
        return body
    receive = content.receive
    chunks: list[bytes] = []
    size = 0
    while size < length:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise MessageAborted()  # type: ignore[no-untyped-call]  # its stub lacks "-> None"
        chunk = message.get("body", b"")
        size += len(chunk)
        if held is not None:
            try:
                held.take(len(chunk))
            except Overloaded:  # the rest read and dropped, so the client hears the 503
                chunks.clear()  # given back at once, for the requests still reading
                held.release()
                if size < length and message.get("more_body", False):
                    await _discard(request, length - size)
                raise
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def _discard(request: Request, at_most: int) -> None:
    """Read a body without keeping it (a refused request's, so its client gets the answer)."""
    seen = 0
    async for chunk in request.stream():  # type: ignore[attr-defined]
        seen += len(chunk)
        if seen >= at_most:
            break
