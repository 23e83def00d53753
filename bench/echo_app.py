"""The ceiling the ingest benchmark measures against: a bare BlackSheep app on Granian (same
worker count, uvloop) that reads the body and answers 202 with a small JSON body, like ingest.

The delivery benchmarks use it as the receiver; `/timed` also keeps, per request, the seconds
since the `data.sent_at` (unix time) of its JSON body, read back with `GET /timed`."""

import time

import orjson
from blacksheep import Application, Content, Request, Response

app = Application()
ACCEPTED = b'{"accepted":true}'
delays: list[float] = []


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
