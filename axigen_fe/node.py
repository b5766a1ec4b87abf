"""Config -> the node's services: one child per configured proxy, sharing the user maps.

Kept apart from L{axigen_fe.tap} so that the demo (and tests) build a node the same way
twistd does without importing the plugin's command-line layer.
"""

from __future__ import annotations

import importlib
from typing import Any

from twisted.application.service import IService, MultiService, Service
from twisted.internet.defer import Deferred

from axigen_fe.config.model import NodeConfiguration
from axigen_fe.usermap.build import UserMaps

#: config table -> module whose make_service(reactor, config, service_config, usermap) builds it
SERVICE_MODULES = {
    "imap": "axigen_fe.imap.service",
    "pop3": "axigen_fe.pop3.service",
    "smtp": "axigen_fe.smtp.service",
    "submission": "axigen_fe.smtp.service",
    "webmail": "axigen_fe.webmail.service",
}


class _UserMapsService(Service):
    """Closes the LDAP connectors' pooled connections when the node stops."""

    def __init__(self, maps: UserMaps) -> None:
        self.maps = maps

    def stopService(self) -> Deferred[None]:
        super().stopService()  # type: ignore[no-untyped-call]
        return Deferred.fromCoroutine(self.maps.close())


def build_node(reactor: Any, config: NodeConfiguration) -> MultiService:
    """One child per configured proxy service, all sharing the node's user maps."""
    node = MultiService()
    maps = UserMaps(reactor, config)
    _UserMapsService(maps).setServiceParent(node)  # type: ignore[no-untyped-call]
    for kind, scfg in config.services.items():
        module = importlib.import_module(SERVICE_MODULES[kind])
        service: IService = module.make_service(reactor, config, scfg, maps.maps[scfg.usermap])
        service.setName(kind)
        service.setServiceParent(node)
    return node
