"""The twistd plugin's body: C{twistd -n axigen-fe --config FILE} or C{--demo}."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

from twisted.application.service import IService, MultiService, Service
from twisted.internet.defer import Deferred
from twisted.python import usage

from axigen_fe.config.load import ConfigError, load
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


class Options(usage.Options):
    synopsis = "[--config FILE | --demo]"
    longdesc = (
        "Run an axigen-fe front-end node: IMAP, POP3, SMTP/submission proxies that route each "
        "user to its back-end through a user map (LDAP or a local file). "
        "--config FILE starts the services the TOML file defines (see etc/axigen-fe.toml); "
        "--demo starts a self-contained node with an in-process directory, demo users and two "
        "in-process back-ends on loopback ports it prints."
    )
    optParameters = [
        ["config", "c", None, "TOML configuration file (etc/axigen-fe.toml documents every key)."],
        ["demo-host", None, "127.0.0.1", "With --demo: address the demo listeners bind to."],
    ]
    optFlags = [["demo", None, "Run the embedded demo (no external servers needed)."]]

    def postOptions(self) -> None:
        if not self["demo"] and not self["config"]:
            raise usage.UsageError("give --config FILE, or --demo for the embedded demo")
        if self["demo"] and self["config"]:
            raise usage.UsageError("--config and --demo exclude each other")


class _UserMapsService(Service):
    """Closes the LDAP connectors' pooled connections when the node stops."""

    def __init__(self, maps: UserMaps) -> None:
        self.maps = maps

    def stopService(self) -> Deferred[None]:
        super().stopService()
        return Deferred.fromCoroutine(self.maps.close())


def build_node(reactor: Any, config: NodeConfiguration) -> MultiService:
    """One child per configured proxy service, all sharing the node's user maps."""
    node = MultiService()
    maps = UserMaps(reactor, config)
    _UserMapsService(maps).setServiceParent(node)
    for kind, scfg in config.services.items():
        module = importlib.import_module(SERVICE_MODULES[kind])
        service: IService = module.make_service(reactor, config, scfg, maps.maps[scfg.usermap])
        service.setName(kind)
        service.setServiceParent(node)
    return node


def makeService(options: Options) -> MultiService:
    from twisted.internet import reactor

    if options["demo"]:
        from axigen_fe.demo.node import make_demo_service

        return make_demo_service(reactor, options["demo-host"])
    try:
        config = load(Path(options["config"]))
    except ConfigError as e:
        sys.stderr.write(f"axigen-fe: configuration problems:\n{e}\n")
        raise SystemExit(78) from e  # EX_CONFIG
    return build_node(reactor, config)
