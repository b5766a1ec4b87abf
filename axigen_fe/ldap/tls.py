"""TLS towards the directory: always verified, against the configured CA or the system's.

ldaptor's own C{startTLS()} defaults to a context that checks nothing; the connector
never uses that default. Every TLS connection (C{ldaps://} and StartTLS) gets options
from L{client_options}, which verify the chain against the trust root and the server's
name against the URI's host (DNS name or IP address SAN, via service_identity).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import cast

from twisted.internet._sslverify import IOpenSSLTrustRoot  # public via ssl, typed here
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.internet.ssl import (
    Certificate,
    optionsForClientTLS,
    platformTrust,
    trustRootFromCertificates,
)

__all__ = ["TLSConfigError", "client_options", "load_trust_root"]

_PEM_CERT = re.compile(
    rb"-----BEGIN CERTIFICATE-----\r?\n.+?\r?\n-----END CERTIFICATE-----", re.DOTALL
)


class TLSConfigError(ValueError):
    """The configured CA file cannot be used; the message names the file and the fix."""


def load_trust_root(ca_file: Path | None) -> IOpenSSLTrustRoot:
    """The CAs to trust: every certificate in C{ca_file} (a bundle is fine), or the
    platform's trust store when no file is configured."""
    if ca_file is None:
        return cast(IOpenSSLTrustRoot, platformTrust())  # type: ignore[no-untyped-call]
    try:
        data = Path(ca_file).read_bytes()
    except OSError as e:
        raise TLSConfigError(f"cannot read ca_file {str(ca_file)!r}: {e.strerror}") from e
    blocks = _PEM_CERT.findall(data)
    if not blocks:
        raise TLSConfigError(
            f"ca_file {str(ca_file)!r} holds no PEM certificate "
            "('-----BEGIN CERTIFICATE-----'); convert DER files with "
            "'openssl x509 -inform der -in ca.der -out ca.pem'"
        )
    try:
        certificates = [Certificate.loadPEM(block) for block in blocks]
    except Exception as e:  # pyOpenSSL raises its own error types for bad PEM bodies
        raise TLSConfigError(f"ca_file {str(ca_file)!r} has an unreadable certificate: {e}") from e
    return cast(
        IOpenSSLTrustRoot,
        trustRootFromCertificates(certificates),  # type: ignore[no-untyped-call]
    )


def client_options(host: str, trust_root: IOpenSSLTrustRoot) -> IOpenSSLClientConnectionCreator:
    """Options that verify the server's certificate chain and that it is for C{host}.

    C{host} is the URI's host: a DNS name (sent as SNI, matched against DNS SANs) or
    an IP address (matched against IP SANs; no SNI, as RFC 6066 requires).
    """
    return optionsForClientTLS(host, trustRoot=trust_root)
