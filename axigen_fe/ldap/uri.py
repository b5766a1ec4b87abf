"""LDAP URIs as the connector needs them: scheme, host, port."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = ["LDAPURI", "parse_uri"]

_DEFAULT_PORTS = {"ldap": 389, "ldaps": 636}


@dataclass(frozen=True)
class LDAPURI:
    """One configured server. C{text} is the URI as configured, for logs."""

    scheme: str
    host: str
    port: int
    text: str

    @property
    def implicit_tls(self) -> bool:
        """C{ldaps://}: TLS from the first byte (StartTLS is for C{ldap://})."""
        return self.scheme == "ldaps"

    def __str__(self) -> str:
        return self.text


def parse_uri(text: str) -> LDAPURI:
    """Parse C{ldap://host[:port][/]} or C{ldaps://...}; IPv6 hosts go in brackets.

    A base DN, attributes or a filter in the URI are refused rather than ignored: the
    connector's own settings decide those, and a silently ignored part would mislead.

    @raise ValueError: with a message saying what is wrong and what is expected.
    """
    try:
        parts = urlsplit(text.strip())
        port = parts.port
    except ValueError as e:
        raise ValueError(f"LDAP URI {text!r}: {e}") from e
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise ValueError(f"LDAP URI {text!r}: the scheme must be ldap:// or ldaps://")
    if not parts.hostname:
        raise ValueError(f"LDAP URI {text!r} has no host; write e.g. ldap://ldap1.example.com")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(
            f"LDAP URI {text!r}: only scheme, host and port are used; "
            "set the base DN and filter in the connector instead"
        )
    if parts.username is not None:
        raise ValueError(f"LDAP URI {text!r}: put credentials in bind_dn / bind_password")
    return LDAPURI(scheme, parts.hostname, port or _DEFAULT_PORTS[scheme], text.strip())
