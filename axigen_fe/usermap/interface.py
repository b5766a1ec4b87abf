"""The one question every proxy asks: where does this user's mailbox live?

Proxies see only L{IUserMap}; whether the answer comes from LDAP, a file or a cache is
the map's business. The four outcomes are kept apart on purpose: a directory outage
(L{Outcome.TEMPFAIL}) must never reach a client as a wrong password, while an unknown
user and a wrong password must look the same to the client (the proxy decides that).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from twisted.internet.defer import Deferred
from zope.interface import Attribute, Interface


class Outcome(enum.Enum):
    ROUTED = "routed"
    UNKNOWN_USER = "unknown-user"
    BAD_PASSWORD = "bad-password"
    TEMPFAIL = "tempfail"


@dataclass(frozen=True)
class LookupResult:
    """The answer for one address.

    @ivar host: the back-end host (only when routed).
    @ivar port: the back-end port when the map says one (C{host:port}), else None: the
        service's C{backend_port} applies.
    @ivar detail: a short reason for logs (never shown to clients, never a password).
    @ivar password_checked: the map verified the password it was given (a stored hash
        matched, or the directory accepted the bind). False for a route-only answer,
        including a file-map line that stores no hash: a proxy whose back-end will not
        check the password either (submission, master-user mode) must then refuse.
    """

    address: str
    outcome: Outcome
    host: str | None = None
    port: int | None = None
    detail: str = ""
    password_checked: bool = False

    @property
    def routed(self) -> bool:
        return self.outcome is Outcome.ROUTED


class IUserMap(Interface):
    """Routes addresses to back-ends and, when given a password, checks it."""

    name: str = Attribute("The map's name in the configuration.")
    checks_passwords_always: bool = Attribute(
        "True when the map cannot route without the password (ldap-bind): the proxy "
        "must pass the password even if it does not authenticate on the node."
    )

    def lookup(address: str, password: bytes | None = None) -> Deferred[LookupResult]:
        """Route C{address}; with C{password}, also verify it (BAD_PASSWORD if wrong).

        Never errbacks: every failure is a L{LookupResult} (TEMPFAIL for outages).
        """


def split_host_port(value: str) -> tuple[str, int | None]:
    """C{"host"} -> (host, None); C{"host:143"} -> (host, 143); C{"[::1]:143"} too."""
    value = value.strip()
    if value.startswith("["):
        end = value.find("]")
        host = value[1:end]
        rest = value[end + 1 :]
        return host, int(rest[1:]) if rest.startswith(":") and rest[1:].isdigit() else None
    if value.count(":") == 1:
        host, _, port = value.partition(":")
        if port.isdigit() and 0 < int(port) < 65536:
            return host, int(port)
    return value, None


def normalize_address(address: str) -> str:
    """Addresses compare case-insensitively (the local part too, as every peer does)."""
    return address.strip().lower()
