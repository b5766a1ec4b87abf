"""Who the demo users are and where every demo server listens.

One place decides the addresses and ports, so the directory, the back-ends, the node's
configuration and C{etc/demo.toml} cannot disagree. Every port is C{base_port} plus the
protocol's well-known number (10143 for IMAP with the default base), back-end ports are
the node's plus 1000 (11143), so a reader can tell at a glance which is which.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

DOMAIN = "demo.test"
BASE_DN = "dc=demo,dc=test"
PEOPLE_DN = f"ou=people,{BASE_DN}"
PROXY_DN = f"cn=proxy,ou=services,{BASE_DN}"
PROXY_PASSWORD = "proxy-secret"

DEFAULT_BASE_PORT = 10000
DEFAULT_BACKEND_HOSTS = ("127.0.0.11", "127.0.0.12")
DIRECTORY_HOST = "127.0.0.1"
"""The directory serves user password hashes to anyone: it listens on loopback only,
whatever C{--demo-host} says."""

BACKEND_PORT_OFFSET = 1000


@dataclass(frozen=True)
class DemoUser:
    """A demo mailbox: the address and password a client logs in with, and its back-end."""

    uid: str
    password: str
    backend: int
    """1 or 2: which demo back-end holds the mailbox."""
    display_name: str

    @property
    def address(self) -> str:
        return f"{self.uid}@{DOMAIN}"


DEMO_USERS = (
    DemoUser("alice", "alice", 1, "Alice Demo"),
    DemoUser("bob", "bob", 2, "Bob Demo"),
)


@dataclass(frozen=True)
class DemoLayout:
    """Addresses and ports of one demo run (defaults: the documented ones)."""

    host: str = "127.0.0.1"
    """Where the node's demo listeners bind (C{--demo-host})."""
    base_port: int = DEFAULT_BASE_PORT
    backend_hosts: tuple[str, str] = DEFAULT_BACKEND_HOSTS

    def __post_init__(self) -> None:
        if not 1 <= self.base_port or self.base_port + BACKEND_PORT_OFFSET + 587 > 65535:
            highest = 65535 - BACKEND_PORT_OFFSET - 587
            raise ValueError(f"demo base port {self.base_port} is out of range; use 1..{highest}")
        example = "e.g. --demo-backends 127.0.0.11,127.0.0.12"
        if len(self.backend_hosts) != 2 or self.backend_hosts[0] == self.backend_hosts[1]:
            raise ValueError(f"the demo needs two distinct back-end addresses, {example}")
        for host in self.backend_hosts:
            try:
                ipaddress.IPv4Address(host)
            except ValueError:
                why = f"back-end address {host!r} is not an IPv4 address, {example}"
                raise ValueError(why) from None

    # The node's listeners.
    @property
    def imap_port(self) -> int:
        return self.base_port + 143

    @property
    def pop3_port(self) -> int:
        return self.base_port + 110

    @property
    def smtp_port(self) -> int:
        return self.base_port + 25

    @property
    def submission_port(self) -> int:
        return self.base_port + 587

    # The directory.
    @property
    def ldap_port(self) -> int:
        return self.base_port + 389

    @property
    def ldap_uri(self) -> str:
        return f"ldap://{DIRECTORY_HOST}:{self.ldap_port}"

    # The back-ends (the same ports on both back-end addresses).
    @property
    def backend_imap_port(self) -> int:
        return self.imap_port + BACKEND_PORT_OFFSET

    @property
    def backend_pop3_port(self) -> int:
        return self.pop3_port + BACKEND_PORT_OFFSET

    @property
    def backend_smtp_port(self) -> int:
        return self.smtp_port + BACKEND_PORT_OFFSET

    @property
    def backend_submission_port(self) -> int:
        return self.submission_port + BACKEND_PORT_OFFSET

    def backend_host(self, user: DemoUser) -> str:
        return self.backend_hosts[user.backend - 1]
