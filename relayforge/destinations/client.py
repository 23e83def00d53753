"""The HTTP call of one delivery attempt: aiohttp with pooled keep-alive connections, through
the SSRF guard's resolver, no redirects followed, at most 64 KiB of the answer read, all of it
within the destination's timeout."""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass

import aiohttp

from relayforge.destinations.guard import ForbiddenDestination, GuardedResolver, parse_url

MAX_RESPONSE_READ = 65536
RESPONSE_KEPT = 1024
MAX_RETRY_AFTER_SECONDS = 3600.0
MAX_CACHED_URLS = 10_000


@dataclass(frozen=True, slots=True)
class Answer:
    """What came back: a status and the start of the body, or the error that stopped it."""

    status: int | None
    error: str | None
    body: str | None
    duration_ms: float
    retry_after: float | None

    @property
    def succeeded(self) -> bool:
        """A 2xx: the service took it."""
        return self.status is not None and 200 <= self.status < 300


def retry_after_seconds(value: str | None) -> float | None:
    """Retry-After in seconds (delta-seconds form; an HTTP date is read as one minute)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), MAX_RETRY_AFTER_SECONDS)
    return 60.0


class DeliveryClient:
    def __init__(self, allow_private: bool, production: bool = False) -> None:
        self._allow_private = allow_private
        self._production = production
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(
            resolver=GuardedResolver(self._allow_private), limit=0, limit_per_host=0,
            ttl_dns_cache=30, enable_cleanup_closed=True)
        self._session = aiohttp.ClientSession(
            connector=connector, auto_decompress=False, skip_auto_headers=("User-Agent",),
            cookie_jar=aiohttp.DummyCookieJar())

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def post(self, url: str, body: bytes, headers: dict[str, str],
                   timeout_ms: int) -> Answer:
        assert self._session is not None
        started = time.perf_counter()
        try:
            target = _checked_url(url, production=self._production,
                                  allow_private=self._allow_private)
            # one timer for all of it, aiohttp's: connecting, sending, and reading the answer
            async with self._session.post(target, data=body, headers=headers,
                                          allow_redirects=False,
                                          timeout=_timeout(timeout_ms)) as response:
                raw = await _read_some(response)
                return Answer(response.status, None, raw[:RESPONSE_KEPT].decode(
                    "utf-8", "replace"), _ms(started),
                    retry_after_seconds(response.headers.get("Retry-After")))
        except TimeoutError:  # (aiohttp's timeouts are TimeoutErrors)
            return Answer(None, f"timed out after {timeout_ms} ms", None, _ms(started), None)
        except ForbiddenDestination as exc:
            return Answer(None, f"refused by the SSRF guard: {exc}", None, _ms(started), None)
        except aiohttp.ClientConnectorError as exc:
            cause = exc.os_error
            if isinstance(cause, ForbiddenDestination):
                return Answer(None, f"refused by the SSRF guard: {cause}", None, _ms(started),
                              None)
            return Answer(None, f"connection failed: {exc}", None, _ms(started), None)
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            return Answer(None, f"{type(exc).__name__}: {exc}"[:500], None, _ms(started), None)


# The URL checked as parsed, and that parse is what connects: an IP literal reaches no resolver,
# so this is its only check. The same every attempt, so kept per URL; lru_cache keeps no
# exception, so a refused URL is checked again.
_checked_url = functools.lru_cache(maxsize=MAX_CACHED_URLS)(parse_url)


@functools.lru_cache(maxsize=1024)
def _timeout(timeout_ms: int) -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(total=timeout_ms / 1000)


async def _read_some(response: aiohttp.ClientResponse) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while size < MAX_RESPONSE_READ:
        chunk = await response.content.read(MAX_RESPONSE_READ - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)
