"""TLS towards the directory: always verified, against the configured CA or the system's.

ldaptor's own C{startTLS()} defaults to a context that checks nothing; the connector
never uses that default. Every TLS connection (C{ldaps://} and StartTLS) gets options
from L{client_options}, which verify the chain against the trust root and the server's
name against the URI's host (DNS name or IP address SAN, via service_identity).
"""

from __future__ import annotations

from twisted.internet._sslverify import IOpenSSLTrustRoot  # public via ssl, typed here
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.internet.ssl import (
    optionsForClientTLS,
)

from axigen_fe.net.tls import TLSConfigError
from axigen_fe.net.tls import trust_root as load_trust_root

__all__ = ["TLSConfigError", "client_options", "load_trust_root"]


def client_options(host: str, trust_root: IOpenSSLTrustRoot) -> IOpenSSLClientConnectionCreator:
    """Options that verify the server's certificate chain and that it is for C{host}.

    C{host} is the URI's host: a DNS name (sent as SNI, matched against DNS SANs) or
    an IP address (matched against IP SANs; no SNI, as RFC 6066 requires).
    """
    return optionsForClientTLS(host, trustRoot=trust_root)
