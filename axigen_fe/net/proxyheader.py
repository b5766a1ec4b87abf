"""PROXY protocol (v1 and v2) listeners for server-first protocols (IMAP, POP3, SMTP).

Twisted's C{haproxy:} endpoint (L{twisted.protocols.haproxy}) connects the wrapped
protocol as soon as the TCP connection is accepted and parses the header later, as data
arrives. That suits client-first protocols (HTTP) but not ours: C{connectionMade} sends
the greeting, records the peer and decides the plaintext policy before the header was
read, so the session logs and forwards the balancer's address, a client that bypasses
the balancer is greeted, and a remote client behind a loopback balancer counts as
local. This wrapper holds the session back until a complete header has been parsed:
only then does the wrapped protocol see C{makeConnection}, with C{getPeer()} and
C{getHost()} answering from the header. No header, a bad header, or none within
C{timeout} seconds: the connection is closed without a byte written.

On a TCP (or UNIX) socket the wrapper then steps aside: the session is connected to the
socket's own transport, whose C{getPeer}/C{getHost} answer from the header, and Twisted
delivers to the session directly. Sessions behind a load balancer so relay the way
sessions on a bare listener do: fast writes and, with both legs plaintext, splice.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import tcp
from twisted.internet.endpoints import _WrapperServerEndpoint
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IProtocol,
    IReactorTime,
    IStreamServerEndpoint,
    ITransport,
)
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.protocols import policies
from twisted.protocols.haproxy._exceptions import InvalidProxyHeader
from twisted.protocols.haproxy._info import ProxyInfo
from twisted.protocols.haproxy._v1parser import V1Parser
from twisted.protocols.haproxy._v2parser import V2Parser
from twisted.python.failure import Failure
from zope.interface import directlyProvides, providedBy

_log = Logger(namespace="axigen_fe.proxyheader")

#: seconds a client may take to send the header (a balancer sends it at once)
HEADER_TIMEOUT = 10.0
_V1 = b"PROXY "
_V2 = V2Parser.PREFIX


class ProxyHeaderProtocol(policies.ProtocolWrapper):
    """Reads the PROXY header, then connects the wrapped protocol (see the module doc)."""

    factory: ProxyHeaderFactory

    def __init__(self, factory: ProxyHeaderFactory, wrappedProtocol: IProtocol) -> None:
        super().__init__(factory, wrappedProtocol)  # type: ignore[arg-type]
        self._info: ProxyInfo | None = None
        self._buffer = b""
        self._parser: V1Parser | V2Parser | None = None
        self._timer: IDelayedCall | None = None
        self._connected = False

    def makeConnection(self, transport: ITransport) -> None:
        directlyProvides(self, providedBy(transport))
        Protocol.makeConnection(self, transport)
        self.factory.registerProtocol(self)  # type: ignore[no-untyped-call]
        self._timer = self.factory.clock.callLater(self.factory.timeout, self._expired)

    def _expired(self) -> None:
        self._timer = None
        self._refuse("no PROXY header within the time limit")

    def _refuse(self, why: str) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        assert self.transport is not None
        peer = self.transport.getPeer()
        _log.warn(
            "PROXY listener {endpoint}: closed the connection from {peer}: {why} "
            "(only the load balancer may connect here)",
            endpoint=self.factory.description,
            peer=f"{getattr(peer, 'host', peer)}:{getattr(peer, 'port', '')}",
            why=why,
        )
        self.transport.abortConnection()  # type: ignore[attr-defined]

    def dataReceived(self, data: bytes) -> None:
        if self._connected:
            self.wrappedProtocol.dataReceived(data)
            return
        if self._parser is None:
            self._buffer += data
            head = self._buffer
            if head[:16].startswith(_V1) or (len(head) < len(_V1) and _V1.startswith(head)):
                if len(head) < len(_V1):
                    return
                self._parser = V1Parser()
            elif head.startswith(_V2) and len(head) >= 13:
                if ord(head[12:13]) & 0xF0 != 0x20:
                    self._refuse("unsupported PROXY v2 version")
                    return
                if len(head) < 16:
                    return
                self._parser = V2Parser()
            elif _V2.startswith(head[:12]) and len(head) < 13:
                return
            else:
                self._refuse("the connection did not start with a PROXY header")
                return
            data, self._buffer = self._buffer, b""
        try:
            info, remaining = self._parser.feed(data)
        except InvalidProxyHeader:
            self._refuse("invalid PROXY header")
            return
        if info is None:
            return
        self._info = info
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self._connected = True
        wrapped = self.wrappedProtocol
        transport: Any = self.transport
        if isinstance(transport, tcp.Connection) and getattr(transport, "protocol", None) is self:
            self._step_aside(transport, info)
            wrapped.makeConnection(transport)
        else:
            wrapped.makeConnection(self)  # type: ignore[arg-type]
            transport = self
        if remaining and not getattr(transport, "disconnecting", False):
            wrapped.dataReceived(remaining)

    def _step_aside(self, transport: Any, info: ProxyInfo) -> None:
        """Hand the socket's transport to the session, showing the header's addresses."""
        source, destination = info.source, info.destination
        if source is not None:
            transport.getPeer = lambda: source
        if destination is not None:
            transport.getHost = lambda: destination
        self.factory.unregisterProtocol(self)  # type: ignore[no-untyped-call]
        transport.protocol = self.wrappedProtocol  # Twisted now calls the session itself

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if self._connected:
            super().connectionLost(reason)  # type: ignore[no-untyped-call]
        else:
            self.factory.unregisterProtocol(self)  # type: ignore[no-untyped-call]

    def getPeer(self) -> IAddress:
        if self._info is not None and self._info.source is not None:
            return self._info.source
        assert self.transport is not None
        return self.transport.getPeer()

    def getHost(self) -> IAddress:
        if self._info is not None and self._info.destination is not None:
            return self._info.destination
        assert self.transport is not None
        return self.transport.getHost()


class ProxyHeaderFactory(policies.WrappingFactory):
    protocol = ProxyHeaderProtocol

    def __init__(
        self,
        wrappedFactory: Any,
        clock: IReactorTime,
        timeout: float = HEADER_TIMEOUT,
        description: str = "",
    ) -> None:
        super().__init__(wrappedFactory)  # type: ignore[no-untyped-call]
        self.clock = clock
        self.timeout = timeout
        self.description = description


def proxy_header_endpoint(
    clock: IReactorTime,
    endpoint: IStreamServerEndpoint,
    timeout: float = HEADER_TIMEOUT,
    description: str = "",
) -> IStreamServerEndpoint:
    """C{endpoint}, accepting only connections that start with a PROXY v1/v2 header."""
    return _WrapperServerEndpoint(
        endpoint, lambda f: ProxyHeaderFactory(f, clock, timeout, description)
    )
