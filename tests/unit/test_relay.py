"""The session relay (L{axigen_fe.net.relay.Pipe}) on real loopback sockets.

Splice mode moves bytes between file descriptors in the kernel, so it cannot be shown
with in-memory transports: each test runs a client, a node (two legs joined by a Pipe,
the way the IMAP/POP3/submission proxies join theirs) and a back-end on the real reactor
(trial's TestCase, which pytest runs), all in this process, on 127.0.0.1.

Waits are liveness bounds (a condition polled until it holds), never timing assertions.
"""

from __future__ import annotations

import datetime
import errno
import os
from collections.abc import Callable
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.internet import reactor as _reactor
from twisted.internet.endpoints import SSL4ClientEndpoint, TCP4ClientEndpoint, connectProtocol
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import CertificateOptions
from twisted.internet.task import deferLater
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from axigen_fe.net import splice
from axigen_fe.net.relay import Pipe
from axigen_fe.net.splice import PipePool, plain_tcp

reactor: Any = _reactor
HOST = "127.0.0.1"
MIB = 1024 * 1024


def payload(size: int, seed: int) -> bytes:
    """Bytes that differ everywhere, so a reordered or lost chunk cannot go unnoticed."""
    block = os.urandom(65521)  # a prime length: chunk boundaries never line up with it
    reps = size // len(block) + 1
    return (bytes([seed]) + block * reps)[:size]


async def until(condition: Callable[[], bool], what: str, limit: float = 60.0) -> None:
    """Poll C{condition} on the running reactor; fail naming C{what} if it never holds."""
    deadline = reactor.seconds() + limit
    while not condition():
        if reactor.seconds() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        await deferLater(reactor, 0.005, lambda: None)


async def settled(value: Callable[[], object], what: str, rounds: int = 40) -> None:
    """Wait until C{value()} stops changing (a stalled transfer), C{rounds} polls in a row."""
    last, same = value(), 0
    deadline = reactor.seconds() + 60.0
    while same < rounds:
        if reactor.seconds() > deadline:
            raise AssertionError(f"{what} never settled")
        await deferLater(reactor, 0.01, lambda: None)
        now = value()
        same = same + 1 if now == last else 0
        last = now


class Peer(Protocol):
    """A client or back-end: keeps what it receives, counts its connectionLost."""

    def __init__(self) -> None:
        self.received = bytearray()
        self.lost_count = 0
        self.connected_peer = False

    def connectionMade(self) -> None:
        self.connected_peer = True

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.lost_count += 1

    def pause(self) -> None:
        """Stop reading: the peer's kernel buffers fill and the sender must hold back."""
        assert self.transport is not None
        self.transport.pauseProducing()  # type: ignore[attr-defined]

    def resume(self) -> None:
        assert self.transport is not None
        self.transport.resumeProducing()  # type: ignore[attr-defined]

    def send(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)


class Leg(Protocol):
    """One leg of the node, used like the proxies use theirs once a session relays.

    Bytes read before the Pipe exists are held and handed over right after it is made
    (the proxies' pipelined commands and back-end leftovers); C{via_python} counts what
    reached this protocol afterwards, i.e. did not go through the kernel.
    """

    def __init__(self) -> None:
        self.pipe: Pipe | None = None
        self.forward: Callable[[bytes], None] | None = None
        self.held = bytearray()
        self.via_python = 0
        self.lost_count = 0
        self.made = False

    def connectionMade(self) -> None:
        self.made = True

    def dataReceived(self, data: bytes) -> None:
        if self.forward is None:
            self.held += data
            return
        self.via_python += len(data)
        self.forward(data)

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.lost_count += 1
        if self.pipe is not None:
            self.pipe.close()


class Session:
    """client <-> front leg [Pipe] back leg <-> back-end, plus the ends' states."""

    def __init__(self, client: Peer, front: Leg, back: Leg, backend: Peer, pipe: Pipe) -> None:
        self.client = client
        self.front = front
        self.back = back
        self.backend = backend
        self.pipe = pipe

    @property
    def parties(self) -> tuple[Peer | Leg, ...]:
        return (self.client, self.front, self.back, self.backend)

    def all_closed(self) -> bool:
        return all(p.lost_count for p in self.parties)

    async def closed(self) -> None:
        await until(self.all_closed, "every connection of the session to close")
        # a moment more, so a second connectionLost would have happened by now
        await deferLater(reactor, 0.05, lambda: None)

    def assert_lost_once(self, test: TestCase) -> None:
        test.assertEqual([p.lost_count for p in self.parties], [1, 1, 1, 1])

    async def stalled_down(self) -> None:
        """Wait until the node stops reading the back-end (the client is not reading)."""
        await settled(lambda: self.pipe.bytes_down, "bytes read from the back-end")

    def abort(self) -> None:
        for p in self.parties:
            t = p.transport
            if t is not None and not p.lost_count:
                t.abortConnection()  # type: ignore[attr-defined]


def self_signed() -> CertificateOptions:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "node.test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return CertificateOptions(
        privateKey=key,  # type: ignore[arg-type]
        certificate=cert,  # type: ignore[arg-type]
    )


class RelayTestCase(TestCase):
    """Listeners for a node and a back-end; sessions through them; nothing left behind."""

    def setUp(self) -> None:
        # these tests are about splice mode itself: switch at once, not after 128 KiB
        self.patch(Pipe, "splice_after", 0)
        self.fronts: list[Leg] = []
        self.backends: list[Peer] = []
        self.sessions: list[Session] = []
        self.backend_port = self._listen(self._collect(Peer, self.backends))
        self.node_port = self._listen(self._collect(Leg, self.fronts))
        self.tls_node_port: Any = None

    def _collect(self, kind: type[Any], into: list[Any]) -> Factory:
        def build() -> Protocol:
            p = kind()
            into.append(p)
            return p  # type: ignore[no-any-return]

        return Factory.forProtocol(build)

    def _listen(self, factory: Factory) -> IListeningPort:
        port: IListeningPort = reactor.listenTCP(0, factory, interface=HOST)
        self.addCleanup(port.stopListening)
        return port

    async def tearDown(self) -> None:  # type: ignore[override]
        for s in self.sessions:
            s.abort()
        for s in self.sessions:
            await until(s.all_closed, "aborted sessions to close")
        splice.POOL.clear()

    async def open(
        self, *, tls_front: bool = False, before_pipe: Callable[[Session], None] | None = None
    ) -> Session:
        """A relaying session; C{before_pipe} runs when both legs are up, before the Pipe."""
        client = Peer()
        if tls_front:
            if self.tls_node_port is None:
                self.tls_node_port = reactor.listenSSL(
                    0, self._collect(Leg, self.fronts), self_signed(), interface=HOST
                )
                self.addCleanup(self.tls_node_port.stopListening)
            port = self.tls_node_port.getHost().port
            endpoint: Any = SSL4ClientEndpoint(reactor, HOST, port, CertificateOptions())
        else:
            port = self.node_port.getHost().port  # type: ignore[attr-defined]
            endpoint = TCP4ClientEndpoint(reactor, HOST, port)
        fronts = len(self.fronts)
        backends = len(self.backends)
        await connectProtocol(endpoint, client)
        await until(lambda: len(self.fronts) > fronts and self.fronts[-1].made, "the front leg")
        front = self.fronts[-1]
        back = Leg()
        port = self.backend_port.getHost().port  # type: ignore[attr-defined]
        await connectProtocol(TCP4ClientEndpoint(reactor, HOST, port), back)
        await until(lambda: len(self.backends) > backends, "the back-end to accept")
        backend = self.backends[-1]
        await until(lambda: backend.connected_peer and client.connected_peer, "both ends")
        session = Session(client, front, back, backend, None)  # type: ignore[arg-type]
        self.sessions.append(session)
        if before_pipe is not None:
            before_pipe(session)
        pipe = session.pipe = Pipe(front.transport, back.transport)  # type: ignore[arg-type]
        front.pipe = back.pipe = pipe
        front.forward, back.forward = pipe.to_backend, pipe.to_client
        for leg, to in ((front, pipe.to_backend), (back, pipe.to_client)):
            if leg.held:
                held, leg.held = bytes(leg.held), bytearray()
                to(held)
        return session

    async def spliced(self, s: Session) -> None:
        await until(lambda: s.pipe.splicing, "the pipe to switch to splice mode")


class SpliceRelayTests(RelayTestCase):
    if not splice.SPLICE_AVAILABLE:
        skip = "os.splice needs Linux"

    async def test_both_ways_byte_identical(self) -> None:
        """20 MiB each way at once arrive intact, counted, and none through Python."""
        s = await self.open()
        await self.spliced(s)
        up, down = payload(20 * MIB, 1), payload(20 * MIB, 2)
        s.client.send(up)
        s.backend.send(down)
        await until(
            lambda: len(s.backend.received) >= len(up) and len(s.client.received) >= len(down),
            "40 MiB to cross",
        )
        self.assertTrue(bytes(s.backend.received) == up, "client -> back-end bytes differ")
        self.assertTrue(bytes(s.client.received) == down, "back-end -> client bytes differ")
        self.assertEqual((s.pipe.bytes_up, s.pipe.bytes_down), (len(up), len(down)))
        self.assertEqual((s.front.via_python, s.back.via_python), (0, 0))
        self.assertTrue(s.pipe.splicing)
        s.client.transport.loseConnection()  # type: ignore[union-attr]
        await s.closed()
        s.assert_lost_once(self)

    async def test_slow_reader_stops_the_node_reading(self) -> None:
        """A client that reads nothing: the node holds at most one pipe, no Python buffer."""
        s = await self.open()
        await self.spliced(s)
        down = payload(40 * MIB, 3)
        s.client.pause()
        s.backend.send(down)
        await s.stalled_down()
        splicer = s.pipe._splicer
        assert splicer is not None
        front: Any = s.front.transport
        back: Any = s.back.transport
        self.assertLess(s.pipe.bytes_down, len(down), "the node read everything anyway")
        self.assertGreater(splicer.held, 0)  # bytes the client did not take wait in a pipe ...
        self.assertLessEqual(splicer.held, splice.POOL.size)  # ... one pipe's worth at most
        self.assertEqual((front._tempDataLen, len(front.dataBuffer) - front.offset), (0, 0))
        self.assertNotIn(back, reactor.getReaders())  # the back-end is not read ...
        self.assertIn(front, reactor.getWriters())  # ... until the client takes more
        s.client.resume()
        await until(lambda: len(s.client.received) >= len(down), "the rest to arrive")
        self.assertTrue(bytes(s.client.received) == down)
        await until(lambda: back in reactor.getReaders(), "the back-end to be read again")
        s.backend.transport.loseConnection()  # type: ignore[union-attr]
        await s.closed()
        s.assert_lost_once(self)

    async def test_bulk_reads_pause_the_source_briefly_small_ones_do_not(self) -> None:
        """A bulk sender is left alone a moment after each catch-up (fewer, larger reads)."""
        self.patch(splice, "COALESCE_DELAY", 30.0)  # long enough to look at
        s = await self.open()
        await self.spliced(s)
        splicer = s.pipe._splicer
        assert splicer is not None
        back: Any = s.back.transport
        s.backend.send(b"* 1 EXISTS\r\n")
        await until(lambda: len(s.client.received) == 12, "a small response")
        self.assertIsNone(splicer._down.pause)
        self.assertIn(back, reactor.getReaders())
        s.backend.send(payload(256 * 1024, 30))
        await until(lambda: splicer._down.pause is not None, "a pause after a bulk read")
        self.assertGreaterEqual(s.pipe.bytes_down, 12 + splice.COALESCE_BYTES)
        self.assertNotIn(back, reactor.getReaders())
        s.pipe.close()  # the pending pause goes too (trial fails on a leftover DelayedCall)
        self.assertIsNone(splicer._down.pause)
        await s.closed()
        s.assert_lost_once(self)

    async def test_backend_eof_drains_then_closes_both(self) -> None:
        """The back-end sends and closes while the client is slow: all of it still arrives."""
        s = await self.open()
        await self.spliced(s)
        down = payload(16 * MIB, 4)
        s.client.pause()
        s.backend.send(down)
        s.backend.transport.loseConnection()  # type: ignore[union-attr]
        await s.stalled_down()
        self.assertFalse(s.client.lost_count)
        s.client.resume()
        await s.closed()
        self.assertTrue(bytes(s.client.received) == down)
        self.assertEqual(s.pipe.bytes_down, len(down))
        s.assert_lost_once(self)

    async def test_client_eof_drains_then_closes_both(self) -> None:
        """The client sends and closes while the back-end is slow: all of it still arrives."""
        s = await self.open()
        await self.spliced(s)
        up = payload(16 * MIB, 5)
        s.backend.pause()
        s.client.send(up)
        s.client.transport.loseConnection()  # type: ignore[union-attr]
        await settled(lambda: s.pipe.bytes_up, "bytes read from the client")
        s.backend.resume()
        await s.closed()
        self.assertTrue(bytes(s.backend.received) == up)
        s.assert_lost_once(self)

    async def test_bytes_queued_before_the_switch_keep_their_order(self) -> None:
        """What Twisted holds when the Pipe is made, and the leftovers, go first."""
        login_reply = payload(8 * MIB, 6)  # more than the socket buffers: stays queued

        def reply_then_pipe(s: Session) -> None:
            s.client.pause()
            s.front.transport.write(login_reply)  # type: ignore[union-attr]

        s = await self.open(before_pipe=reply_then_pipe)
        s.pipe.to_client(b"leftover from the back-end\r\n")
        s.backend.send(b"first bytes relayed\r\n")
        # the switch waits for the queue to empty, which waits for the client
        await deferLater(reactor, 0.1, lambda: None)
        self.assertFalse(s.pipe.splicing)
        s.client.resume()
        await self.spliced(s)
        tail = payload(4 * MIB, 7)
        s.backend.send(tail)
        expected = login_reply + b"leftover from the back-end\r\nfirst bytes relayed\r\n" + tail
        await until(lambda: len(s.client.received) >= len(expected), "everything")
        self.assertTrue(bytes(s.client.received) == expected, "bytes out of order")
        # the drain hook is gone: the splicer writes now
        self.assertIs(vars(s.front.transport)["doWrite"].__self__, s.pipe._splicer)
        self.assertIsNone(s.pipe._hooks)
        s.client.transport.loseConnection()  # type: ignore[union-attr]
        await s.closed()
        s.assert_lost_once(self)

    async def test_close_flushes_what_the_node_read(self) -> None:
        """Pipe.close() (idle timeout) with bytes in a pipe: the client still gets them."""
        s = await self.open()
        await self.spliced(s)
        down = payload(32 * MIB, 8)
        s.client.pause()
        s.backend.send(down)
        await s.stalled_down()
        read = s.pipe.bytes_down
        s.pipe.close()
        self.assertFalse(s.pipe.splicing)
        s.client.resume()
        await s.closed()
        self.assertEqual(len(s.client.received), read)
        self.assertTrue(bytes(s.client.received) == down[:read])
        s.assert_lost_once(self)

    async def test_write_through_the_pipe_while_splicing(self) -> None:
        """to_client() in splice mode: back to Python, after what the kernel pipe held."""
        s = await self.open()
        await self.spliced(s)
        down = payload(24 * MIB, 9)
        s.client.pause()
        s.backend.send(down)
        await s.stalled_down()
        read = s.pipe.bytes_down
        s.pipe.to_client(b"* a line of our own\r\n")
        self.assertFalse(s.pipe.splicing)
        s.client.resume()
        expected = down[:read] + b"* a line of our own\r\n" + down[read:]
        await until(lambda: len(s.client.received) >= len(expected), "everything")
        self.assertTrue(bytes(s.client.received) == expected, "bytes out of order")
        s.backend.transport.loseConnection()  # type: ignore[union-attr]
        await s.closed()
        s.assert_lost_once(self)

    async def test_no_pipe_to_be_had_relays_through_python(self) -> None:
        """Out of fds (EMFILE) when a pipe is needed: the session goes on without splice."""

        class Exhausted(PipePool):
            def take(self) -> tuple[int, int]:
                raise OSError(errno.EMFILE, "Too many open files")

        self.patch(splice, "POOL", Exhausted())
        s = await self.open()
        await self.spliced(s)
        up, down = payload(2 * MIB, 10), payload(2 * MIB, 11)
        s.client.send(up)
        s.backend.send(down)
        await until(
            lambda: len(s.backend.received) >= len(up) and len(s.client.received) >= len(down),
            "4 MiB to cross",
        )
        self.assertFalse(s.pipe.splicing)
        self.assertTrue(bytes(s.backend.received) == up and bytes(s.client.received) == down)
        s.client.transport.loseConnection()  # type: ignore[union-attr]
        await s.closed()
        s.assert_lost_once(self)

    async def test_no_fd_left_behind(self) -> None:
        """Sockets and pipes of finished sessions are all closed (pipes held mid-transfer too)."""
        await deferLater(reactor, 0, lambda: None)  # the reactor's own fds (wakers) exist now
        splice.POOL.clear()
        before = set(os.listdir("/proc/self/fd"))
        for n in range(3):
            s = await self.open()
            await self.spliced(s)
            s.client.pause()
            s.backend.send(payload(16 * MIB, 12 + n))
            await s.stalled_down()
            assert s.pipe._splicer is not None
            self.assertGreater(s.pipe._splicer.held, 0)  # a pipe is lent right now
            (s.client if n % 2 else s.backend).transport.abortConnection()  # type: ignore[union-attr]
            s.client.resume()
            await s.closed()
            s.assert_lost_once(self)
        self.assertLessEqual(splice.POOL.open, splice.POOL.spare)  # spares only, none lent
        splice.POOL.clear()
        self.assertEqual(splice.POOL.open, 0)
        after = set(os.listdir("/proc/self/fd"))
        self.assertEqual(after, before, {fd: _target(fd) for fd in before ^ after})


def _target(fd: str) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return "?"


class FallbackTests(RelayTestCase):
    async def test_tls_leg_relays_through_python(self) -> None:
        """A TLS leg cannot be spliced: the Pipe relays (fast writes, producers) as before."""
        s = await self.open(tls_front=True)
        self.assertFalse(plain_tcp(s.front.transport))
        up, down = payload(3 * MIB, 20), payload(3 * MIB, 21)
        s.client.send(up)
        s.backend.send(down)
        await until(
            lambda: len(s.backend.received) >= len(up) and len(s.client.received) >= len(down),
            "6 MiB to cross",
        )
        self.assertFalse(s.pipe.splicing)
        self.assertTrue(bytes(s.backend.received) == up and bytes(s.client.received) == down)
        self.assertEqual((s.front.via_python, s.back.via_python), (len(up), len(down)))
        s.backend.transport.loseConnection()  # type: ignore[union-attr]
        await s.closed()
        s.assert_lost_once(self)

    async def test_starttls_transport_is_not_plain(self) -> None:
        s = await self.open()
        self.assertTrue(plain_tcp(s.front.transport))
        s.front.transport.TLS = True  # type: ignore[union-attr]  # what startTLS sets
        self.assertFalse(plain_tcp(s.front.transport))
        s.front.transport.TLS = False  # type: ignore[union-attr]
        s.client.transport.loseConnection()  # type: ignore[union-attr]
        await s.closed()

    async def test_disabled_splice_relays_through_python(self) -> None:
        self.patch(Pipe, "splice_enabled", False)
        s = await self.open()
        up = payload(3 * MIB, 22)
        s.client.send(up)
        await until(lambda: len(s.backend.received) >= len(up), "3 MiB to cross")
        self.assertFalse(s.pipe.splicing)
        self.assertEqual(s.front.via_python, len(up))
        s.client.transport.loseConnection()  # type: ignore[union-attr]
        await s.closed()
        s.assert_lost_once(self)

    async def test_closed_before_the_switch(self) -> None:
        """A session closed at once (client gone while the reply was queued) never splices."""

        def queued_reply(s: Session) -> None:
            s.client.pause()
            s.front.transport.write(payload(8 * MIB, 23))  # type: ignore[union-attr]

        s = await self.open(before_pipe=queued_reply)
        await deferLater(reactor, 0.05, lambda: None)
        s.pipe.close()
        self.assertNotIn("doWrite", vars(s.front.transport))
        s.client.resume()
        await s.closed()
        self.assertFalse(s.pipe.splicing)
        s.assert_lost_once(self)


class PipePoolTests(TestCase):
    if not splice.SPLICE_AVAILABLE:
        skip = "pipes sized with F_SETPIPE_SZ are Linux's"

    def test_spares_are_reused_and_extras_closed(self) -> None:
        pool = PipePool(spare=1)
        a, b = pool.take(), pool.take()
        self.assertEqual(pool.open, 2)
        pool.give(a)
        pool.give(b)  # one spare is enough: b is closed
        self.assertEqual(pool.open, 1)
        self.assertRaises(OSError, os.fstat, b[0])
        self.assertEqual(pool.take(), a)
        pool.give(a)
        pool.clear()
        self.assertEqual(pool.open, 0)
        self.assertRaises(OSError, os.fstat, a[0])

    def test_pipes_are_nonblocking_and_sized(self) -> None:
        import fcntl

        pool = PipePool(size=128 * 1024)
        r, w = pool.take()
        try:
            self.assertEqual(fcntl.fcntl(w, fcntl.F_GETPIPE_SZ), 128 * 1024)
            self.assertTrue(fcntl.fcntl(r, fcntl.F_GETFL) & os.O_NONBLOCK)
            self.assertRaises(BlockingIOError, os.read, r, 1)
        finally:
            pool.discard((r, w))


class LazySpliceTests(RelayTestCase):
    """Short sessions stay in Python; a session switches once it has moved splice_after."""

    if not splice.SPLICE_AVAILABLE:
        skip = "os.splice needs Linux"

    async def test_a_session_switches_only_after_moving_enough_bytes(self) -> None:
        self.patch(Pipe, "splice_after", 64 * 1024)
        s = await self.open()
        s.client.send(b"a1 NOOP\r\n")
        await until(lambda: len(s.backend.received) >= 9, "a short command to cross")
        await deferLater(reactor, 0.05, lambda: None)
        self.assertFalse(s.pipe.splicing)
        self.assertGreater(s.front.via_python, 0)
        down = payload(2 * MIB, 7)
        s.backend.send(down)
        await until(lambda: len(s.client.received) >= len(down), "2 MiB to cross")
        self.assertTrue(bytes(s.client.received) == down, "back-end -> client bytes differ")
        await self.spliced(s)
        s.client.transport.loseConnection()  # type: ignore[union-attr]
        await s.closed()
        s.assert_lost_once(self)
