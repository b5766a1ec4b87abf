"""Zero-copy relay between two plaintext TCP transports with C{os.splice} (Linux).

Why: relaying through Python costs a C{recv} into a new bytes object, a C{send}, and the
interpreter around them for every 64 KiB. C{splice(2)} moves the bytes from one socket
into a kernel pipe and from the pipe into the other socket without them ever reaching
user space. On this machine: a bare relay fed as fast as possible went from ~900 to
~300 us CPU per MiB; the 20 MiB IMAP FETCH bench from 1.0 to 0.4 ms/MiB, nginx's figure
in the same run. A source that trickles (Dovecot's POP3 RETR, ~64 KiB per wake-up) gains
less: there the reactor round and the kernel's TCP work per wake-up dominate.

How it fits Twisted: the epoll reactor keys readers and writers by file descriptor, one
selectable per fd. Rather than registering objects of our own next to the transports (and
racing every C{stopReading}/C{startWriting}/C{loseConnection} the transports do on the same
fds), L{Splicer} keeps the transports registered and replaces their C{doRead} and
C{doWrite} with instance attributes - the way Twisted's own C{abortConnection} and
C{tcp.BaseClient} (C{doConnect}) take over a transport. So every registration call the
transports make stays consistent with the reactor, and the end of a connection still goes
through Twisted's own path: C{doRead} returns C{CONNECTION_DONE}/C{CONNECTION_LOST}, the
reactor calls the transport's C{connectionLost}, which closes the socket and calls the
protocol's C{connectionLost} exactly once; the protocol then calls C{Pipe.close}, which
hands the other transport back to Twisted (L{Splicer.stop}) to flush and close.

Per direction (source socket -> kernel pipe -> destination socket):
  - the source is read (spliced into a pipe) only while that direction's pipe is empty, and
    what was read is pushed on at once; whatever the destination does not take stays in the
    pipe, the source stops being read and the destination waits for writability. So the
    node holds at most one pipe (256 KiB) per direction and never buffers in Python
    (backpressure reaches the sending peer through TCP, as with producers);
  - a read event that caught up with a bulk sender leaves the source alone for about a
    millisecond (L{COALESCE_DELAY}), so the next event moves several of its chunks at once;
  - pipes come from a L{PipePool} and go back as soon as they are empty, so an idle session
    holds no pipe at all: no extra fds (the fd limit), no pipe pages counted against
    C{/proc/sys/fs/pipe-user-pages-soft} (past it, a non-root node's new pipes get two
    pages, which still work, slower).
"""

from __future__ import annotations

import errno
import fcntl
import os
import sys
from typing import Any, Final, Protocol

from twisted.internet import main, tcp
from twisted.internet.interfaces import IDelayedCall

SPLICE_AVAILABLE: Final = sys.platform.startswith("linux") and hasattr(os, "splice")
"""C{os.splice} exists (Linux, Python 3.10+)."""

_FLAGS: Final = getattr(os, "SPLICE_F_MOVE", 1) | getattr(os, "SPLICE_F_NONBLOCK", 2)

PIPE_SIZE: Final = 256 * 1024
"""Capacity asked for each pipe. Measured here (200 MiB through a bare Pipe): 64 KiB pipes
cost ~490 us CPU per MiB, 256 KiB ~310 us, 1 MiB ~240-280 us - fewer full-pipe stalls,
each costing four epoll_ctl calls. A pipe is only lent while bytes flow, so the size is
paid per busy direction, not per session."""

SPLICE_CHUNK: Final = 1 << 20
"""Bytes asked of one splice; the kernel moves at most what fits in the pipe."""

READS_PER_EVENT: Final = 4
"""Source reads per readiness event while the destination keeps up: fewer reactor rounds
per MiB on a bulk transfer (1 read: ~420 us/MiB, 4: ~310 us/MiB with 256 KiB pipes), and
still a bounded share (1 MiB) of a loop that all sessions share."""

COALESCE_BYTES: Final = 32 * 1024
COALESCE_DELAY: Final = 0.0005
"""After a read event that moved at least C{COALESCE_BYTES} and emptied the source socket,
the source is left alone for C{COALESCE_DELAY} seconds (epoll rounds it up to 1 ms), so
the next event finds several of the sender's chunks instead of one. Why: Dovecot writes
a FETCH or RETR in ~64 KiB pieces, and relayed chunk by chunk each piece costs a reactor
round (~15-25 us of Python here) plus two splices; in the 20 MiB FETCH bench this pause
took the node from 0.8 to 0.5 ms CPU per MiB (nginx: 0.4-0.55) at the same throughput.
Interactive traffic (reads under 32 KiB) is never delayed; a bulk transfer's last piece
may arrive up to ~1 ms later. (Loopback TCP hands over 65483-byte segments: a 64 KiB
threshold would miss a single one.)"""

_UNSUPPORTED: Final = frozenset({errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EPERM})
"""errno values meaning splice cannot work on these fds at all: relay through Python."""

_Pipe = tuple[int, int]


class PipePool:
    """Kernel pipes lent to a relay direction only while they hold bytes.

    A bulk transfer borrows a pipe for one read-and-push and gives it back empty, so a node
    with thousands of sessions needs about as many pipes as it has directions blocked on a
    full destination at that moment, plus a few spares.
    """

    def __init__(self, size: int = PIPE_SIZE, spare: int = 16) -> None:
        self.size = size
        self.spare = spare
        self.open = 0
        """Pipes open now, lent or spare (each is two fds)."""
        self._free: list[_Pipe] = []

    def take(self) -> _Pipe:
        """An empty pipe (non-blocking, close-on-exec); OSError (EMFILE...) if none can be made."""
        if self._free:
            return self._free.pop()
        r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.open += 1
        try:
            fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, self.size)
        except OSError:
            pass  # over pipe-max-size or the per-user budget: the default size still works
        return r, w

    def give(self, pipe: _Pipe) -> None:
        """Take back an B{empty} pipe."""
        if len(self._free) < self.spare:
            self._free.append(pipe)
        else:
            self.discard(pipe)

    def discard(self, pipe: _Pipe) -> None:
        """Close a pipe (one that may still hold bytes, or one too many)."""
        self.open -= 1
        for fd in pipe:
            try:
                os.close(fd)
            except OSError:
                pass

    def clear(self) -> None:
        """Close the spare pipes (tests; a service stopping)."""
        free, self._free = self._free, []
        for pipe in free:
            self.discard(pipe)


POOL = PipePool()
"""The process's pipes: fds and pipe pages are per-process resources, not per reactor."""


class Owner(Protocol):
    """What a splicer needs of its owner (the session's Pipe)."""

    bytes_up: int
    """Client -> back-end bytes so far: the splicer keeps counting (logs, idle timers)."""
    bytes_down: int

    def splice_unsupported(self) -> None:
        """Splice cannot go on (kernel refuses, no pipe to be had): the transports are
        Twisted's again, with everything the pipes held; relay through Python from now."""


def plain_tcp(transport: object) -> bool:
    """C{transport} is a bare TCP connection whose socket carries the session's bytes as is.

    Not after C{startTLS} (C{TLS} set), not a TLS wrapper (C{TLSMemoryBIOProtocol} is not a
    C{tcp.Connection}), not an instance whose C{doRead}/C{doWrite} someone already replaced
    (C{abortConnection}, a pending connect).
    """
    if not SPLICE_AVAILABLE or not isinstance(transport, tcp.Connection):
        return False
    d = vars(transport)
    return (
        "socket" in d  # gone once the connection closed
        and not getattr(transport, "TLS", False)
        and "doRead" not in d
        and "doWrite" not in d
    )


def idle(transport: Any) -> bool:
    """Connected, not closing, nothing in Twisted's write buffer: safe to splice from now on."""
    return bool(
        transport.connected
        and not transport.disconnecting
        and not transport._writeDisconnecting
        and not transport._tempDataLen
        and len(transport.dataBuffer) == transport.offset
    )


class _Direction:
    """One way of the relay: bytes from C{src}'s socket to C{dst}'s socket."""

    __slots__ = ("src", "dst", "up", "pipe", "held", "pause")

    def __init__(self, src: Any, dst: Any, up: bool) -> None:
        self.src = src
        self.dst = dst
        self.up = up
        self.pipe: _Pipe | None = None
        """The pipe holding bytes C{dst} has not taken yet (None: nothing held)."""
        self.held = 0
        """Bytes in C{pipe}."""
        self.pause: IDelayedCall | None = None
        """The delayed call that reads C{src} again after a coalescing pause."""


class Splicer:
    """Relays two plaintext TCP transports with splice until L{stop}.

    C{owner.bytes_up}/C{bytes_down} keep counting; C{owner.splice_unsupported()} is called
    (after the transports went back to Twisted) if the kernel refuses splice on these
    sockets, or no pipe can be had (fd limit). Idle sessions keep one of these each, so it
    is kept small: no per-session pipe, no references beyond the two directions.
    """

    __slots__ = ("owner", "pool", "_up", "_down")

    def __init__(
        self, owner: Owner, client: Any, backend: Any, pool: PipePool | None = None
    ) -> None:
        self.owner = owner
        self.pool = POOL if pool is None else pool
        self._up = _Direction(client, backend, True)
        self._down = _Direction(backend, client, False)

    @property
    def held(self) -> int:
        """Bytes read from one side that the other has not taken yet (both directions)."""
        return self._up.held + self._down.held

    def start(self) -> None:
        """Take over both transports; the caller checked L{plain_tcp} and L{idle} on both."""
        client, backend = self._up.src, self._down.src
        for transport, read, write in (
            (client, self._client_read, self._client_write),
            (backend, self._backend_read, self._backend_write),
        ):
            transport.unregisterProducer()
            transport.stopWriting()
            transport.doRead = read
            transport.doWrite = write
            transport.startReading()

    def stop(self) -> None:
        """Give both transports back to Twisted, with the bytes still in pipes.

        What a pipe holds goes into its destination's Twisted write buffer (at most one
        pipe's worth per direction), so a following C{loseConnection} flushes it and a
        relay resumed through Python keeps the byte order. A destination already gone
        just loses it, as Twisted drops its write buffer then. Registrations are left as
        they are: the transports are the registered selectables all along.
        """
        for transport in (self._up.src, self._down.src):
            d = vars(transport)
            # ours only: abortConnection() may have put its own there meanwhile
            if getattr(d.get("doRead"), "__self__", None) is self:
                del transport.doRead
            if getattr(d.get("doWrite"), "__self__", None) is self:
                del transport.doWrite
        for way in (self._up, self._down):
            if way.pause is not None:
                if way.pause.active():
                    way.pause.cancel()
                way.pause = None
            pipe, way.pipe = way.pipe, None
            if pipe is None:
                continue
            data = _drain(pipe[0], way.held)
            way.held = 0
            if data is None:  # a hole in the stream: nothing after it may reach dst
                self.pool.discard(pipe)
                if way.dst.connected:
                    way.dst.abortConnection()
            else:
                self.pool.give(pipe)
                if way.dst.connected:
                    way.dst.write(data)

    # ----------------------------------------------------------- reactor callbacks

    def _client_read(self) -> object:
        return self._read(self._up)

    def _backend_read(self) -> object:
        return self._read(self._down)

    def _client_write(self) -> object:
        return self._write(self._down)

    def _backend_write(self) -> object:
        return self._write(self._up)

    def _read(self, way: _Direction) -> object:
        """C{src} is readable: splice into a pipe, then on into C{dst} at once.

        EOF or a socket error is returned to the reactor as Twisted's own C{doRead}
        would, so the transport closes the Twisted way and its protocol hears of it.
        """
        if way.pipe is not None:  # dst has not taken the last read yet: wait for it
            way.src.stopReading()
            return None
        src_fd = way.src.socket.fileno()
        dst_fd = way.dst.socket.fileno()
        pool = self.pool
        try:
            pipe = pool.take()
        except OSError:
            self._unsupported()
            return None
        total = 0
        for _ in range(READS_PER_EVENT):
            try:
                n = os.splice(src_fd, pipe[1], SPLICE_CHUNK, flags=_FLAGS)
            except BlockingIOError:
                break
            except OSError as e:
                pool.give(pipe)
                if e.errno in _UNSUPPORTED:
                    self._unsupported()
                    return None
                return main.CONNECTION_LOST
            if not n:
                pool.give(pipe)
                return main.CONNECTION_DONE
            if way.up:
                self.owner.bytes_up += n
            else:
                self.owner.bytes_down += n
            try:
                sent = os.splice(pipe[0], dst_fd, n, flags=_FLAGS)
            except OSError:
                sent = 0  # full, or broken: dst's own doWrite meets (and reports) it
            if sent < n:
                way.pipe, way.held = pipe, n - sent
                way.src.stopReading()
                way.dst.startWriting()
                return None
            total += n
            if n < pool.size:  # the socket had less than a pipe's worth: it is drained
                break
        pool.give(pipe)
        if COALESCE_BYTES <= total < READS_PER_EVENT * pool.size:
            # a bulk sender, and we caught up with it: let its next pieces pile up
            way.src.stopReading()
            way.pause = way.src.reactor.callLater(COALESCE_DELAY, self._resume, way)
        return None

    def _resume(self, way: _Direction) -> None:
        """The coalescing pause is over: read the source again."""
        way.pause = None
        src = way.src
        if way.pipe is None and src.connected and not src.disconnecting:
            src.startReading()

    def _write(self, way: _Direction) -> object:
        """C{dst} is writable: push what its pipe holds, then let the source be read again."""
        dst = way.dst
        pipe = way.pipe
        if pipe is not None:
            try:
                sent = os.splice(pipe[0], dst.socket.fileno(), way.held, flags=_FLAGS)
            except BlockingIOError:
                return None
            except OSError:
                return main.CONNECTION_LOST
            way.held -= sent
            if way.held:
                return None
            way.pipe = None
            self.pool.give(pipe)
            src = way.src
            if src.connected and not src.disconnecting:
                src.startReading()
        if (
            dst._tempDataLen
            or len(dst.dataBuffer) > dst.offset
            or dst.disconnecting
            or dst._writeDisconnecting
        ):
            # someone wrote or closed through the transport itself: Twisted finishes that
            return type(dst).doWrite(dst)
        dst.stopWriting()
        return None

    def _unsupported(self) -> None:
        self.stop()
        self.owner.splice_unsupported()


def _drain(fd: int, size: int) -> bytes | None:
    """Read the C{size} bytes a pipe holds (None if it cannot be read: close it then)."""
    parts: list[bytes] = []
    while size > 0:
        try:
            chunk = os.read(fd, size)
        except OSError:
            return None
        if not chunk:
            return None
        parts.append(chunk)
        size -= len(chunk)
    return b"".join(parts)
