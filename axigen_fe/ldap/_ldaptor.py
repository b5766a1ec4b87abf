"""The one door to ldaptor: every ldaptor name the project uses is imported here.

ldaptor 21.2 builds its filter grammar with pyparsing's pre-3.0 camelCase API, which
pyparsing 3.1+ reports with a L{DeprecationWarning} at import time and on every
C{parseString} call. Those warnings say nothing about our code and would bury real
ones (and fail test runs that turn warnings into errors), so they are silenced here,
for ldaptor's calls only.

ldaptor has no type hints: its objects are C{Any} to mypy, which is why the rest of
L{axigen_fe.ldap} wraps them in small typed functions instead of passing them around.
"""

from __future__ import annotations

import warnings
from typing import Any

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from ldaptor import ldapfilter as _ldapfilter
    from ldaptor.protocols import pureldap
    from ldaptor.protocols.ldap import ldaperrors
    from ldaptor.protocols.ldap.ldapclient import LDAPClient, LDAPClientConnectionLostException

__all__ = [
    "InvalidLDAPFilter",
    "LDAPClient",
    "LDAPClientConnectionLostException",
    "ldaperrors",
    "parse_filter_text",
    "pureldap",
    "result_code_name",
]

InvalidLDAPFilter = _ldapfilter.InvalidLDAPFilter


def parse_filter_text(text: str) -> Any:
    """C{ldaptor.ldapfilter.parseFilter}, without pyparsing's deprecation noise."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return _ldapfilter.parseFilter(text)


def result_code_name(code: int) -> str:
    """C{49} -> C{"invalidCredentials"}; unknown codes -> C{"resultCode 123"}."""
    cls = ldaperrors.reverse.get(code)
    name = getattr(cls, "name", None)
    if isinstance(name, bytes):
        return name.decode("ascii", "replace")
    return f"resultCode {code}"
