"""The twistd plugin's body: C{twistd -n axigen-fe --config FILE} or C{--demo}."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from twisted.application.service import MultiService
from twisted.logger import ILogObserver
from twisted.python import usage
from twisted.python.components import Componentized

from axigen_fe.config.load import ConfigError, load
from axigen_fe.node import build_node
from axigen_fe.ops.gctune import freeze_startup_heap, tune_for_serving
from axigen_fe.ops.logobserver import observer_for_twistd


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
        [
            "demo-base-port",
            None,
            10000,
            "With --demo: ports are this plus 143 (IMAP), 110 (POP3), 25 (SMTP), 587 "
            "(submission), 389 (LDAP); the back-ends' are 1000 higher.",
            int,
        ],
        [
            "demo-backends",
            None,
            "127.0.0.11,127.0.0.12",
            "With --demo: the two back-ends' loopback addresses, comma-separated.",
        ],
    ]
    optFlags = [["demo", None, "Run the embedded demo (no external servers needed)."]]

    def postOptions(self) -> None:
        if not self["demo"] and not self["config"]:
            raise usage.UsageError("give --config FILE, or --demo for the embedded demo")
        if self["demo"] and self["config"]:
            raise usage.UsageError("--config and --demo exclude each other")


class _TwistdNode(MultiService):
    """The node as twistd runs it: also gives twistd's Application the node's log observer.

    twistd asks the Application for an C{ILogObserver} component before falling back to
    its own (slow per line) observer; the plugin's service is attached to the
    Application just before that, so this is where the component can be set.
    """

    def __init__(self, child: MultiService, observer: ILogObserver | None) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        child.setServiceParent(self)
        self._observer = observer

    def setServiceParent(self, parent: Any) -> None:
        super().setServiceParent(parent)  # type: ignore[no-untyped-call]
        if self._observer is not None and isinstance(parent, Componentized):
            if parent.getComponent(ILogObserver, None) is None:
                parent.setComponent(ILogObserver, self._observer)


def makeService(options: Options) -> MultiService:
    from twisted.internet import reactor

    tune_for_serving()
    reactor.callWhenRunning(freeze_startup_heap)

    observer = observer_for_twistd(getattr(options, "parent", None))
    if options["demo"]:
        from axigen_fe.demo.node import make_demo_service

        first, _, second = options["demo-backends"].partition(",")
        backends = (first.strip(), second.strip())
        demo = make_demo_service(reactor, options["demo-host"], options["demo-base-port"], backends)
        return _TwistdNode(demo, observer)
    try:
        config = load(Path(options["config"]))
    except ConfigError as e:
        sys.stderr.write(f"axigen-fe: configuration problems:\n{e}\n")
        raise SystemExit(78) from e  # EX_CONFIG
    return _TwistdNode(build_node(reactor, config), observer)
