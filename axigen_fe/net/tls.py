"""TLS contexts: one per listener certificate and one per back-end CA, never one per connection.

Building an OpenSSL context costs milliseconds and tens of KiB, so listeners share one
server context and back-end connections share one client context per (CA, hostname).
Back-end certificates are always verified, hostname included (IP SANs for IP hosts).
"""

from __future__ import annotations

from pathlib import Path
from typing import cast

from OpenSSL import SSL, crypto
from twisted.internet import ssl
from twisted.internet._sslverify import IOpenSSLTrustRoot
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator


def _pem_blocks(data: bytes, kind: bytes) -> list[bytes]:
    begin = b"-----BEGIN " + kind + b"-----"
    end = b"-----END " + kind + b"-----"
    blocks = []
    start = data.find(begin)
    while start != -1:
        stop = data.find(end, start)
        if stop == -1:
            break
        blocks.append(data[start : stop + len(end)] + b"\n")
        start = data.find(begin, stop)
    return blocks


def server_options(cert_file: Path, key_file: Path | None) -> ssl.CertificateOptions:
    """Server-side options from a PEM certificate (chain allowed) and key.

    C{key_file} may be None when the key is in C{cert_file}. TLS 1.2 is the floor.
    """
    cert_pem = cert_file.read_bytes()
    key_pem = key_file.read_bytes() if key_file is not None else cert_pem
    certs = _pem_blocks(cert_pem, b"CERTIFICATE")
    if not certs:
        raise ValueError(f"{cert_file} holds no PEM certificate")
    leaf = ssl.Certificate.loadPEM(certs[0])
    key = ssl.KeyPair.load(key_pem, crypto.FILETYPE_PEM)
    chain = [ssl.Certificate.loadPEM(c).original for c in certs[1:]]
    return ssl.CertificateOptions(
        privateKey=key.original,
        certificate=leaf.original,
        extraCertChain=chain,
        raiseMinimumTo=ssl.TLSVersion.TLSv1_2,
    )


class TLSConfigError(ValueError):
    """A configured CA file cannot be used; the message names the file and the fix."""


def trust_root(ca_file: Path | None) -> IOpenSSLTrustRoot:
    """The CAs to verify a peer against: every certificate in the PEM bundle C{ca_file},
    or the platform's trust store when no file is configured."""
    if ca_file is None:
        return cast(IOpenSSLTrustRoot, ssl.platformTrust())
    try:
        data = Path(ca_file).read_bytes()
    except OSError as e:
        raise TLSConfigError(f"cannot read ca_file {str(ca_file)!r}: {e.strerror}") from e
    blocks = _pem_blocks(data, b"CERTIFICATE")
    if not blocks:
        raise TLSConfigError(
            f"ca_file {str(ca_file)!r} holds no PEM certificate "
            "('-----BEGIN CERTIFICATE-----'); convert DER files with "
            "'openssl x509 -inform der -in ca.der -out ca.pem'"
        )
    try:
        certificates = [ssl.Certificate.loadPEM(block) for block in blocks]
    except Exception as e:  # pyOpenSSL raises its own error types for bad PEM bodies
        raise TLSConfigError(f"ca_file {str(ca_file)!r} has an unreadable certificate: {e}") from e
    return cast(IOpenSSLTrustRoot, ssl.trustRootFromCertificates(certificates))


class ClientTLS:
    """Verifying client options, cached per hostname, for one CA bundle.

    One instance per back-end CA file (or the system store); shared by every session.
    """

    def __init__(self, ca_file: Path | None) -> None:
        self._trust = trust_root(ca_file)
        self._cache: dict[str, IOpenSSLClientConnectionCreator] = {}

    def options_for(self, hostname: str) -> IOpenSSLClientConnectionCreator:
        opts = self._cache.get(hostname)
        if opts is None:
            opts = ssl.optionsForClientTLS(hostname, trustRoot=self._trust)
            if len(self._cache) > 1024:
                self._cache.clear()
            self._cache[hostname] = opts
        return opts


__all__ = ["SSL", "ClientTLS", "TLSConfigError", "server_options", "trust_root"]
