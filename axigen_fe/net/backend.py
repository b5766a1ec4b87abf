"""Connect to a user's back-end: TCP with a timeout, TLS from the first byte if asked.

STARTTLS is protocol business, so the protocol asks L{BackendConnector.tls_options}
for the verifying options and calls C{transport.startTLS} itself.
"""

from __future__ import annotations

from typing import TypeVar

from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import (
    HostnameEndpoint,
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
    wrapClientTLS,
)
from twisted.internet.interfaces import (
    IOpenSSLClientConnectionCreator,
    IProtocol,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import Factory

from axigen_fe.config.model import TLSMode
from axigen_fe.net.tls import ClientTLS

P = TypeVar("P", bound=IProtocol)


class BackendConnector:
    """Per-service connector: one back-end TLS mode, one CA, one connect timeout."""

    def __init__(self, reactor: object, tls_mode: TLSMode, ca_file: object, timeout: float) -> None:
        from pathlib import Path

        self._reactor = reactor
        self.tls_mode = tls_mode
        self.timeout = timeout
        self._tls = (
            ClientTLS(ca_file if isinstance(ca_file, Path) else None)
            if tls_mode is not TLSMode.NONE
            else None
        )

    def tls_options(self, host: str) -> IOpenSSLClientConnectionCreator:
        """Verifying client TLS options for C{host} (the mapped host name or IP)."""
        if self._tls is None:
            raise RuntimeError("back-end TLS is off for this service")
        return self._tls.options_for(host)

    def _endpoint(self, host: str, port: int) -> IStreamClientEndpoint:
        ep: IStreamClientEndpoint
        if isIPAddress(host):
            ep = TCP4ClientEndpoint(self._reactor, host, port, timeout=self.timeout)
        elif isIPv6Address(host):
            ep = TCP6ClientEndpoint(self._reactor, host, port, timeout=self.timeout)
        else:
            ep = HostnameEndpoint(self._reactor, host.encode("idna"), port, timeout=self.timeout)
        if self.tls_mode is TLSMode.IMPLICIT:
            ep = wrapClientTLS(self.tls_options(host), ep)
        return ep

    def connect(self, host: str, port: int, protocol: P) -> Deferred[P]:
        """Connect C{protocol} to C{host:port}; errback on refusal, timeout or TLS failure."""
        factory = _OneProtocol(protocol)
        return self._endpoint(host, port).connect(factory).addCallback(lambda _: protocol)


class _OneProtocol(Factory):
    """C{connectProtocol}'s factory, minus its two log lines per connection (C{noisy})."""

    noisy = False

    def __init__(self, protocol: IProtocol) -> None:
        self._protocol = protocol

    def buildProtocol(self, addr: object) -> IProtocol:  # type: ignore[override]
        return self._protocol
