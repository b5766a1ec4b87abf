"""make_service: one listener service per [[imap.listener]], sharing one connector."""

from __future__ import annotations

from pathlib import Path

import pytest
from twisted.application.service import MultiService
from twisted.internet.testing import MemoryReactorClock

from axigen_fe.config.model import (
    ListenerConfig,
    MailboxServiceConfig,
    NodeConfig,
    NodeConfiguration,
    ServiceConfig,
)
from axigen_fe.imap.server import IMAPProxyFactory
from axigen_fe.imap.service import make_service
from axigen_fe.usermap.memory import MemoryUserMap


def node(service: ServiceConfig) -> NodeConfiguration:
    return NodeConfiguration(Path("node.toml"), NodeConfig("fe1"), {}, {}, {"imap": service})


def test_one_listener_service_per_listener_sharing_the_connector() -> None:
    cfg = MailboxServiceConfig(
        kind="imap",
        usermap="m",
        backend_port=143,
        listeners=(ListenerConfig("tcp:0:interface=127.0.0.1"), ListenerConfig("tcp:0")),
        backend_master_user="fe-master",
        backend_master_password="m-secret",
    )
    service = make_service(MemoryReactorClock(), node(cfg), cfg, MemoryUserMap({}))
    assert isinstance(service, MultiService)
    children = list(service)
    assert len(children) == 2
    factories = [c.factory for c in children]  # type: ignore[attr-defined]
    assert all(isinstance(f, IMAPProxyFactory) for f in factories)
    assert factories[0].connector is factories[1].connector
    assert factories[0].ids is factories[1].ids  # session ids unique across listeners
    master = factories[0].master
    assert master is not None and master.name == "fe-master" and master.password == b"m-secret"
    assert factories[0].check_password


def test_refuses_a_non_mailbox_service_config() -> None:
    cfg = ServiceConfig(kind="smtp", usermap="m", backend_port=25)
    with pytest.raises(TypeError):
        make_service(MemoryReactorClock(), node(cfg), cfg, MemoryUserMap({}))
