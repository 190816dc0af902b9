"""How long the web service waits on a client, enforced on each connection.

uvicorn starts its only clock (`timeout_keep_alive`) once a response is complete: a client
that connects and says nothing, stops half-way through its headers, or trickles them a byte
at a time (slowloris) holds its connection forever, and enough of them exhaust the service.
The protocol here adds the missing clock: a request must arrive whole (headers and body)
within `timeout` of its first byte, or of the connection's start; otherwise the connection is
closed. Between requests uvicorn's keep-alive clock applies as before.
"""

from __future__ import annotations

import asyncio

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

_RECEIVING = (h11.IDLE, h11.SEND_BODY)  # the client's states while a request is coming in


class BoundedH11Protocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol with a deadline on receiving each request."""

    timeout: float = 10.0  # set per server by `bounded_protocol`
    _deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()  # a client that connects and never speaks is a request that never ends

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        state = self.conn.their_state
        if state not in _RECEIVING:
            self._cancel()  # the whole request is in: the app's time is not the client's
        elif state is h11.SEND_BODY or self.conn.trailing_data[0]:
            self._arm()  # part of a request: the clock runs from its first byte, not reset

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel()
        super().connection_lost(exc)

    def _arm(self) -> None:
        if self._deadline is None:
            self._deadline = self.loop.call_later(self.timeout, self._expire)

    def _cancel(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            self.transport.close()


def bounded_protocol(timeout: float) -> type[BoundedH11Protocol]:
    """The protocol class for one server, with its own timeout (uvicorn takes a class)."""
    return type("BoundedH11Protocol", (BoundedH11Protocol,), {"timeout": timeout})
