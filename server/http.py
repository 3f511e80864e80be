"""The HTTP server around the app: uvicorn, configured for clients that are slow,
many or gone.

uvicorn provides the connection limit (``limit_concurrency``: past it, 503
at once), the idle keep-alive timeout and the graceful-shutdown window. It
has no timeout for a request's headers, so a client sending them a byte at a
time (slowloris) would hold its connection forever; ``HeaderTimeoutProtocol``
adds one: a connection that has not sent a complete request head within
``header_timeout_s`` of opening (or of its previous response) gets 408 and is
closed. The body's own timeout is enforced where it is read (server/wire.py).
"""

from __future__ import annotations

import asyncio

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from server.settings import Settings

_TIMEOUT_BODY = b'{"error":{"code":"request.timeout","message":"request headers not received in time","field":null}}'
_TIMEOUT_RESPONSE = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
                     b"content-length: %d\r\n\r\n%s" % (len(_TIMEOUT_BODY), _TIMEOUT_BODY))


class HeaderTimeoutProtocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline for each request's head."""

    header_timeout_s = 10.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._header_timer: asyncio.TimerHandle | None = None
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:  # a request head has been parsed
            self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
            self._arm()  # the next request's head is due in time too

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._timed_out)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _timed_out(self) -> None:
        self._header_timer = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        self.transport.write(_TIMEOUT_RESPONSE)
        self.transport.close()


def uvicorn_config(app: object, settings: Settings, host: str | None = None, port: int | None = None,
                   **kwargs: object) -> uvicorn.Config:
    """uvicorn's config for ``app`` under ``settings`` (host/port overridable, e.g. port 0 in tests)."""
    protocol = type("HeaderTimeoutProtocol", (HeaderTimeoutProtocol,),
                    {"header_timeout_s": settings.header_timeout_s})
    return uvicorn.Config(
        app,
        host=settings.host if host is None else host,
        port=settings.port if port is None else port,
        http=protocol,
        limit_concurrency=settings.max_connections,
        timeout_keep_alive=int(max(1, round(settings.keep_alive_s))),
        timeout_graceful_shutdown=int(round(settings.shutdown_grace_s)),
        **kwargs,  # type: ignore[arg-type]
    )
