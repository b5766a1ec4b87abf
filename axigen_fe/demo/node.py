# mypy: disable-error-code="no-untyped-call"
# (twisted.application's services are untyped: calling into it is not an error here)
"""C{twistd -n axigen-fe --demo}: directory, two back-ends and a node, in one process.

Proxy services are included only when their module is installed and imports (the
protocols arrive issue by issue); the ones left out are named in the log and in the
banner, so a demo never fails because a later feature is not there yet.
"""

from __future__ import annotations

import importlib
import shutil
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from twisted.application.service import MultiService
from twisted.logger import Logger

from axigen_fe.demo.backends import backend_name, make_backends
from axigen_fe.demo.config import SERVICE_KINDS, demo_configuration
from axigen_fe.demo.directory import directory_service, ssha
from axigen_fe.demo.layout import (
    BASE_DN,
    DEFAULT_BACKEND_HOSTS,
    DEFAULT_BASE_PORT,
    DEMO_USERS,
    DOMAIN,
    PROXY_DN,
    PROXY_PASSWORD,
    DemoLayout,
)

log = Logger(namespace="axigen_fe.demo")

_LDAP_MAP_MODULES = (
    "axigen_fe.ldap.connector",
    "axigen_fe.usermap.ldap_password",
    "axigen_fe.usermap.ldap_bind",
)


def _importable(module: str, attribute: str | None = None) -> str | None:
    """None if C{module} imports (and has C{attribute}), else why not."""
    try:
        mod = importlib.import_module(module)
    except ImportError as e:
        return f"{module} is not available ({e})"
    if attribute is not None and not hasattr(mod, attribute):
        return f"{module} has no {attribute}() yet"
    return None


def available_services() -> tuple[list[str], dict[str, str]]:
    """The proxy services this build can run, and why the others are left out."""
    from axigen_fe.node import SERVICE_MODULES

    ok: list[str] = []
    missing: dict[str, str] = {}
    for kind in SERVICE_KINDS:
        why = _importable(SERVICE_MODULES[kind], "make_service")
        if why is None:
            ok.append(kind)
        else:
            missing[kind] = why
    return ok, missing


def _file_map(directory: Path, layout: DemoLayout) -> Path:
    """Stand-in for the LDAP map: the same users, hosts and {SSHA} passwords, in a file."""
    path = directory / "demo-usermap.txt"
    lines = [
        f"{u.address} {layout.backend_host(u)} {ssha(u.password).decode('ascii')}"
        for u in DEMO_USERS
    ]
    path.write_text(
        "# written by axigen-fe --demo; removed when it stops\n" + "\n".join(lines) + "\n",
        encoding="utf-8",
    )
    return path


def _connect_host(host: str) -> str:
    """Where a client on this machine reaches a listener bound to C{host}."""
    return {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)


def banner(
    layout: DemoLayout, services: Iterable[str], missing: dict[str, str], ldap_map: bool
) -> list[str]:
    """What C{--demo} prints: ports, credentials, and commands to paste."""
    services = list(services)
    names = {"imap": "IMAP", "pop3": "POP3", "smtp": "SMTP", "submission": "submission"}
    ports = {
        "imap": layout.imap_port,
        "pop3": layout.pop3_port,
        "smtp": layout.smtp_port,
        "submission": layout.submission_port,
    }
    users = ", ".join(f"{u.address}/{u.password}" for u in DEMO_USERS)
    listening = (
        ", ".join(f"{names[k]} {layout.host}:{ports[k]}" for k in services)
        or "no proxy services yet"
    )
    host = _connect_host(layout.host)
    directory = f"{layout.ldap_uri} base {BASE_DN}, service account {PROXY_DN} / {PROXY_PASSWORD}"
    if not ldap_map:
        directory += " (the node routes by a file map: the LDAP user maps are not installed)"
    backend_ports = (
        f"IMAP {layout.backend_imap_port}, POP3 {layout.backend_pop3_port}, "
        f"SMTP {layout.backend_smtp_port}, submission {layout.backend_submission_port}"
    )
    lines = [f"axigen-fe demo: {listening}; users {users}", f"  directory   {directory}"]
    for i, backend_host in enumerate(layout.backend_hosts, 1):
        homes = ", ".join(u.address for u in DEMO_USERS if u.backend == i)
        lines.append(f"  back-end {i}  {backend_host}: {backend_ports} - mailbox of {homes}")
    for kind, why in missing.items():
        lines.append(f"  not started {names[kind]}: {why}")
    lines.append("try:")
    if "imap" in services:
        lines.append(
            f'  python3 -c \'import imaplib; c = imaplib.IMAP4("{host}", {layout.imap_port}); '
            f'c.login("alice@{DOMAIN}", "alice"); c.select(); '
            f'print(c.fetch("1", "(BODY[HEADER.FIELDS (SUBJECT)])")[1][0][1].decode()); '
            "c.logout()'"
        )
    if "pop3" in services:
        lines.append(
            f'  python3 -c \'import poplib; p = poplib.POP3("{host}", {layout.pop3_port}); '
            f'p.user("bob@{DOMAIN}"); p.pass_("bob"); print(p.retr(1)[1][2].decode()); p.quit()\''
        )
    if "smtp" in services:
        lines.append(
            f'  python3 -c \'import smtplib; smtplib.SMTP("{host}", {layout.smtp_port})'
            f'.sendmail("someone@example.org", ["bob@{DOMAIN}"], '
            'b"Subject: hello bob\\r\\n\\r\\nhi\\r\\n")\''
        )
    if layout == DemoLayout(host=layout.host):
        lines.append(f"  axigen-fe lookup --config etc/demo.toml alice@{DOMAIN}")
    else:
        lines.append("  (etc/demo.toml matches the default ports and back-end addresses only)")
    return lines


class DemoService(MultiService):
    """The demo's root service: announces itself once every listener is up."""

    def __init__(
        self,
        layout: DemoLayout,
        services: list[str],
        missing: dict[str, str],
        ldap_map: bool,
        scratch: Path | None,
    ) -> None:
        super().__init__()
        self.layout = layout
        self.services_started = services
        self.missing = missing
        self.ldap_map = ldap_map
        self.scratch = scratch

    def startService(self) -> None:
        # Children listen synchronously (TCP) and raise on a busy port, so reaching the
        # banner means every demo port is open.
        super().startService()
        lines = banner(self.layout, self.services_started, self.missing, self.ldap_map)
        out = sys.__stdout__
        if out is not None:
            out.write("\n".join(lines) + "\n")
            out.flush()
        # The log gets the one-line summary (ports and users); with `twistd -n` and no
        # --logfile the log is stdout too, and the whole block twice would be noise.
        log.info("{banner}", banner=lines[0])

    def stopService(self) -> Any:
        d = super().stopService()
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)
        return d


def make_demo_service(
    reactor: Any,
    host: str = "127.0.0.1",
    base_port: int = DEFAULT_BASE_PORT,
    backend_hosts: tuple[str, str] = DEFAULT_BACKEND_HOSTS,
) -> MultiService:
    """Directory, both back-ends and the node, ready for twistd to start."""
    from axigen_fe.node import build_node

    try:
        layout = DemoLayout(host=host, base_port=base_port, backend_hosts=backend_hosts)
    except ValueError as e:
        sys.stderr.write(f"axigen-fe --demo: {e}\n")
        raise SystemExit(2) from e  # usage error, as the CLI's exit codes
    services, missing = available_services()
    for kind, why in missing.items():
        log.warn("demo: not starting the {kind} proxy: {why}", kind=kind, why=why)

    ldap_missing = [why for why in (_importable(m) for m in _LDAP_MAP_MODULES) if why is not None]
    scratch: Path | None = None
    file_map: Path | None = None
    if ldap_missing:
        scratch = Path(tempfile.mkdtemp(prefix="axigen-fe-demo-"))
        file_map = _file_map(scratch, layout)
        log.warn(
            "demo: routing by a file map instead of the directory: {why}",
            why="; ".join(ldap_missing),
        )

    top = DemoService(layout, services, missing, file_map is None, scratch)
    directory_service(reactor, layout, DEMO_USERS).setServiceParent(top)
    for backend in make_backends(reactor, layout, DEMO_USERS):
        backend.service(layout).setServiceParent(top)
        log.info("demo: {name} on {host}", name=backend_name(backend.index), host=backend.host)
    node = build_node(reactor, demo_configuration(layout, services, file_map))
    node.setName("node")
    node.setServiceParent(top)
    return top
