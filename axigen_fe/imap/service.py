"""Config -> running IMAP proxy: one listener per [[imap.listener]], all sharing one map.

The back-end connector (and with it the back-end TLS context) and the session-id
counter are shared by every listener of the service, so a session id is unique per
service and a TLS context is built once, not per listener or per connection.
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import IService, MultiService
from twisted.logger import Logger

from axigen_fe.config.model import MailboxServiceConfig, NodeConfiguration, ServiceConfig
from axigen_fe.imap.backend import MasterUser
from axigen_fe.imap.server import IMAPProxyFactory
from axigen_fe.net.backend import BackendConnector
from axigen_fe.net.listener import listener_context, listener_service
from axigen_fe.ops.sessionlog import SessionIds
from axigen_fe.usermap.interface import IUserMap

_log = Logger(namespace="axigen_fe.imap")


def make_service(
    reactor: Any, config: NodeConfiguration, service_config: ServiceConfig, usermap: IUserMap
) -> IService:
    """The IMAP proxy service (a MultiService of listeners), ready to start."""
    if not isinstance(service_config, MailboxServiceConfig):
        raise TypeError(f"[{service_config.kind}] is not a mailbox service configuration")
    cfg = service_config
    connector = BackendConnector(
        reactor, cfg.backend_tls, cfg.backend_ca_file, cfg.backend_connect_timeout
    )
    ids = SessionIds(config.node.name, cfg.kind)
    master = None
    if cfg.backend_master_user and cfg.backend_master_password:
        master = MasterUser(cfg.backend_master_user, cfg.backend_master_password.encode("utf-8"))
        if not cfg.authenticate_on_proxy:
            _log.warn(
                "[{kind}] backend_master_user is set: passwords are checked on the node even "
                "though authenticate_on_proxy = false (the back-end never sees them)",
                kind=cfg.kind,
            )
    top = MultiService()
    for lcfg in cfg.listeners:
        ctx = listener_context(lcfg)
        factory = IMAPProxyFactory(reactor, cfg, ctx, usermap, connector, ids, master)
        listener_service(reactor, ctx, factory).setServiceParent(top)
    return top
