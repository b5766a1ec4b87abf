"""Relay bytes between the client's and the back-end's transports after login.

Each transport is registered as the other's streaming producer: when the client reads
slowly, its write buffer fills, Twisted pauses reading from the back-end, and the node
never holds more than about one buffer of a large FETCH or message in memory.
"""

from __future__ import annotations

from typing import Protocol as TypingProtocol

from twisted.internet.interfaces import ITransport


class _Joinable(TypingProtocol):
    def registerProducer(self, producer: object, streaming: bool) -> None: ...
    def unregisterProducer(self) -> None: ...
    def write(self, data: bytes) -> None: ...
    def loseConnection(self) -> None: ...


class Pipe:
    """Joins two connected transports for the rest of a session.

    The owning protocols call L{to_backend}/L{to_client} from C{dataReceived} and
    L{closed_by_client}/L{closed_by_backend} from C{connectionLost}.
    """

    __slots__ = ("client", "backend", "closing", "bytes_up", "bytes_down")

    def __init__(self, client: ITransport, backend: ITransport) -> None:
        self.client: _Joinable = client  # type: ignore[assignment]
        self.backend: _Joinable = backend  # type: ignore[assignment]
        self.closing = False
        self.bytes_up = 0
        self.bytes_down = 0
        # client's buffer full -> stop reading the back-end, and the other way round
        self.client.registerProducer(backend, True)
        self.backend.registerProducer(client, True)

    def to_backend(self, data: bytes) -> None:
        self.bytes_up += len(data)
        self.backend.write(data)

    def to_client(self, data: bytes) -> None:
        self.bytes_down += len(data)
        self.client.write(data)

    def close(self) -> None:
        """Close both legs after flushing what each has buffered."""
        if self.closing:
            return
        self.closing = True
        # a registered producer keeps loseConnection from ever finishing
        for t in (self.client, self.backend):
            try:
                t.unregisterProducer()
            except Exception:  # noqa: BLE001 - a transport already gone has nothing to unregister
                pass
        self.client.loseConnection()
        self.backend.loseConnection()

    closed_by_client = close
    closed_by_backend = close
