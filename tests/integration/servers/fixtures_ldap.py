"""pytest fixtures for a real OpenLDAP slapd (see L{tests.integration.servers.slapd})."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.servers.pki import TestCA
from tests.integration.servers.slapd import Slapd, start_slapd

__all__ = ["private_slapd", "slapd"]


@pytest.fixture(scope="session")
def slapd(session_dir: Path, pki: TestCA, backend_hosts: dict[str, str]) -> Iterator[Slapd]:
    """The session's shared slapd, seeded with L{directory_data.USERS}.

    Do not stop it or change its data in a test; use L{private_slapd} for that.
    """
    server = start_slapd(session_dir / "slapd", pki, backend_hosts)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def private_slapd(tmp_path: Path, pki: TestCA, backend_hosts: dict[str, str]) -> Iterator[Slapd]:
    """A fresh slapd of this test's own (same data as L{slapd}), free to stop, restart, modify."""
    server = start_slapd(tmp_path / "slapd", pki, backend_hosts)
    try:
        yield server
    finally:
        server.stop()
