# mypy: disable-error-code="no-untyped-call"
# (twisted.mail.imap4 is untyped: calling into it is not an error here)
"""A demo back-end's IMAP server: Twisted's IMAP4Server plus ID (RFC 2971).

The node sends ID with the client's address before replaying the login (as Dovecot
expects); the back-end logs it, so the demo shows the whole chain in one log.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.cred.portal import Portal
from twisted.internet.defer import Deferred
from twisted.internet.protocol import ServerFactory
from twisted.logger import Logger
from twisted.mail import imap4

from axigen_fe.demo.accounts import peer_host

log = Logger(namespace="axigen_fe.demo.backend")


def _id_fields(line: bytes) -> dict[str, str]:
    """C{("k" "v" ...)} or C{NIL} -> dict; malformed input raises IllegalClientResponse."""
    if line.strip().upper() == b"NIL":
        return {}
    try:
        parsed = imap4.parseNestedParens(line)
    except Exception as e:  # twisted raises several types for bad syntax
        raise imap4.IllegalClientResponse(f"bad ID parameters: {e}") from e
    if len(parsed) != 1 or not isinstance(parsed[0], list) or len(parsed[0]) % 2:
        raise imap4.IllegalClientResponse("ID takes NIL or a list of field/value pairs")
    items = [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in parsed[0]]
    return {items[i].lower(): items[i + 1] for i in range(0, len(items), 2)}


class DemoIMAPServer(imap4.IMAP4Server):
    """IMAP4rev1 over the in-memory store; LOGIN and AUTHENTICATE PLAIN/LOGIN."""

    def __init__(
        self, name: str, portal: Portal, scheduler: Callable[[Any], Deferred[Any]]
    ) -> None:
        super().__init__(
            chal={b"PLAIN": imap4.PLAINCredentials, b"LOGIN": imap4.LOGINCredentials},
            scheduler=scheduler,
        )
        self.portal = portal  # type: ignore[assignment]  # declared None on the class
        self.backend_name = name
        self.IDENT = f"{name} IMAP4rev1 ready".encode()
        self.client_fields: dict[str, str] = {}

    def capabilities(self) -> dict[bytes, Any]:
        cap: dict[bytes, Any] = super().capabilities()
        cap[b"ID"] = None
        return cap

    def arg_rest(self, line: bytes) -> tuple[bytes, bytes]:
        """The rest of the line as one argument (ID's parenthesised list)."""
        return line, b""

    def do_ID(self, tag: bytes, params: bytes) -> None:
        self.client_fields = _id_fields(params)
        if self.client_fields:
            log.info(
                "{backend}: IMAP ID from {peer}: {fields}",
                backend=self.backend_name,
                peer=peer_host(self),
                fields=" ".join(f"{k}={v}" for k, v in sorted(self.client_fields.items())),
            )
        self.sendUntaggedResponse(b'ID ("name" "' + self.backend_name.encode() + b'")')
        self.sendPositiveResponse(tag, b"ID completed")

    unauth_ID = (do_ID, arg_rest)
    auth_ID = unauth_ID
    select_ID = unauth_ID

    def _cbAppendGotMailbox(
        self, mbox: Any, tag: bytes, flags: Any, date: Any, message: Any
    ) -> None:
        # Twisted passes None when APPEND has no flag list, then iterates it.
        super()._cbAppendGotMailbox(mbox, tag, flags or [], date, message)

    def authenticateLogin(self, user: bytes, passwd: bytes) -> Deferred[Any]:
        d: Deferred[Any] = super().authenticateLogin(user, passwd)
        return d.addCallbacks(
            self._logged_in, self._refused, callbackArgs=(user,), errbackArgs=(user,)
        )

    def _logged_in(self, result: Any, user: bytes) -> Any:
        log.info(
            "{backend}: IMAP login {user} from {peer} (client {client})",
            backend=self.backend_name,
            user=user.decode("utf-8", "replace"),
            peer=peer_host(self),
            client=self.client_fields.get("x-originating-ip", "not forwarded"),
        )
        return result

    def _refused(self, failure: Any, user: bytes) -> Any:
        log.info(
            "{backend}: IMAP login refused for {user}",
            backend=self.backend_name,
            user=user.decode("utf-8", "replace"),
        )
        return failure


class DemoIMAPFactory(ServerFactory):
    noisy = False  # one "Starting factory" line per back-end port is only clutter

    def __init__(
        self, name: str, portal: Portal, scheduler: Callable[[Any], Deferred[Any]]
    ) -> None:
        self.name = name
        self.portal = portal
        self.scheduler = scheduler

    def buildProtocol(self, addr: Any) -> DemoIMAPServer:
        p = DemoIMAPServer(self.name, self.portal, self.scheduler)
        p.factory = self
        return p
