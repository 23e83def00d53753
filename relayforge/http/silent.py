"""Connections that never send a byte are closed after SERVER__HEADER_READ_TIMEOUT_MS.

The HTTP server (Granian, on hyper) starts its header-read timer at a request's first byte, so a
connection that opens and stays silent was held forever: 17,500 of them from one client took
every connection slot and /healthz stopped answering. The kernel keeps, for every socket, how
many bytes it has received and how long ago it last received any (since it was accepted, when
it never has). A sweep over this process's own descriptors every quarter of the timeout shuts
down each accepted connection on the server's port that has received nothing for longer than the
timeout: the server's pending read then ends and it drops the connection (the descriptor stays
the server's to close). A connection that sent anything is the server's timer's business.

Linux only (TCP_INFO with tcpi_bytes_received, Linux 4.1+); elsewhere the sweep is off and
says so once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import struct

from relayforge.observability import metrics

log = logging.getLogger(__name__)

FD_DIR = "/proc/self/fd"
# struct tcp_info (linux/tcp.h): the offsets of the two fields read, and the bytes up to the end
# of the second.
_LAST_DATA_RECV = struct.Struct("=I")  # ms since data was last received
_LAST_DATA_RECV_AT = 52
_BYTES_RECEIVED = struct.Struct("=Q")  # tcpi_bytes_received
_BYTES_RECEIVED_AT = 128
_TCP_INFO_SIZE = _BYTES_RECEIVED_AT + _BYTES_RECEIVED.size
_ESTABLISHED = 1
_YIELD_EVERY = 256  # descriptors looked at between two turns of the event loop


def silent_for_ms(sock: socket.socket) -> int | None:
    """How long an established connection has been open without receiving a byte, or None when
    it has received some (or is no TCP connection)."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_SIZE)
    if len(info) < _TCP_INFO_SIZE or info[0] != _ESTABLISHED:
        return None
    if _BYTES_RECEIVED.unpack_from(info, _BYTES_RECEIVED_AT)[0]:
        return None
    return int(_LAST_DATA_RECV.unpack_from(info, _LAST_DATA_RECV_AT)[0])


class SilentConnections:
    """Finds and shuts down the server's connections that have been silent since they opened."""

    def __init__(self, port: int, timeout_ms: int) -> None:
        self.port = port
        self.timeout_ms = timeout_ms
        self.interval = max(timeout_ms / 4000, 0.1)

    @staticmethod
    def supported() -> bool:
        return os.path.isdir(FD_DIR) and hasattr(socket, "TCP_INFO")

    async def run(self) -> None:
        if not self.supported():
            log.warning("silent connections are not closed on this platform (Linux only)")
            return
        while True:
            await asyncio.sleep(self.interval)
            try:
                closed = await self.sweep()
            except OSError as exc:  # e.g. out of descriptors for the listing: next time
                log.warning("silent connection sweep failed", extra={"error": str(exc)})
                continue
            if closed:
                metrics.SILENT_CONNECTIONS_CLOSED.inc(closed)
                log.info("closed connections that sent nothing",
                         extra={"connections": closed, "timeout_ms": self.timeout_ms})

    async def sweep(self) -> int:
        closed = 0
        for n, name in enumerate(os.listdir(FD_DIR)):
            if n % _YIELD_EVERY == _YIELD_EVERY - 1:
                await asyncio.sleep(0)  # thousands of them must not stall the requests
            if self._shut_if_silent(int(name)):
                closed += 1
        return closed

    def _shut_if_silent(self, fd: int) -> bool:
        try:
            if not os.readlink(f"{FD_DIR}/{fd}").startswith("socket:"):
                return False
            # A duplicate, so the socket looked at is the one acted on even if the server
            # closes this number meanwhile (and it is reused); closing it leaves the server's.
            duplicate = os.dup(fd)
        except OSError:  # closed meanwhile
            return False
        try:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, 0, fileno=duplicate)
        except OSError:
            os.close(duplicate)
            return False
        try:
            local = sock.getsockname()
            if not isinstance(local, tuple) or local[1] != self.port:
                return False
            silent = silent_for_ms(sock)
            if silent is None or silent < self.timeout_ms:
                return False
            sock.shutdown(socket.SHUT_RDWR)
            return True
        except OSError:  # not TCP, or gone meanwhile
            return False
        finally:
            sock.close()
