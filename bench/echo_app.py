"""The ceiling the ingest benchmark measures against: a bare BlackSheep app on Granian (same
worker count, uvloop) that reads the body and answers 202 with a small JSON body, like ingest."""

from blacksheep import Application, Content, Request, Response

app = Application()
ACCEPTED = b'{"accepted":true}'


@app.router.post("/webhooks/{source}")
async def receive(request: Request) -> Response:
    await request.read()
    return Response(202, None, Content(b"application/json", ACCEPTED))
