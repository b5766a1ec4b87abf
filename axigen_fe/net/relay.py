"""Relay bytes between the client's and the back-end's transports after login.

Each transport is registered as the other's streaming producer: when the client reads
slowly, its write buffer fills, Twisted pauses reading from the back-end, and the node
never holds more than about one buffer of a large FETCH or message in memory.

Twisted's C{write()} never sends at once: it buffers and waits a reactor turn. On a
plaintext TCP leg with nothing buffered, L{_direct_sender} sends straight on the socket
and hands only what the kernel did not take to C{write()} ("fast write"); see
../shared/PERFORMANCE-NOTES.md for what that buys on this machine.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet import tcp
from twisted.internet.interfaces import ITransport


def _direct_sender(transport: Any) -> Callable[[bytes], None]:
    """A write function for C{transport}: direct socket sends when that is safe.

    Only a plain C{tcp.Connection} qualifies: after C{startTLS} (C{TLS} true) or behind
    an implicit-TLS wrapper, bytes must go through the TLS layer, so the transport's own
    C{write} is returned.
    """
    if not isinstance(transport, tcp.Connection) or getattr(transport, "TLS", False):
        return transport.write  # type: ignore[no-any-return]
    sock = transport.socket
    write = transport.write

    def send(data: bytes) -> None:
        t = transport
        if t._tempDataLen or len(t.dataBuffer) - t.offset or t.disconnecting or not t.connected:
            write(data)  # keep order behind what is already queued
            return
        try:
            sent = sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError:
            write(data)  # let Twisted see and report the error in its own way
            return
        if sent < len(data):
            write(data[sent:])

    return send


class Pipe:
    """Joins two connected transports for the rest of a session.

    The owning protocols call L{to_backend}/L{to_client} from C{dataReceived} and
    L{closed_by_client}/L{closed_by_backend} from C{connectionLost}.
    """

    __slots__ = ("client", "backend", "closing", "bytes_up", "bytes_down", "_up", "_down")

    def __init__(self, client: ITransport, backend: ITransport) -> None:
        self.client: Any = client
        self.backend: Any = backend
        self.closing = False
        self.bytes_up = 0
        self.bytes_down = 0
        self._up = _direct_sender(backend)
        self._down = _direct_sender(client)
        # client's buffer full -> stop reading the back-end, and the other way round
        self.client.registerProducer(backend, True)
        self.backend.registerProducer(client, True)

    def to_backend(self, data: bytes) -> None:
        self.bytes_up += len(data)
        self._up(data)

    def to_client(self, data: bytes) -> None:
        self.bytes_down += len(data)
        self._down(data)

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
