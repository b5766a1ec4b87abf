# mypy: disable-error-code="no-untyped-call"
# (twisted.mail.pop3 is untyped: calling into it is not an error here)
"""A demo back-end's POP3 server: Twisted's POP3 plus XCLIENT (as Dovecot accepts it).

Before replaying USER/PASS the node may send C{XCLIENT ADDR=... PORT=...} with the
client's address; the back-end logs it next to the login.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.cred.portal import Portal
from twisted.internet.defer import Deferred
from twisted.internet.protocol import ServerFactory
from twisted.logger import Logger
from twisted.mail import pop3

from axigen_fe.demo.accounts import peer_host

log = Logger(namespace="axigen_fe.demo.backend")


class DemoPOP3Server(pop3.POP3):
    """RFC 1939 USER/PASS, STAT, LIST, UIDL, TOP, RETR, DELE, RSET, QUIT; CAPA."""

    # No APOP: the greeting carries no timestamp. XCLIENT is a pre-login command.
    AUTH_CMDS = [c for c in pop3.POP3.AUTH_CMDS if c != b"APOP"] + [b"XCLIENT"]

    def __init__(self, name: str, portal: Portal, schedule: Callable[[Any], Deferred[Any]]) -> None:
        self.backend_name = name
        self.portal = portal  # type: ignore[assignment]  # declared None on the class
        self.schedule = schedule  # type: ignore[assignment]  # a Cooperator on our reactor
        self.client_fields: dict[str, str] = {}

    def connectionMade(self) -> None:
        # Greeting without the APOP timestamp: the demo offers USER/PASS only.
        self.successResponse(f"{self.backend_name} POP3 ready".encode())
        self.setTimeout(self.timeOut)

    def listCapabilities(self) -> list[bytes]:
        caps = [
            b"TOP",
            b"USER",
            b"UIDL",
            b"RESP-CODES",
            b"PIPELINING",
            b"IMPLEMENTATION axigen-fe-demo",
        ]
        if self.mbox is None:
            caps.append(b"XCLIENT")  # as Dovecot offers it to trusted (here: all loopback) peers
        return caps

    def do_XCLIENT(self, *args: bytes) -> None:
        if self.mbox is not None:
            self.failResponse(b"XCLIENT is allowed only before login")
            return
        for arg in args:
            key, sep, value = arg.decode("utf-8", "replace").partition("=")
            if sep:
                self.client_fields[key.lower()] = value
        self.successResponse(b"XCLIENT accepted")

    def authenticateUserPASS(self, user: bytes, password: bytes) -> Deferred[Any]:
        d: Deferred[Any] = super().authenticateUserPASS(user, password)
        return d.addCallbacks(
            self._logged_in, self._refused, callbackArgs=(user,), errbackArgs=(user,)
        )

    def _logged_in(self, result: Any, user: bytes) -> Any:
        log.info(
            "{backend}: POP3 login {user} from {peer} (client {client})",
            backend=self.backend_name,
            user=user.decode("utf-8", "replace"),
            peer=peer_host(self),
            client=self.client_fields.get("addr", "not forwarded"),
        )
        return result

    def _refused(self, failure: Any, user: bytes) -> Any:
        log.info(
            "{backend}: POP3 login refused for {user}",
            backend=self.backend_name,
            user=user.decode("utf-8", "replace"),
        )
        return failure


class DemoPOP3Factory(ServerFactory):
    noisy = False  # one "Starting factory" line per back-end port is only clutter

    def __init__(self, name: str, portal: Portal, schedule: Callable[[Any], Deferred[Any]]) -> None:
        self.name = name
        self.portal = portal
        self.schedule = schedule

    def buildProtocol(self, addr: Any) -> Any:
        p = DemoPOP3Server(self.name, self.portal, self.schedule)
        p.factory = self  # type: ignore[assignment]
        return p
