"""Who may log in to a demo back-end, and what a login gets (IMAP account, POP3 view...).

Like a real back-end (Dovecot), each demo back-end checks the password itself: the node
replays the client's login, so a proxy that forwarded the wrong credentials would fail
here exactly as it would in production.
"""

from __future__ import annotations

import hmac
import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, overload

from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import IRealm
from twisted.internet.defer import Deferred, fail, succeed
from twisted.mail import imap4, pop3, smtp
from zope.interface import implementer

from axigen_fe.demo.mailstore import Account, Mailbox, MailStore, StoredMessage


def peer_host(protocol: Any) -> str:
    """The connected peer's address, for log lines (the node, seen from a back-end)."""
    return str(getattr(protocol.transport.getPeer(), "host", "?"))


@implementer(ICredentialsChecker)
class DemoPasswords:
    """Address (any case) + password -> the lower-case address (UTF-8) as avatar id."""

    credentialInterfaces = (IUsernamePassword,)

    def __init__(self, passwords: dict[str, str]) -> None:
        self._passwords = {a.lower(): p.encode("utf-8") for a, p in passwords.items()}

    def requestAvatarId(self, credentials: Any) -> Deferred[bytes | tuple[()]]:
        username = credentials.username
        if isinstance(username, bytes):
            username = username.decode("utf-8", "replace")
        address = username.lower()
        stored = self._passwords.get(address)
        given = credentials.password
        if isinstance(given, str):
            given = given.encode("utf-8")
        if stored is not None and given is not None and hmac.compare_digest(stored, given):
            return succeed(address.encode("utf-8"))
        return fail(UnauthorizedLogin(f"wrong password or unknown user {address!r}"))


@implementer(pop3.IMailbox)
class POP3View:
    """A POP3 session's snapshot of the INBOX; deletions reach the INBOX only at QUIT."""

    def __init__(self, inbox: Mailbox) -> None:
        self.inbox = inbox
        self.messages: list[StoredMessage] = list(inbox.messages)
        self.deleted: set[int] = set()

    def _message(self, i: int) -> StoredMessage:
        if not 0 <= i < len(self.messages) or i in self.deleted:
            raise ValueError(f"no message {i + 1}")
        return self.messages[i]

    @overload
    def listMessages(self) -> list[int]: ...

    @overload
    def listMessages(self, i: int) -> int: ...

    def listMessages(self, i: int | None = None) -> int | list[int]:
        if i is None:
            return [0 if n in self.deleted else m.getSize() for n, m in enumerate(self.messages)]
        return self._message(i).getSize()

    def getMessage(self, i: int) -> io.BytesIO:
        # Twisted's POP3 server turns LF into CRLF itself (and would double a CR).
        return io.BytesIO(self._message(i).raw.replace(b"\r\n", b"\n"))

    def getUidl(self, i: int) -> bytes:
        return b"%d.%d" % (self.inbox.uid_validity, self._message(i).uid)

    def deleteMessage(self, i: int) -> None:
        self._message(i)
        self.deleted.add(i)

    def undeleteMessages(self) -> None:
        self.deleted.clear()

    def sync(self) -> None:
        self.inbox.remove_uids({self.messages[i].uid for i in self.deleted})
        self.deleted.clear()


@dataclass(frozen=True)
class SubmissionLogin:
    """What an SMTP AUTH on the submission port yields: who is sending."""

    address: str


def _noop() -> None:
    pass


@implementer(IRealm)
class BackendRealm:
    """Hands out the avatar each protocol asks for, all backed by one L{MailStore}."""

    def __init__(self, store: MailStore) -> None:
        self.store = store

    def requestAvatar(
        self, avatarId: Any, mind: object, *interfaces: Any
    ) -> tuple[Any, Any, Callable[[], None]]:
        address = avatarId.decode("utf-8") if isinstance(avatarId, bytes) else str(avatarId)
        account: Account | None = self.store.account(address)
        if account is None:  # a password without a mailbox: refuse rather than invent one
            raise UnauthorizedLogin(f"no mailbox for {address!r} on this back-end")
        for iface in interfaces:
            if iface is imap4.IAccount:
                return iface, account, _noop
            if iface is pop3.IMailbox:
                return iface, POP3View(account.inbox), _noop
            if iface is smtp.IMessageDelivery:
                return iface, SubmissionLogin(address), _noop
        raise NotImplementedError(f"the demo back-end has no avatar for {interfaces!r}")
