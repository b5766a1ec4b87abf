"""Session fixtures: real Dovecot and Postfix back-ends "a" and "b".

    dovecot_backends  {"a": Dovecot, "b": Dovecot}   (tests/integration/servers/dovecot.py)
    postfix_backends  {"a": Postfix, "b": Postfix}   (tests/integration/servers/postfix.py)
    backend_certs     {"a": IssuedCert, "b": IssuedCert}  the back-ends' server certificates
                      (from C{pki}, IP SAN = the back-end address, no DNS name)
    mail_servers_dir  the directory all of them live in

Both Dovecots listen on the same port numbers (imap_port, imaps_port, pop3_port,
pop3s_port, lmtp_port), each on its own C{backend_hosts} address; likewise both Postfixes
(smtp_port, submission_port), because the proxy has one back-end port per service.

The servers' files are not under pytest's tmp dir: that is 0700, and Dovecot and Postfix
switch to unprivileged users (mail, dovecot, dovenull, postfix) that must reach them. They go
to a 0755 C{/tmp/axfe-mail-*} dir, linked from C{session_dir / "mail-servers"}, removed at
the end of the session unless a test failed or AXFE_KEEP_SERVER_DIRS is set.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from tests.integration.directory_data import MAILBOX_USERS, User
from tests.integration.servers.dovecot import Dovecot, make_dovecots, make_root_dir
from tests.integration.servers.pki import IssuedCert, TestCA
from tests.integration.servers.postfix import Postfix, make_postfixes

__all__ = ["mail_servers_dir", "backend_certs", "dovecot_backends", "postfix_backends"]

T = TypeVar("T", Dovecot, Postfix)


def _users_by_backend(labels: list[str]) -> dict[str, dict[str, User]]:
    return {
        label: {a: u for a, u in MAILBOX_USERS.items() if u.backend == label} for label in labels
    }


@pytest.fixture(scope="session")
def mail_servers_dir(request: pytest.FixtureRequest, session_dir: Path) -> Iterator[Path]:
    root = make_root_dir("axfe-mail-")
    link = session_dir / "mail-servers"
    try:
        link.symlink_to(root)
    except OSError:
        pass
    yield root
    if os.environ.get("AXFE_KEEP_SERVER_DIRS") or request.session.testsfailed:
        return
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def backend_certs(pki: TestCA, backend_hosts: dict[str, str]) -> dict[str, IssuedCert]:
    return {
        label: pki.issue(f"backend-{label}", ips=(host,), dns=())
        for label, host in backend_hosts.items()
    }


@pytest.fixture(scope="session")
def dovecot_backends(
    pki: TestCA,
    backend_hosts: dict[str, str],
    backend_certs: dict[str, IssuedCert],
    mail_servers_dir: Path,
) -> Iterator[dict[str, Dovecot]]:
    servers = _start_all(
        lambda: make_dovecots(
            backend_hosts,
            _users_by_backend(list(backend_hosts)),
            backend_certs,
            pki.cert_file,
            mail_servers_dir,
        )
    )
    try:
        yield servers
    finally:
        _stop_all(servers.values())


@pytest.fixture(scope="session")
def postfix_backends(
    pki: TestCA,
    backend_hosts: dict[str, str],
    backend_certs: dict[str, IssuedCert],
    dovecot_backends: dict[str, Dovecot],
    mail_servers_dir: Path,
) -> Iterator[dict[str, Postfix]]:
    servers = _start_all(
        lambda: make_postfixes(
            backend_hosts,
            _users_by_backend(list(backend_hosts)),
            backend_certs,
            pki.cert_file,
            dovecot_backends,
            mail_servers_dir,
        )
    )
    try:
        yield servers
    finally:
        _stop_all(servers.values())


def _start_all(make: Callable[[], dict[str, T]], attempts: int = 3) -> dict[str, T]:
    """Start every server C{make()} returns; on a port clash (someone took a port between
    picking and binding) stop them and try again with fresh ports."""
    for attempt in range(attempts):
        servers = make()
        try:
            for server in servers.values():
                server.prepare()
                server.start()
            return servers
        except (RuntimeError, TimeoutError) as e:
            _stop_all(servers.values())
            if attempt == attempts - 1 or "in use" not in str(e):
                raise
    raise AssertionError("unreachable")


def _stop_all(servers) -> None:
    """SIGTERM every server first, then wait for each: they shut down side by side."""
    servers = list(servers)
    for server in servers:
        try:
            server.request_stop()
        except ProcessLookupError:
            pass
    for server in servers:
        server.stop()  # is a no-op for a server that never started
