"""The SSRF guard: destinations may not point into the network Relayforge runs in.

URLs must be https (or http outside production). The host is checked exactly as the HTTP client
will use it: parsed by yarl, as aiohttp parses it, so IDNA and Unicode normalisation have
already happened (`①②⑦.⓪.⓪.①`, `１２７.０.０.１` and `127。0。0。1` are all 127.0.0.1 by then). A
host that is an IP literal is checked as that address, and so is every IPv4 address embedded
in an IPv6 one (IPv4-mapped, IPv4-compatible, 6to4, Teredo, NAT64). Refused: loopback,
RFC 1918 and every other non-global range (100.64.0.0/10 included), link-local (the cloud
metadata address included), multicast, reserved and unspecified addresses; `localhost` names;
IPv4 written any other way than dotted decimal (`2130706433`, `0x7f.1`, `0177.0.0.1`, `127.1`),
which resolvers read as addresses. The check runs when a destination is written and again at
connect time, after DNS resolution: the connection goes to the address that was checked, so a
name that rebinds to 127.0.0.1 can't slip through. DESTINATIONS__ALLOW_PRIVATE_NETWORKS=true
lifts the address check (local development), never the other rules.
"""

from __future__ import annotations

import ipaddress
import re
import socket

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from yarl import URL

MAX_URL_LENGTH = 2048
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_LOCAL_NAT64 = ipaddress.ip_network("64:ff9b:1::/48")  # RFC 8215: local use only
# WHATWG URL: a host whose last label is a number is an IPv4 address in some notation.
_NUMERIC_LABEL = re.compile(r"(0[xX][0-9a-fA-F]*|[0-9]+)")


class ForbiddenDestination(ValueError):
    """A URL or address a destination may not use; the message says why."""


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address carries, which is where a packet to it may go."""
    found = [ip.ipv4_mapped, ip.sixtofour, *(ip.teredo or ())]
    value = int(ip)
    if ip in _NAT64 or value >> 32 == 0:  # NAT64, or IPv4-compatible (::a.b.c.d)
        found.append(ipaddress.IPv4Address(value & 0xFFFFFFFF))
    return [a for a in found if a is not None]


def _why(ip: Address) -> str | None:
    for reason, hit in (("loopback", ip.is_loopback), ("unspecified", ip.is_unspecified),
                        ("link-local", ip.is_link_local), ("multicast", ip.is_multicast),
                        ("private", ip.is_private), ("reserved", ip.is_reserved),
                        ("not globally routable", not ip.is_global)):
        if hit:
            return reason
    return None


def refused_reason(address: str) -> str | None:
    """Why a destination may not connect to this IP address, or None."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    candidates: list[Address] = [ip]  # or, for IPv6, the IPv4 addresses it carries
    if isinstance(ip, ipaddress.IPv6Address):
        if ip in _LOCAL_NAT64:
            return f"{address} is not allowed (local-use NAT64 address)"
        embedded = _embedded_ipv4(ip)
        if embedded and not ip.is_loopback and not ip.is_unspecified:
            candidates = list(embedded)  # judged by where it leads (:: and ::1 are judged as such)
    for candidate in candidates:
        reason = _why(candidate)
        if reason:
            shown = address if candidate == ip else f"{address} ({candidate})"
            return f"{shown} is not allowed ({reason} address)"
    return None


def _ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True


def refused_host(host: str, allow_private: bool) -> str | None:
    """Why a destination may not use this host (as the HTTP client will see it), or None."""
    name = host.rstrip(".").lower()
    if not name:
        return "url has no host"
    if _NUMERIC_LABEL.fullmatch(name.rsplit(".", 1)[-1]) and not _ip_literal(name):
        return f"{host} is not allowed (an IPv4 address must be written in dotted decimal)"
    if allow_private:
        return None
    if name == "localhost" or name.endswith(".localhost"):
        return f"{host} is not allowed (loopback name)"
    if _ip_literal(name):
        return refused_reason(name)
    return None


def parse_url(url: str, *, production: bool, allow_private: bool) -> URL:
    """The URL as the HTTP client will use it, if a destination may; else ForbiddenDestination
    saying why."""
    if len(url) > MAX_URL_LENGTH:
        raise ForbiddenDestination(f"url is longer than {MAX_URL_LENGTH} characters")
    if any(c in url for c in " \r\n\t\x00"):
        raise ForbiddenDestination("url contains whitespace or control characters")
    try:
        parsed = URL(url)
        host = parsed.raw_host
        parsed.port  # noqa: B018  (an out-of-range port raises here)
    except (ValueError, TypeError, UnicodeError) as exc:
        raise ForbiddenDestination(f"url is not a valid URL ({exc})") from None
    allowed = ("https",) if production else ("https", "http")
    if parsed.scheme not in allowed:
        raise ForbiddenDestination(f"url must use {' or '.join(allowed)}")
    if not host:
        raise ForbiddenDestination("url has no host")
    if parsed.raw_user is not None or parsed.raw_password is not None:
        raise ForbiddenDestination("url may not carry credentials (send them as custom headers)")
    reason = refused_host(host, allow_private)
    if reason:
        raise ForbiddenDestination(reason)
    return parsed


def check_url(url: str, *, production: bool, allow_private: bool) -> str:
    """The URL, as given, if a destination may use it; else ForbiddenDestination saying why."""
    parse_url(url, production=production, allow_private=allow_private)
    return url


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
