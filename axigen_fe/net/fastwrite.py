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
from functools import partial
from typing import Any

from twisted.internet import tcp

_PLAIN = (tcp.Server, tcp.Client)


def _queued(t: Any) -> bool:
    return bool(t._tempDataLen or len(t.dataBuffer) - t.offset)


def write_now(transport: Any, data: bytes) -> None:
    """C{transport.write(data)}, sent on the socket now when that keeps the byte order."""
    if type(transport) not in _PLAIN or transport.TLS:
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

    Decided once: only a plain TCP connection that is not TLS now gets L{write_now}
    (the relay rebuilds its senders if a leg changes); anything else its own C{write}.
    """
    if type(transport) not in _PLAIN or getattr(transport, "TLS", False):
        return transport.write  # type: ignore[no-any-return]
    return partial(write_now, transport)
