# mypy: disable-error-code="no-untyped-call"
# (twisted.mail.smtp is untyped: calling into it is not an error here)
"""A demo back-end's SMTP servers: inbound delivery and submission (Twisted's ESMTP).

Inbound (the node's [smtp] relays here) accepts mail for the users whose mailbox is on
this back-end. Submission (the node's [submission] relays here after AUTH on the node)
needs the sender to be logged in - by AUTH PLAIN/LOGIN, or by the node's C{XCLIENT
LOGIN=...} as Postfix allows from trusted peers - and delivers to any demo user (the demo
back-ends "relay" to each other in memory); it never relays outside the demo domain.
"""

from __future__ import annotations

import email.utils
from collections.abc import Callable
from typing import Any

from twisted.cred.portal import Portal
from twisted.internet.defer import Deferred, succeed
from twisted.internet.protocol import ServerFactory
from twisted.logger import Logger
from twisted.mail import imap4, smtp
from zope.interface import implementer

from axigen_fe.demo.accounts import SubmissionLogin, peer_host
from axigen_fe.demo.mailstore import Account

log = Logger(namespace="axigen_fe.demo.backend")

XCLIENT_ATTRIBUTES = (b"NAME", b"ADDR", b"PORT", b"PROTO", b"HELO", b"LOGIN")


def _xtext_decode(value: str) -> str:
    """RFC 1891 xtext (C{+HH} escapes), which XCLIENT values use."""
    out, i = [], 0
    while i < len(value):
        if value[i] == "+" and i + 3 <= len(value):
            try:
                out.append(chr(int(value[i + 1 : i + 3], 16)))
                i += 3
                continue
            except ValueError:
                pass
        out.append(value[i])
        i += 1
    return "".join(out)


@implementer(smtp.IMessage)
class _Delivery:
    """Collects one message's lines and appends it to the recipient's INBOX at the end."""

    def __init__(self, account: Account, backend_name: str) -> None:
        self.account = account
        self.backend_name = backend_name
        self.lines: list[bytes] = []

    def lineReceived(self, line: bytes) -> None:
        self.lines.append(line)

    def eomReceived(self) -> Deferred[None]:
        raw = b"\r\n".join(self.lines) + b"\r\n"
        uid = self.account.inbox.deliver(raw)
        log.info(
            "{backend}: delivered {size} bytes to {rcpt} (INBOX uid {uid})",
            backend=self.backend_name,
            size=len(raw),
            rcpt=self.account.name,
            uid=uid,
        )
        return succeed(None)

    def connectionLost(self) -> None:
        self.lines = []


class DemoESMTPServer(smtp.ESMTP):
    """ESMTP with XCLIENT/XFORWARD; C{submission} requires a logged-in sender."""

    noisy = False  # our own delivery line says more than Twisted's "Receiving message"

    def __init__(
        self, name: str, portal: Portal, submission: bool, local: Callable[[str], Account | None]
    ) -> None:
        chal = (
            {b"PLAIN": imap4.PLAINCredentials, b"LOGIN": smtp.LOGINCredentials}
            if submission
            else {}
        )
        super().__init__(chal=chal)
        self.portal = portal  # type: ignore[assignment]  # declared None on the class
        self.backend_name = name
        self.submission = submission
        self.local = local
        self.host = name.replace(" ", "-").encode()
        self.xclient: dict[str, str] = {}

    def greeting(self) -> bytes:
        return (
            bytes(self.host)
            + b" ESMTP "
            + self.backend_name.encode()
            + (b" submission" if self.submission else b"")
        )

    def extensions(self) -> dict[bytes, Any]:
        ext: dict[bytes, Any] = super().extensions()
        ext[b"8BITMIME"] = None
        ext[b"XCLIENT"] = list(XCLIENT_ATTRIBUTES)
        ext[b"XFORWARD"] = [b"NAME", b"ADDR", b"PORT", b"PROTO", b"HELO"]
        return ext

    def do_XCLIENT(self, rest: bytes) -> None:
        """Postfix semantics: remember the attributes, reset the session, greet again."""
        if self._from is not None:
            self.sendCode(503, b"5.5.1 Error: MAIL transaction in progress")
            return
        fields: dict[str, str] = {}
        for item in rest.decode("utf-8", "replace").split():
            key, sep, value = item.partition("=")
            if not sep or key.upper().encode() not in XCLIENT_ATTRIBUTES:
                self.sendCode(501, f"5.5.4 Bad XCLIENT attribute name: {key}".encode())
                return
            fields[key.lower()] = _xtext_decode(value)
        self.xclient.update(fields)
        login = fields.get("login")
        if login and login.upper() != "[UNAVAILABLE]":
            self.delivery = SubmissionLogin(login.lower())
            self.authenticated = True
        self._helo = (None, peer_host(self).encode())
        self._to = []
        log.info(
            "{backend}: XCLIENT from {peer}: {fields}",
            backend=self.backend_name,
            peer=peer_host(self),
            fields=" ".join(f"{k}={v}" for k, v in sorted(fields.items())),
        )
        self.sendCode(220, self.greeting())

    def do_XFORWARD(self, rest: bytes) -> None:
        self.sendCode(250, b"2.0.0 Ok")

    def validateFrom(self, helo: Any, origin: smtp.Address) -> smtp.Address:
        if self.submission and not isinstance(self.delivery, SubmissionLogin):
            raise smtp.SMTPServerError(530, "5.7.0 Authentication required")
        return origin

    def validateTo(self, user: smtp.User) -> Callable[[], _Delivery]:
        address = str(user.dest).lower()
        account = self.local(address)
        if account is None:
            if self.submission:
                raise smtp.SMTPBadRcpt(
                    user, 550, "5.7.1 The demo back-ends deliver only to demo users"
                )
            raise smtp.SMTPBadRcpt(user, 550, "5.1.1 No such mailbox on this back-end")
        return lambda: _Delivery(account, self.backend_name)

    def receivedHeader(self, helo: Any, origin: smtp.Address, recipients: list[smtp.User]) -> bytes:
        client = self.xclient.get("addr") or helo[1].decode("ascii", "replace")
        via = "" if "addr" not in self.xclient else f" via {peer_host(self)}"
        login = (
            f" (authenticated as {self.delivery.address})"
            if isinstance(self.delivery, SubmissionLogin)
            else ""
        )
        name = (helo[0] or b"unknown").decode("ascii", "replace")
        date = email.utils.formatdate(localtime=True)
        text = (
            f"Received: from {name} ([{client}]{via}){login}\r\n"
            f"\tby {self.backend_name} (axigen-fe demo); {date}"
        )
        return text.encode("utf-8")


class DemoSMTPFactory(ServerFactory):
    noisy = False  # one "Starting factory" line per back-end port is only clutter

    def __init__(
        self, name: str, portal: Portal, submission: bool, local: Callable[[str], Account | None]
    ) -> None:
        self.name = name
        self.portal = portal
        self.submission = submission
        self.local = local

    def buildProtocol(self, addr: Any) -> DemoESMTPServer:
        p = DemoESMTPServer(self.name, self.portal, self.submission, self.local)
        p.factory = self
        return p
