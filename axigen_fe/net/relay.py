"""Relay bytes between the client's and the back-end's transports after login.

Each transport is registered as the other's streaming producer: when the client reads
slowly, its write buffer fills, Twisted pauses reading from the back-end, and the node
never holds more than about one buffer of a large FETCH or message in memory.

Twisted's C{write()} never sends at once: it buffers and waits a reactor turn. On a
plaintext TCP leg with nothing buffered, L{direct_sender} sends straight on the socket
and hands only what the kernel did not take to C{write()} ("fast write"); see
../shared/PERFORMANCE-NOTES.md for what that buys on this machine.

When both legs are plaintext TCP the bytes do not pass through Python at all once the
session is relaying: L{axigen_fe.net.splice} moves them socket -> kernel pipe -> socket.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, cast

from twisted.internet.interfaces import ITransport

from axigen_fe.net.fastwrite import direct_sender
from axigen_fe.net.splice import SPLICE_AVAILABLE, Splicer, idle, plain_tcp


def _not_while_splicing(data: bytes) -> None:
    """Stands in for the Python senders in splice mode (to_* leave splice mode first)."""
    raise AssertionError("Pipe: Python sender used in splice mode")


class Pipe:
    """Joins two connected transports for the rest of a session.

    The owning protocols call L{to_backend}/L{to_client} from C{dataReceived} and
    L{closed_by_client}/L{closed_by_backend} from C{connectionLost}.

    When both legs are plain TCP (no TLS), the pipe switches to splice mode (see
    L{axigen_fe.net.splice}) as soon as both transports' write buffers are empty: the
    login reply the protocol wrote just before creating the pipe, and the leftovers it
    hands over right after, leave through Twisted first, so no byte overtakes another.
    From then on no protocol code sees the relayed bytes: C{dataReceived} is no longer
    called, but L{bytes_up}/L{bytes_down} keep counting (idle timers and logs rely on
    them), and either side's C{connectionLost} still reaches its protocol exactly once.
    """

    __slots__ = (
        "client",
        "backend",
        "closing",
        "bytes_up",
        "bytes_down",
        "_up",
        "_down",
        "_splicer",
        "_hooks",
        "_splice_at",
    )

    splice_enabled: ClassVar[bool] = SPLICE_AVAILABLE
    """Relay plaintext sessions with splice (class-wide switch, for comparisons and tests)."""

    splice_after: ClassVar[int] = 128 * 1024
    """Bytes a session relays through Python before it switches to splice mode.

    Switching costs a few system calls and a pipe, and a splice per chunk costs about
    what a recv+send does: it pays off on bulk transfers (a FETCH, a RETR, a message),
    not on the few short replies of a login-SELECT-LOGOUT session, which stays in Python.
    """

    def __init__(self, client: ITransport, backend: ITransport, *, splice: bool = True) -> None:
        """@param splice: False when the owner must see every byte (a guarded relay)."""
        self.client: Any = cast(Any, client)
        self.backend: Any = cast(Any, backend)
        self.closing = False
        self.bytes_up = 0
        self.bytes_down = 0
        self._up = direct_sender(backend)
        self._down = direct_sender(client)
        self._splicer: Splicer | None = None
        self._hooks: list[tuple[Any, Callable[[], object]]] | None = None
        # client's buffer full -> stop reading the back-end, and the other way round
        self.client.registerProducer(self.backend, True)
        self.backend.registerProducer(self.client, True)
        #: total of bytes_up + bytes_down at which to try splice mode (-1: never)
        self._splice_at = -1
        if splice and self.splice_enabled and plain_tcp(client) and plain_tcp(backend):
            self._splice_at = self.splice_after
            self._maybe_splice()

    @property
    def splicing(self) -> bool:
        """The relay runs in the kernel (splice mode)."""
        return self._splicer is not None

    def to_backend(self, data: bytes) -> None:
        self.bytes_up += len(data)
        if self._splicer is not None:
            self._unsplice()
        self._up(data)
        if self._splice_at >= 0:
            self._maybe_splice()

    def to_client(self, data: bytes) -> None:
        self.bytes_down += len(data)
        if self._splicer is not None:
            self._unsplice()
        self._down(data)
        if self._splice_at >= 0:
            self._maybe_splice()

    def _maybe_splice(self) -> None:
        if self.bytes_up + self.bytes_down >= self._splice_at:
            self._splice_at = -1
            # not from inside the caller's dataReceived: it may hand over more bytes
            self.client.reactor.callLater(0, self._try_splice)

    def close(self) -> None:
        """Close both legs after flushing what each has buffered."""
        if self.closing:
            return
        self.closing = True
        self._unhook()
        splicer, self._splicer = self._splicer, None
        if splicer is not None:
            splicer.stop()  # what the kernel pipes hold joins the write buffers flushed below
            # late bytes (a protocol finishing its dataReceived) queue behind them
            self._up, self._down = self.backend.write, self.client.write
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

    # ------------------------------------------------------------------ splice mode

    def _try_splice(self) -> None:
        """Switch to splice mode now if both write buffers are empty, else when they are.

        A leg with bytes still queued in Twisted gets a one-shot hook on its C{doWrite}
        that calls back here once the queue is empty; a leg closing, or one that turned
        to TLS meanwhile, ends the attempt for good (the Python relay goes on).
        """
        if self.closing or self._splicer is not None:
            return
        self._unhook()
        client, backend = self.client, self.backend
        if not (plain_tcp(client) and plain_tcp(backend)):
            return
        busy = []
        for t in (client, backend):
            if not t.connected or t.disconnecting or t._writeDisconnecting:
                return
            if not idle(t):
                busy.append(t)
        if busy:
            for t in busy:
                self._hook(t)
            return
        splicer = self._splicer = Splicer(self, client, backend)
        splicer.start()
        # the Python senders are rebuilt if ever needed again: idle sessions stay small
        self._up = self._down = _not_while_splicing

    def _hook(self, transport: Any) -> None:
        flush = type(transport).doWrite

        def write_then_retry() -> object:
            why = flush(transport)
            if why is None and idle(transport):
                self._try_splice()
            return why

        transport.doWrite = write_then_retry
        if self._hooks is None:
            self._hooks = []
        self._hooks.append((transport, write_then_retry))

    def _unhook(self) -> None:
        for transport, hook in self._hooks or ():
            if vars(transport).get("doWrite") is hook:
                del transport.doWrite
        self._hooks = None

    def _unsplice(self) -> None:
        """Back to relaying through Python for good (bytes came in through to_client/to_backend)."""
        splicer, self._splicer = self._splicer, None
        if splicer is not None:
            splicer.stop()
        self._resume_python()

    def splice_unsupported(self) -> None:
        """(L{Splicer}'s callback) The kernel refused, or no pipe could be had: no splice."""
        self._splicer = None
        self._resume_python()

    def _resume_python(self) -> None:
        client, backend = self.client, self.backend
        self._up = direct_sender(backend)
        self._down = direct_sender(client)
        client.registerProducer(backend, True)
        backend.registerProducer(client, True)
        for t, consumer in ((client, backend), (backend, client)):
            if t.connected and not t.disconnecting:
                t.startReading()
                # what the kernel pipe held may fill the consumer's buffer: the usual pause
                consumer._maybePauseProducer()
