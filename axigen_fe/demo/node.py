# mypy: disable-error-code="no-untyped-call"
# (twisted.application's services are untyped: calling into it is not an error here)
"""C{twistd -n axigen-fe --demo}: directory, two back-ends and a node, in one process.

The node runs every proxy service of L{SERVICE_KINDS} and routes by the ldap-password
map against the in-process directory: a module that fails to import fails the demo at
start-up, loudly, rather than being left out.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any

from twisted.application.service import MultiService
from twisted.logger import Logger

from axigen_fe.demo.backends import backend_name, make_backends
from axigen_fe.demo.config import SERVICE_KINDS, demo_configuration
from axigen_fe.demo.directory import directory_service
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


def _connect_host(host: str) -> str:
    """Where a client on this machine reaches a listener bound to C{host}."""
    return {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)


def banner(layout: DemoLayout, services: Iterable[str] = SERVICE_KINDS) -> list[str]:
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
    listening = ", ".join(f"{names[k]} {layout.host}:{ports[k]}" for k in services)
    host = _connect_host(layout.host)
    directory = f"{layout.ldap_uri} base {BASE_DN}, service account {PROXY_DN} / {PROXY_PASSWORD}"
    backend_ports = (
        f"IMAP {layout.backend_imap_port}, POP3 {layout.backend_pop3_port}, "
        f"SMTP {layout.backend_smtp_port}, submission {layout.backend_submission_port}"
    )
    lines = [f"axigen-fe demo: {listening}; users {users}", f"  directory   {directory}"]
    for i, backend_host in enumerate(layout.backend_hosts, 1):
        homes = ", ".join(u.address for u in DEMO_USERS if u.backend == i)
        lines.append(f"  back-end {i}  {backend_host}: {backend_ports} - mailbox of {homes}")
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

    def __init__(self, layout: DemoLayout) -> None:
        super().__init__()
        self.layout = layout

    def startService(self) -> None:
        # Children listen synchronously (TCP) and raise on a busy port, so reaching the
        # banner means every demo port is open.
        super().startService()
        lines = banner(self.layout)
        out = sys.__stdout__
        if out is not None:
            out.write("\n".join(lines) + "\n")
            out.flush()
        # The log gets the one-line summary (ports and users); with `twistd -n` and no
        # --logfile the log is stdout too, and the whole block twice would be noise.
        log.info("{banner}", banner=lines[0])


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
    top = DemoService(layout)
    directory_service(reactor, layout, DEMO_USERS).setServiceParent(top)
    for backend in make_backends(reactor, layout, DEMO_USERS):
        backend.service(layout).setServiceParent(top)
        log.info("demo: {name} on {host}", name=backend_name(backend.index), host=backend.host)
    node = build_node(reactor, demo_configuration(layout))
    node.setName("node")
    node.setServiceParent(top)
    return top
