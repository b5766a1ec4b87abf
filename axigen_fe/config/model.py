"""The node's configuration as frozen, typed objects.

Only L{axigen_fe.config.load} builds these from a TOML file; everything else receives
them ready-made, so no module ever reads the raw file or guesses a default of its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path


class TLSMode(Enum):
    """How TLS is used on a leg: never, upgraded in-protocol, or from the first byte."""

    NONE = "none"
    STARTTLS = "starttls"
    IMPLICIT = "implicit"


class OnMultiple(Enum):
    """What a directory search that matches several entries means."""

    ERROR = "error"
    FIRST = "first"


class UserMapType(Enum):
    LDAP_PASSWORD = "ldap-password"
    LDAP_BIND = "ldap-bind"
    FILE = "file"


@dataclass(frozen=True)
class NodeConfig:
    name: str = "fe1"


@dataclass(frozen=True)
class LDAPConnectorConfig:
    """One directory: up to five URIs tried in order, one service identity, one search."""

    name: str
    uris: tuple[str, ...]
    base_dn: str
    filter: str = "(mail=%e)"
    start_tls: bool = False
    ca_file: Path | None = None
    bind_dn: str | None = None
    bind_password: str | None = field(default=None, repr=False)
    host_attribute: str = "mailHost"
    password_attribute: str = "userPassword"
    timeout: float = 4.0
    on_multiple: OnMultiple = OnMultiple.ERROR
    pool_size: int = 4


@dataclass(frozen=True)
class UserMapConfig:
    name: str
    type: UserMapType
    connector: str | None = None
    path: Path | None = None
    cache_ttl: float = 60.0
    negative_cache_ttl: float = 10.0


@dataclass(frozen=True)
class ListenerConfig:
    """One listening socket of a service (endpoint string + its TLS mode)."""

    endpoint: str
    tls: TLSMode = TLSMode.NONE
    cert_file: Path | None = None
    key_file: Path | None = None
    allow_plaintext_without_tls: bool = False
    loopback_plaintext: bool = True
    """Loopback peers may log in without TLS (health checks, local webmail)."""


@dataclass(frozen=True)
class ServiceConfig:
    """What every proxy service has: a map, a back-end port and TLS towards it, listeners."""

    kind: str
    usermap: str
    backend_port: int
    backend_tls: TLSMode = TLSMode.NONE
    backend_ca_file: Path | None = None
    forward_client_address: bool = True
    backend_connect_timeout: float = 10.0
    preauth_timeout: float = 60.0
    idle_timeout: float = 1860.0
    max_errors: int = 10
    max_auth_errors: int = 3
    listeners: tuple[ListenerConfig, ...] = ()


@dataclass(frozen=True)
class MailboxServiceConfig(ServiceConfig):
    """IMAP and POP3: log in on the node, replay the login on the back-end, relay."""

    authenticate_on_proxy: bool = True
    backend_master_user: str | None = None
    backend_master_password: str | None = field(default=None, repr=False)
    greeting: str = ""


@dataclass(frozen=True)
class SMTPServiceConfig(ServiceConfig):
    """Inbound SMTP (route per recipient) and submission (AUTH, relay via the user's back-end)."""

    hostname: str = "localhost"
    domains: tuple[str, ...] = ()
    max_message_size: int = 52428800
    max_recipients: int = 100
    require_auth: bool = False


@dataclass(frozen=True)
class NodeConfiguration:
    """Everything one node runs, as read from one file."""

    source: Path | None
    node: NodeConfig
    connectors: dict[str, LDAPConnectorConfig]
    usermaps: dict[str, UserMapConfig]
    services: dict[str, ServiceConfig]
