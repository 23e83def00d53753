"""The ceiling the ingest benchmark measures against: a bare BlackSheep app on Granian (same
worker count, uvloop) that reads the body and answers 202 with a small JSON body, like ingest.

The delivery benchmarks use it as the receiver; `/timed` also keeps, per request, the seconds
since the `data.sent_at` (unix time) of its JSON body, read back with `GET /timed`; `/slow`
answers after SLOW_SECONDS and `GET /slow` says how many requests it held at most at once."""

import asyncio
import time

import orjson
from blacksheep import Application, Content, Request, Response

app = Application()
ACCEPTED = b'{"accepted":true}'
delays: list[float] = []
SLOW_SECONDS = 2.0
slow = {"in_flight": 0, "max_in_flight": 0, "answered": 0}


@app.router.post("/webhooks/{source}")
async def receive(request: Request) -> Response:
    await request.read()
    return Response(202, None, Content(b"application/json", ACCEPTED))


@app.router.post("/timed")
async def timed(request: Request) -> Response:
    body = await request.read()
    sent_at = orjson.loads(body or b"{}").get("data", {}).get("sent_at", time.time())
    delays.append(time.time() - sent_at)
    return Response(202, None, Content(b"application/json", ACCEPTED))


@app.router.get("/timed")
async def timed_delays() -> Response:
    return Response(200, None, Content(b"application/json", orjson.dumps(delays)))


@app.router.post("/slow")
async def slow_answer(request: Request) -> Response:
    await request.read()
    slow["in_flight"] += 1
    slow["max_in_flight"] = max(slow["max_in_flight"], slow["in_flight"])
    try:
        await asyncio.sleep(SLOW_SECONDS)
    finally:
        slow["in_flight"] -= 1
    slow["answered"] += 1
    return Response(202, None, Content(b"application/json", ACCEPTED))


@app.router.get("/slow")
async def slow_counts() -> Response:
    return Response(200, None, Content(b"application/json", orjson.dumps(slow)))

