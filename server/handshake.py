"""A deadline for a connection's first request: raw sockets that send nothing, or half a header,
are closed instead of held open forever (issue 16; uvicorn times out idle keep-alive
connections, but not one that never finished its first request).
"""

from __future__ import annotations

import asyncio
import logging

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger(__name__)


class HandshakeTimeoutProtocol(H11Protocol):
    """uvicorn's h11 protocol, closing connections whose first request's headers are not in
    within `handshake_timeout_s` (a WebSocket's upgrade request included)."""

    handshake_timeout_s: float = 10.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._handshake: asyncio.TimerHandle | None = self.loop.call_later(
            self.handshake_timeout_s, self._handshake_expired
        )

    def handle_events(self) -> None:
        super().handle_events()
        started = self.conn.their_state is not h11.IDLE or self.transport.get_protocol() is not self
        if started and self._handshake is not None:
            self._handshake.cancel()
            self._handshake = None

    def connection_lost(self, exc: Exception | None) -> None:
        if self._handshake is not None:
            self._handshake.cancel()
            self._handshake = None
        super().connection_lost(exc)

    def _handshake_expired(self) -> None:
        self._handshake = None
        if not self.transport.is_closing():
            log.info("closing %s: no complete request within %.0f s", self.client, self.handshake_timeout_s)
            self.transport.close()


def with_handshake_timeout(seconds: float) -> type[HandshakeTimeoutProtocol]:
    """The protocol class for uvicorn's `http=` with this deadline."""
    return type("HandshakeTimeoutProtocol", (HandshakeTimeoutProtocol,), {"handshake_timeout_s": seconds})
