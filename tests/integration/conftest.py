"""Session-wide real servers for the integration tests.

Every server is started once per test session (per xdist worker) on addresses and ports
picked for that session, in a temp dir of its own, and stopped by PID at the end.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.servers.pki import IssuedCert, TestCA, make_ca
from tests.integration.servers.ports import random_loopback_prefix


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    """The CA every test server's certificate comes from."""
    return make_ca(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="session")
def node_cert(pki: TestCA) -> IssuedCert:
    """The certificate every test node's TLS listeners present (127.0.0.1 and localhost)."""
    return pki.issue("axfe-node", ips=("127.0.0.1",), dns=("localhost",))


@pytest.fixture(scope="session")
def wrong_ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    """A CA that signed nothing the servers use: verifying against it must fail."""
    return make_ca(tmp_path_factory.mktemp("wrong-pki"), "unrelated CA")


@pytest.fixture(scope="session")
def backend_hosts() -> dict[str, str]:
    """Loopback addresses of back-end "a" and "b" (mailHost values in the directory)."""
    prefix = random_loopback_prefix()
    return {"a": f"{prefix}.1", "b": f"{prefix}.2"}


@pytest.fixture(scope="session")
def session_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("servers")


from tests.integration.servers.fixtures_ldap import *  # noqa: E402,F401,F403
from tests.integration.servers.fixtures_mail import *  # noqa: E402,F401,F403
