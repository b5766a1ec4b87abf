"""Listeners: an endpoint description, a TLS mode, and the facts a protocol needs about them.

Endpoints come from C{serverFromString}, so operators get tcp, tcp6, unix, systemd
socket activation and HAProxy's PROXY protocol (C{haproxy:tcp:...}) without new code.
"""

from __future__ import annotations

from dataclasses import dataclass

from twisted.application.internet import StreamServerEndpointService
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.endpoints import serverFromString, wrapServerTLS
from twisted.internet.interfaces import IAddress, IProtocolFactory
from twisted.internet.ssl import CertificateOptions

from axigen_fe.config.model import ListenerConfig, TLSMode
from axigen_fe.net.tls import server_options


@dataclass(frozen=True)
class ListenerContext:
    """What a session protocol must know about the socket it was accepted on."""

    endpoint: str
    tls: TLSMode
    server_tls: CertificateOptions | None
    allow_plaintext_without_tls: bool
    loopback_plaintext: bool

    @property
    def offers_starttls(self) -> bool:
        return self.tls is TLSMode.STARTTLS and self.server_tls is not None

    def plaintext_login_allowed(self, tls_active: bool, peer: IAddress) -> bool:
        """May a password cross this connection now? (RFC 8314: not in the clear.)"""
        if tls_active or self.allow_plaintext_without_tls:
            return True
        return self.loopback_plaintext and is_loopback(peer)


def is_loopback(peer: IAddress) -> bool:
    if isinstance(peer, (IPv4Address, IPv6Address)):
        host = peer.host
        return host.startswith("127.") or host == "::1" or host.startswith("::ffff:127.")
    return True  # unix sockets are local by definition


def listener_context(cfg: ListenerConfig) -> ListenerContext:
    """Build the shared TLS context once for the listener (never per connection)."""
    tls = None
    if cfg.tls is not TLSMode.NONE and cfg.cert_file is not None:
        tls = server_options(cfg.cert_file, cfg.key_file)
    return ListenerContext(
        cfg.endpoint, cfg.tls, tls, cfg.allow_plaintext_without_tls, cfg.loopback_plaintext
    )


def listener_service(
    reactor: object, ctx: ListenerContext, factory: IProtocolFactory
) -> StreamServerEndpointService:
    """A service that listens on C{ctx.endpoint}, with TLS from the first byte if implicit."""
    description = ctx.endpoint
    if description.startswith("haproxy:"):
        # Twisted's own haproxy: wrapper starts the session before the header is read:
        # wrong for server-first protocols (see net/proxyheader.py)
        from axigen_fe.net.proxyheader import proxy_header_endpoint

        inner = serverFromString(reactor, description[len("haproxy:") :])
        endpoint = proxy_header_endpoint(reactor, inner, description=description)  # type: ignore[arg-type]
    else:
        endpoint = serverFromString(reactor, description)
    if ctx.tls is TLSMode.IMPLICIT and ctx.server_tls is not None:
        endpoint = wrapServerTLS(ctx.server_tls, endpoint)
    service = StreamServerEndpointService(endpoint, factory)
    # a port in use must stop start-up, not be logged and ignored
    service._raiseSynchronously = True
    return service
