"""Talking to LDAP directories: the only package that imports ldaptor's client.

L{LDAPConnector} searches one directory (pooled bound connections, URI failover,
per-step timeouts, verified TLS) and checks passwords by bind; L{DirectoryUnavailable}
is every outage. L{build_filter} turns a filter template and a client's address into a
safe search filter (RFC 4515 escaping).
"""

from axigen_fe.ldap.connector import (
    DirectoryClient,
    DirectoryUnavailable,
    LDAPConnector,
    SearchEntry,
)
from axigen_fe.ldap.escape import (
    FilterError,
    build_filter,
    escape_dn_value,
    escape_filter_value,
    expand_filter,
    filter_text,
    parse_filter,
    validate_template,
)
from axigen_fe.ldap.tls import TLSConfigError
from axigen_fe.ldap.uri import LDAPURI, parse_uri

__all__ = [
    "LDAPURI",
    "DirectoryClient",
    "DirectoryUnavailable",
    "FilterError",
    "LDAPConnector",
    "SearchEntry",
    "TLSConfigError",
    "build_filter",
    "escape_dn_value",
    "escape_filter_value",
    "expand_filter",
    "filter_text",
    "parse_filter",
    "parse_uri",
    "validate_template",
]
