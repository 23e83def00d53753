"""The SSRF guard: destinations may not point into the network Relayforge runs in.

URLs must be https (or http outside production). Loopback, private, link-local (169.254.0.0/16,
the cloud metadata address included), multicast, reserved and unspecified addresses are refused
when a destination is written and again at connect time, after DNS resolution: the connection
goes to the address that was checked, so a name that rebinds to 127.0.0.1 can't slip through.
DESTINATIONS__ALLOW_PRIVATE_NETWORKS=true lifts the address check (local development).
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

MAX_URL_LENGTH = 2048


class ForbiddenDestination(ValueError):
    """A URL or address a destination may not use; the message says why."""


def refused_reason(address: str) -> str | None:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    for reason, hit in (("loopback", ip.is_loopback), ("unspecified", ip.is_unspecified),
                        ("link-local", ip.is_link_local), ("multicast", ip.is_multicast),
                        ("private", ip.is_private), ("reserved", ip.is_reserved)):
        if hit:
            return f"{address} is not allowed ({reason} address)"
    return None


def _ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def check_url(url: str, *, production: bool, allow_private: bool) -> str:
    """The URL if a destination may use it; else ForbiddenDestination saying why."""
    if len(url) > MAX_URL_LENGTH:
        raise ForbiddenDestination(f"url is longer than {MAX_URL_LENGTH} characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ForbiddenDestination(f"url is not a valid URL ({exc})") from None
    allowed = ("https",) if production else ("https", "http")
    if parts.scheme not in allowed:
        raise ForbiddenDestination(f"url must use {' or '.join(allowed)}")
    host = parts.hostname
    if not host:
        raise ForbiddenDestination("url has no host")
    if parts.username is not None or parts.password is not None:
        raise ForbiddenDestination("url may not carry credentials (send them as custom headers)")
    if any(c in url for c in " \r\n\t\x00"):
        raise ForbiddenDestination("url contains whitespace or control characters")
    del port
    if allow_private:
        return url
    if host.rstrip(".").lower() in ("localhost",) or host.lower().endswith(".localhost"):
        raise ForbiddenDestination(f"{host} is not allowed (loopback name)")
    if _ip_literal(host):
        reason = refused_reason(host)
        if reason:
            raise ForbiddenDestination(reason)
    return url


def check_connect_host(host: str, allow_private: bool) -> None:
    """For a URL whose host is an address literal (no resolver runs for those)."""
    if not allow_private and _ip_literal(host):
        reason = refused_reason(host)
        if reason:
            raise ForbiddenDestination(reason)


class GuardedResolver(AbstractResolver):
    """DNS for the delivery client: every address a name resolves to is checked, and only the
    allowed ones are given to the connector (which connects to exactly those)."""

    def __init__(self, allow_private: bool) -> None:
        self._inner = DefaultResolver()
        self._allow_private = allow_private

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        if self._allow_private:
            return results
        allowed = [r for r in results if refused_reason(r["host"]) is None]
        if not allowed:
            reasons = "; ".join(filter(None, (refused_reason(r["host"]) for r in results)))
            raise ForbiddenDestination(f"{host} resolves only to refused addresses ({reasons})")
        return allowed

    async def close(self) -> None:
        await self._inner.close()


def resolver_kwargs(allow_private: bool) -> dict[str, Any]:
    return {"resolver": GuardedResolver(allow_private)}
