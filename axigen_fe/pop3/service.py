"""The POP3 proxy service: one listener per C{[[pop3.listener]]}, all sharing one map.

The back-end connector (one TLS context per back-end CA), the back-end capability
cache and the session id counter are per service, so every listener's sessions reuse
them; only the listener's own TLS context and facts differ per listener.
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import IService, MultiService

from axigen_fe.config.model import MailboxServiceConfig, NodeConfiguration, ServiceConfig
from axigen_fe.net.backend import BackendConnector
from axigen_fe.net.listener import listener_context, listener_service
from axigen_fe.ops.sessionlog import SessionIds
from axigen_fe.pop3.backend import CapabilityCache
from axigen_fe.pop3.server import Pop3ProxyFactory
from axigen_fe.usermap.interface import IUserMap


def make_service(
    reactor: Any, config: NodeConfiguration, service_config: ServiceConfig, usermap: IUserMap
) -> IService:
    """Build the POP3 proxy for C{service_config} (the C{[pop3]} table)."""
    if not isinstance(service_config, MailboxServiceConfig):
        raise TypeError(f"[{service_config.kind}] is not a mailbox service configuration")
    connector = BackendConnector(
        reactor,
        service_config.backend_tls,
        service_config.backend_ca_file,
        service_config.backend_connect_timeout,
    )
    capabilities = CapabilityCache(reactor)
    ids = SessionIds(config.node.name, service_config.kind)
    service = MultiService()
    for listener in service_config.listeners:
        ctx = listener_context(listener)
        factory = Pop3ProxyFactory(
            reactor, service_config, ctx, usermap, connector, capabilities, ids
        )
        listener_service(reactor, ctx, factory).setServiceParent(service)
    return service
