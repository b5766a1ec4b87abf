"""Send on a plaintext TCP socket at once instead of a reactor turn later.

Twisted's C{write()} never sends at once: it queues the bytes, asks the reactor to watch
the socket for writability (one C{epoll_ctl}), sends on the next turn and stops watching
(another C{epoll_ctl}). A login exchanges about ten short lines, so that is twenty
system calls and ten reactor turns per session spent on bytes the kernel would have
taken straight away. When nothing is queued on a plain C{tcp.Connection}, these helpers
call C{send} on the socket and hand only what the kernel did not take to C{write()}, so
the order of bytes is never changed (see ../shared/PERFORMANCE-NOTES.md, "fast write").

Anything that is not plain TCP (a TLS wrapper, a connection after C{startTLS}, a test's
C{StringTransport}) goes through its own C{write()}.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet import tcp


def _queued(t: Any) -> bool:
    return bool(t._tempDataLen or len(t.dataBuffer) - t.offset)


def write_now(transport: Any, data: bytes) -> None:
    """C{transport.write(data)}, sent on the socket now when that keeps the byte order."""
    kind = type(transport)
    if (kind is not tcp.Server and kind is not tcp.Client) or transport.TLS:
        transport.write(data)
        return
    if _queued(transport) or transport.disconnecting or not transport.connected:
        transport.write(data)  # behind what is queued, or let Twisted report the state
        return
    try:
        sent = transport.socket.send(data)
    except BlockingIOError:
        sent = 0
    except OSError:
        transport.write(data)  # let Twisted see and report the error in its own way
        return
    if sent < len(data):
        transport.write(data[sent:])


def direct_sender(transport: Any) -> Callable[[bytes], None]:
    """A write function bound to C{transport} for the relay's hot path.

    Decided once: only a plain C{tcp.Connection} that is not TLS now gets the direct
    sender (the relay rebuilds its senders if a leg changes), anything else its own
    C{write}.
    """
    if not isinstance(transport, tcp.Connection) or getattr(transport, "TLS", False):
        return transport.write  # type: ignore[no-any-return]
    sock = getattr(transport, "socket", None)
    if sock is None:  # the connection is already gone (tcp drops .socket when it closes)
        return transport.write
    write: Callable[[bytes], None] = transport.write

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
