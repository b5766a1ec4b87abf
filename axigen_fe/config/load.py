"""TOML file -> L{NodeConfiguration}, with every problem named by file, key and fix.

Problems are collected rather than raised one at a time, so C{axigen-fe check-config}
can show an operator all of them in one run.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

from axigen_fe.config.model import (
    LDAPConnectorConfig,
    ListenerConfig,
    MailboxServiceConfig,
    NodeConfig,
    NodeConfiguration,
    OnMultiple,
    ServiceConfig,
    SMTPServiceConfig,
    TLSMode,
    UserMapConfig,
    UserMapType,
)

T = TypeVar("T")

SERVICE_KINDS = ("imap", "pop3", "smtp", "submission", "webmail")
#: parsed so the file format is stable, refused until the proxy exists
NOT_YET_AVAILABLE = ("webmail",)
DEFAULT_BACKEND_PORTS = {"imap": 143, "pop3": 110, "smtp": 25, "submission": 587, "webmail": 80}
DEFAULT_GREETINGS = {"imap": "IMAP4rev1 proxy ready", "pop3": "POP3 proxy ready"}


@dataclass(frozen=True)
class ConfigProblem:
    """One thing wrong with a config file, worded as C{FILE: key: what; fix}."""

    file: str
    key: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.key}: {self.message}"


class ConfigError(Exception):
    """The file cannot be used; C{problems} says every reason."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


class _Reader:
    """Typed access to one TOML table that records problems instead of raising."""

    def __init__(self, ctx: _Context, table: Mapping[str, Any], path: str) -> None:
        self._ctx = ctx
        self._table = table
        self._path = path
        self._seen: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self._path}.{name}" if self._path else name

    def has(self, name: str) -> bool:
        return name in self._table

    def _get(self, name: str, kind: type | tuple[type, ...], what: str, default: Any) -> Any:
        self._seen.add(name)
        if name not in self._table:
            return default
        value = self._table[name]
        if isinstance(value, bool) and kind in (int, float, (int, float)):
            self._ctx.problem(self.key(name), f"expected {what}, got {value!r}; write a number")
            return default
        if not isinstance(value, kind):
            self._ctx.problem(self.key(name), f"expected {what}, got {value!r}")
            return default
        return value

    def string(self, name: str, default: Any = None, *, required: bool = False) -> Any:
        if required and name not in self._table:
            self._seen.add(name)
            self._ctx.problem(self.key(name), "missing; this key is required")
            return default
        return self._get(name, str, "a string", default)

    def boolean(self, name: str, default: bool) -> bool:
        return bool(self._get(name, bool, "true or false", default))

    def integer(
        self, name: str, default: int, *, minimum: int = 0, maximum: int | None = None
    ) -> int:
        value = int(self._get(name, int, "a whole number", default))
        if value < minimum or (maximum is not None and value > maximum):
            upper = f" and {maximum}" if maximum is not None else ""
            self._ctx.problem(
                self.key(name), f"{value} is out of range; use a number between {minimum}{upper}"
            )
            return default
        return value

    def number(self, name: str, default: float, *, minimum: float = 0.0) -> float:
        value = float(self._get(name, (int, float), "a number of seconds", default))
        if value < minimum:
            self._ctx.problem(self.key(name), f"{value} is out of range; use a number >= {minimum}")
            return default
        return value

    def strings(self, name: str, default: tuple[str, ...] = ()) -> tuple[str, ...]:
        value = self._get(name, list, "a list of strings", None)
        if value is None:
            return default
        if not all(isinstance(v, str) for v in value):
            self._ctx.problem(self.key(name), 'expected a list of strings, e.g. ["a", "b"]')
            return default
        return tuple(value)

    def choice(
        self, name: str, enum: Callable[[str], Any], default: T, choices: tuple[str, ...]
    ) -> T:
        value = self.string(name)
        if value is None:
            return default
        try:
            return cast(T, enum(value))
        except ValueError:
            options = " | ".join(f'"{c}"' for c in choices)
            self._ctx.problem(self.key(name), f"{value!r} is not allowed; use one of {options}")
            return default

    def path(self, name: str) -> Path | None:
        value = self.string(name)
        if value is None or value == "":
            return None
        p = Path(value)
        return p if p.is_absolute() else self._ctx.base / p

    def secret(self, name: str) -> str | None:
        """C{name} inline or C{name_file}: a file holding the secret (first line)."""
        inline = self.string(name)
        file_key = f"{name}_file"
        file_path = self.path(file_key)
        if inline is not None and file_path is not None:
            self._ctx.problem(self.key(file_key), f"set either {name} or {file_key}, not both")
        if file_path is not None:
            try:
                return (
                    file_path.read_text(encoding="utf-8").splitlines()[0]
                    if file_path.stat().st_size
                    else ""
                )
            except OSError as e:
                self._ctx.problem(
                    self.key(file_key),
                    f"cannot read {file_path}: {e.strerror}; fix the path or permissions",
                )
                return None
        return inline  # type: ignore[no-any-return]

    def tables(self, name: str) -> list[_Reader]:
        self._seen.add(name)
        value = self._table.get(name, [])
        if isinstance(value, dict):
            return [_Reader(self._ctx, value, self.key(name))]
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            self._ctx.problem(self.key(name), f"expected [[{self.key(name)}]] tables")
            return []
        return [_Reader(self._ctx, v, f"{self.key(name)}[{i}]") for i, v in enumerate(value)]

    def done(self) -> None:
        """Report keys nobody asked for: a typo must not silently become a default."""
        for name in self._table:
            if name not in self._seen:
                self._ctx.problem(self.key(name), "unknown key; remove it or check its spelling")


class _Context:
    def __init__(self, file: str, base: Path) -> None:
        self.file = file
        self.base = base
        self.problems: list[ConfigProblem] = []

    def problem(self, key: str, message: str) -> None:
        self.problems.append(ConfigProblem(self.file, key, message))


def _connector(r: _Reader) -> LDAPConnectorConfig:
    name = r.string("name", "", required=True)
    uris = r.strings("uris")
    if not uris:
        r._ctx.problem(
            r.key("uris"), 'needs 1 to 5 LDAP URIs, e.g. ["ldap://ldap1.example.com:389"]'
        )
    elif len(uris) > 5:
        r._ctx.problem(r.key("uris"), f"has {len(uris)} URIs; at most 5 are tried, remove some")
    for u in uris:
        if not (u.startswith("ldap://") or u.startswith("ldaps://")):
            r._ctx.problem(r.key("uris"), f"{u!r} is not an ldap:// or ldaps:// URI")
    filt = r.string("filter", "(mail=%e)")
    if not (filt.startswith("(") and filt.endswith(")")):
        r._ctx.problem(
            r.key("filter"),
            f"{filt!r} is not an LDAP filter; write it in parentheses, e.g. (mail=%e)",
        )
    bind_dn = r.string("bind_dn")
    bind_password = r.secret("bind_password")
    if bind_dn and bind_password is None:
        r._ctx.problem(
            r.key("bind_password"),
            "bind_dn is set but no password; set bind_password or bind_password_file",
        )
    cfg = LDAPConnectorConfig(
        name=name,
        uris=uris,
        base_dn=r.string("base_dn", "", required=True),
        filter=filt,
        start_tls=r.boolean("start_tls", False),
        ca_file=r.path("ca_file"),
        bind_dn=bind_dn or None,
        bind_password=bind_password,
        host_attribute=r.string("host_attribute", "mailHost"),
        password_attribute=r.string("password_attribute", "userPassword"),
        timeout=r.number("timeout", 4.0, minimum=0.1),
        on_multiple=r.choice("on_multiple", OnMultiple, OnMultiple.ERROR, ("error", "first")),
        pool_size=r.integer("pool_size", 4, minimum=1, maximum=64),
    )
    if cfg.ca_file is not None and not cfg.ca_file.is_file():
        r._ctx.problem(
            r.key("ca_file"),
            f"{cfg.ca_file} does not exist; give the PEM file of the CA that signed "
            "the directory's certificate",
        )
    r.done()
    return cfg


def _usermap(r: _Reader, connectors: Mapping[str, LDAPConnectorConfig]) -> UserMapConfig:
    name = r.string("name", "", required=True)
    kind: UserMapType | None = r.choice(
        "type", UserMapType, None, tuple(t.value for t in UserMapType)
    )
    if not r.has("type"):
        r._ctx.problem(r.key("type"), 'missing; use "ldap-password", "ldap-bind" or "file"')
    connector = r.string("connector")
    path = r.path("path")
    if kind is None:
        kind = UserMapType.FILE  # already reported; keep going to find the other problems
    elif kind is UserMapType.FILE:
        if path is None:
            r._ctx.problem(r.key("path"), 'a file user map needs path = "usermap.txt"')
        elif not path.is_file():
            r._ctx.problem(
                r.key("path"), f"{path} does not exist; create it (lines: address host[:port])"
            )
    else:
        if connector is None:
            r._ctx.problem(
                r.key("connector"),
                'an LDAP user map needs connector = "<name of an [[ldap_connector]]>"',
            )
        elif connector not in connectors:
            known = ", ".join(sorted(connectors)) or "none defined"
            r._ctx.problem(
                r.key("connector"), f"no [[ldap_connector]] named {connector!r} (known: {known})"
            )
    cfg = UserMapConfig(
        name=name,
        type=kind,
        connector=connector,
        path=path,
        cache_ttl=r.number("cache_ttl", 60.0),
        negative_cache_ttl=r.number("negative_cache_ttl", 10.0),
    )
    r.done()
    return cfg


def _listener(r: _Reader, kind: str) -> ListenerConfig:
    endpoint = r.string("endpoint", "", required=True)
    tls = r.choice("tls", TLSMode, TLSMode.NONE, ("none", "starttls", "implicit"))
    cert = r.path("cert_file")
    key = r.path("key_file")
    if tls is not TLSMode.NONE and cert is None:
        r._ctx.problem(
            r.key("cert_file"),
            f'tls = "{tls.value}" needs cert_file (PEM certificate, chain allowed)',
        )
    for name, p in (("cert_file", cert), ("key_file", key)):
        if p is not None and not p.is_file():
            r._ctx.problem(r.key(name), f"{p} does not exist")
    if kind == "webmail" and tls is TLSMode.STARTTLS:
        r._ctx.problem(r.key("tls"), 'HTTP has no STARTTLS; use "none" or "implicit"')
    cfg = ListenerConfig(
        endpoint=endpoint,
        tls=tls,
        cert_file=cert,
        key_file=key,
        allow_plaintext_without_tls=r.boolean("allow_plaintext_without_tls", False),
        loopback_plaintext=r.boolean("loopback_plaintext", True),
    )
    r.done()
    return cfg


def _service(r: _Reader, kind: str, usermaps: Mapping[str, UserMapConfig]) -> ServiceConfig:
    usermap = r.string("usermap", "", required=True)
    if usermap and usermap not in usermaps:
        known = ", ".join(sorted(usermaps)) or "none defined"
        r._ctx.problem(r.key("usermap"), f"no [[usermap]] named {usermap!r} (known: {known})")
    common: dict[str, Any] = dict(
        kind=kind,
        usermap=usermap,
        backend_port=r.integer(
            "backend_port", DEFAULT_BACKEND_PORTS[kind], minimum=1, maximum=65535
        ),
        backend_tls=r.choice(
            "backend_tls", TLSMode, TLSMode.NONE, ("none", "starttls", "implicit")
        ),
        backend_ca_file=r.path("backend_ca_file"),
        forward_client_address=r.boolean("forward_client_address", True),
        backend_connect_timeout=r.number("backend_connect_timeout", 10.0, minimum=0.1),
        preauth_timeout=r.number(
            "preauth_timeout", 300.0 if kind in ("smtp", "submission") else 60.0, minimum=1.0
        ),
        idle_timeout=r.number("idle_timeout", 1860.0, minimum=1.0),
        max_errors=r.integer("max_errors", 10, minimum=1),
        max_auth_errors=r.integer("max_auth_errors", 3, minimum=1),
        listeners=tuple(_listener(lr, kind) for lr in r.tables("listener")),
    )
    if common["backend_ca_file"] is not None and not common["backend_ca_file"].is_file():
        r._ctx.problem(r.key("backend_ca_file"), f"{common['backend_ca_file']} does not exist")
    cfg: ServiceConfig
    if kind in ("imap", "pop3"):
        cfg = MailboxServiceConfig(
            **common,
            authenticate_on_proxy=r.boolean("authenticate_on_proxy", True),
            backend_master_user=r.string("backend_master_user") or None,
            backend_master_password=r.secret("backend_master_password") or None,
            greeting=r.string("greeting", DEFAULT_GREETINGS[kind]),
        )
        if cfg.backend_master_user and not cfg.backend_master_password:
            r._ctx.problem(
                r.key("backend_master_password_file"),
                "backend_master_user needs backend_master_password_file",
            )
    elif kind in ("smtp", "submission"):
        cfg = SMTPServiceConfig(
            **common,
            hostname=r.string("hostname", "localhost"),
            domains=tuple(d.lower() for d in r.strings("domains")),
            max_message_size=r.integer("max_message_size", 52428800, minimum=1024),
            max_recipients=r.integer("max_recipients", 100, minimum=1),
            require_auth=kind == "submission",
        )
        if kind == "smtp" and not cfg.domains:
            r._ctx.problem(
                r.key("domains"),
                'inbound SMTP needs the domains it receives for, e.g. ["example.com"]',
            )
    else:
        cfg = ServiceConfig(**common)
    r.done()
    return cfg


def parse(data: Mapping[str, Any], file: str, base: Path) -> NodeConfiguration:
    """Build the configuration from already-parsed TOML; raise L{ConfigError} on problems."""
    ctx = _Context(file, base)
    top = _Reader(ctx, data, "")
    node_tables = top.tables("node")
    node = NodeConfig()
    if node_tables:
        nr = node_tables[0]
        node = NodeConfig(name=nr.string("name", "fe1"))
        nr.done()

    connectors: dict[str, LDAPConnectorConfig] = {}
    for cr in top.tables("ldap_connector"):
        c = _connector(cr)
        if c.name in connectors:
            ctx.problem(
                cr.key("name"), f"a connector named {c.name!r} is defined twice; rename one"
            )
        connectors[c.name] = c

    usermaps: dict[str, UserMapConfig] = {}
    for ur in top.tables("usermap"):
        u = _usermap(ur, connectors)
        if u.name in usermaps:
            ctx.problem(ur.key("name"), f"a usermap named {u.name!r} is defined twice; rename one")
        usermaps[u.name] = u

    services: dict[str, ServiceConfig] = {}
    for kind in SERVICE_KINDS:
        for sr in top.tables(kind):
            if kind in NOT_YET_AVAILABLE:
                ctx.problem(
                    kind,
                    f"the {kind} proxy is not available in this version; remove the [{kind}] table",
                )
                top._seen.add(kind)
                continue
            services[kind] = _service(sr, kind, usermaps)
    top.done()
    if ctx.problems:
        raise ConfigError(ctx.problems)
    return NodeConfiguration(
        source=None, node=node, connectors=connectors, usermaps=usermaps, services=services
    )


def load(path: Path) -> NodeConfiguration:
    """Read and validate C{path}; raise L{ConfigError} naming every problem."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ConfigError(
            [ConfigProblem(str(path), "-", f"cannot read the file: {e.strerror}")]
        ) from e
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError([ConfigProblem(str(path), "-", f"not valid TOML: {e}")]) from e
    cfg = parse(data, str(path), path.resolve().parent)
    return NodeConfiguration(
        cfg.source or path, cfg.node, cfg.connectors, cfg.usermaps, cfg.services
    )
