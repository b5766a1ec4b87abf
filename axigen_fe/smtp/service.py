"""The [smtp] and [submission] services: one listener service per configured listener.

Both kinds come here (C{tap.SERVICE_MODULES}); C{require_auth} picks the session class:
inbound routing per recipient, or AUTH then relay. Everything a session needs that is
the same for all its connections (TLS context, connector, map) is built once here.
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import IService, MultiService
from twisted.internet.interfaces import IAddress
from twisted.internet.protocol import ServerFactory

from axigen_fe.config.model import NodeConfiguration, ServiceConfig, SMTPServiceConfig
from axigen_fe.net.backend import BackendConnector
from axigen_fe.net.listener import listener_context, listener_service
from axigen_fe.ops.sessionlog import SessionIds
from axigen_fe.smtp.backend import CapabilityCache
from axigen_fe.smtp.inbound import InboundSession
from axigen_fe.smtp.session import SessionEnv, SMTPSession
from axigen_fe.smtp.submission import SubmissionSession
from axigen_fe.usermap.interface import IUserMap


class SMTPFactory(ServerFactory):
    """Builds one session per accepted connection of one listener."""

    noisy = False

    def __init__(self, env: SessionEnv) -> None:
        self.env = env

    def buildProtocol(self, addr: IAddress | None) -> SMTPSession:
        cls = SubmissionSession if self.env.service.require_auth else InboundSession
        session = cls(self.env)
        session.factory = self
        return session


def make_service(
    reactor: Any, config: NodeConfiguration, service_config: ServiceConfig, usermap: IUserMap
) -> IService:
    """A MultiService: one listening service per [[smtp.listener]] or [[submission.listener]]."""
    if not isinstance(service_config, SMTPServiceConfig):
        raise TypeError(f"{service_config.kind}: expected an SMTP service configuration")
    connector = BackendConnector(
        reactor,
        service_config.backend_tls,
        service_config.backend_ca_file,
        service_config.backend_connect_timeout,
    )
    ids = SessionIds(config.node.name, service_config.kind)
    capabilities = CapabilityCache(reactor)
    parent = MultiService()
    for listener in service_config.listeners:
        ctx = listener_context(listener)
        env = SessionEnv(
            reactor, service_config.kind, service_config, ctx, usermap, connector, ids, capabilities
        )
        service = listener_service(reactor, ctx, SMTPFactory(env))
        service.setServiceParent(parent)
    return parent
