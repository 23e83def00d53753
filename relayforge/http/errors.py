"""JSON responses, and the one mapping from RelayforgeError to the contract's error body."""

from __future__ import annotations

from typing import Any

import msgspec
import orjson
from blacksheep import Content, Response

from relayforge.errors import MethodNotAllowed, RelayforgeError, Unauthorized

JSON = b"application/json"
_encoder = msgspec.json.Encoder()


def json_response(status: int, doc: Any,
                  headers: list[tuple[bytes, bytes]] | None = None) -> Response:
    return Response(status, headers, Content(JSON, orjson.dumps(doc)))


def view_response(status: int, view: msgspec.Struct) -> Response:
    """A typed view (relayforge/models.py) as JSON."""
    return Response(status, None, Content(JSON, _encoder.encode(view)))


def error_response(exc: RelayforgeError) -> Response:
    doc: dict[str, Any] = {"error": exc.message, "code": exc.code}
    if exc.inbox_id is not None:
        doc["inbox_id"] = str(exc.inbox_id)
        doc["accepted"] = False
    if exc.signature_valid is not None:
        doc["signature_valid"] = exc.signature_valid
    headers = []
    if isinstance(exc, Unauthorized):
        headers.append((b"WWW-Authenticate", b'Bearer realm="relayforge-admin"'))
    if isinstance(exc, MethodNotAllowed):
        headers.append((b"Allow", ", ".join(exc.allow).encode()))
    if exc.retry_after is not None:
        headers.append((b"Retry-After", str(exc.retry_after).encode()))
    return json_response(exc.status, doc, headers)
