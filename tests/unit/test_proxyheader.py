"""PROXY-protocol listeners start the session only after a whole, valid header."""

from __future__ import annotations

import socket

from twisted.internet import tcp
from twisted.internet.address import IPv4Address
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactor, StringTransportWithDisconnection

from axigen_fe.net.proxyheader import ProxyHeaderFactory

V2_HEADER = (
    b"\r\n\r\n\x00\r\nQUIT\n"  # signature
    + b"\x21\x11\x00\x0c"  # v2 PROXY, TCP over IPv4, 12 bytes of addresses
    + bytes([127, 77, 1, 2])
    + bytes([127, 0, 0, 1])
    + (40000).to_bytes(2, "big")
    + (143).to_bytes(2, "big")
)


class Greeter(Protocol):
    """Stands for IMAP/POP3/SMTP: speaks first, remembers its peer."""

    def __init__(self) -> None:
        self.peer: object = None
        self.received = b""
        self.lost = False

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.peer = self.transport.getPeer()
        self.transport.write(b"* OK hello\r\n")

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: object = None) -> None:
        self.lost = True


def _connect() -> tuple[Greeter, object, StringTransportWithDisconnection, Clock]:
    clock = Clock()
    inner = Greeter()
    factory = ProxyHeaderFactory(Factory.forProtocol(lambda: inner), clock, timeout=10.0)
    proto = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 5555))
    transport = StringTransportWithDisconnection(peerAddress=IPv4Address("TCP", "127.0.0.1", 5555))
    transport.protocol = proto
    proto.makeConnection(transport)
    return inner, proto, transport, clock


def test_the_session_starts_only_after_the_header_and_sees_the_client_address() -> None:
    inner, proto, transport, _ = _connect()
    assert transport.value() == b"" and inner.peer is None
    for i in range(0, len(V2_HEADER), 5):  # a header split over several reads
        proto.dataReceived(V2_HEADER[i : i + 5])  # type: ignore[attr-defined]
    assert transport.value() == b"* OK hello\r\n"
    assert (inner.peer.host, inner.peer.port) == ("127.77.1.2", 40000)  # type: ignore[attr-defined]


def test_bytes_after_the_header_reach_the_session() -> None:
    inner, proto, _, _ = _connect()
    proto.dataReceived(b"PROXY TCP4 127.77.1.3 127.0.0.1 4444 143\r\na1 CAPABILITY\r\n")  # type: ignore[attr-defined]
    assert inner.received == b"a1 CAPABILITY\r\n"
    assert inner.peer.host == "127.77.1.3"  # type: ignore[attr-defined]


def test_a_client_without_a_header_is_closed_without_a_greeting() -> None:
    inner, proto, transport, _ = _connect()
    proto.dataReceived(b"a1 LOGIN alice secret\r\n")  # type: ignore[attr-defined]
    assert transport.value() == b"" and inner.peer is None
    assert transport.disconnected or transport.disconnecting


def test_a_silent_client_is_closed_after_the_header_timeout() -> None:
    inner, _, transport, clock = _connect()
    clock.advance(9.9)
    assert not (transport.disconnected or transport.disconnecting)
    clock.advance(0.2)
    assert transport.disconnected or transport.disconnecting
    assert transport.value() == b"" and inner.peer is None


def test_on_a_tcp_socket_the_wrapper_steps_aside_after_the_header() -> None:
    """The session gets the socket's own transport (so the relay can write on it at once
    and splice it), answering getPeer/getHost from the header; Twisted calls the session."""
    clock = Clock()
    inner = Greeter()
    factory = ProxyHeaderFactory(Factory.forProtocol(lambda: inner), clock, timeout=10.0)
    balancer = ("127.0.0.1", 5555)
    proto = factory.buildProtocol(IPv4Address("TCP", *balancer))
    ours, theirs = socket.socketpair()
    try:
        transport = tcp.Server(ours, proto, balancer, None, 1, MemoryReactor())
        proto.makeConnection(transport)
        transport.protocol.dataReceived(V2_HEADER + b"a1 NOOP\r\n")
        assert transport.protocol is inner and inner.transport is transport
        assert (inner.peer.host, inner.peer.port) == ("127.77.1.2", 40000)  # type: ignore[attr-defined]
        host = transport.getHost()
        assert (host.host, host.port) == ("127.0.0.1", 143)
        assert inner.received == b"a1 NOOP\r\n"
        assert proto not in factory.protocols  # nothing of the wrapper is kept
        assert not clock.getDelayedCalls()  # the header timer is gone
    finally:
        ours.close()
        theirs.close()
