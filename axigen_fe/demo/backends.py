# mypy: disable-error-code="no-untyped-call"
# (twisted.application's services are untyped: calling into it is not an error here)
"""The two demo back-ends: per back-end one mail store and IMAP, POP3, SMTP, submission.

Each back-end listens on its own loopback address (127.0.0.11 and 127.0.0.12 by default,
bindable on Linux without setup) with the same ports, like two real mail servers; the
directory's C{mailHost} decides which one a user's session reaches. Every user's INBOX
starts with a welcome message naming its back-end, so a client can see where it landed.
"""

from __future__ import annotations

import email.utils
from typing import Any

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService
from twisted.cred.portal import Portal
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.interfaces import IProtocolFactory
from twisted.internet.task import Cooperator

from axigen_fe.demo.accounts import BackendRealm, DemoPasswords
from axigen_fe.demo.backend_imap import DemoIMAPFactory
from axigen_fe.demo.backend_pop3 import DemoPOP3Factory
from axigen_fe.demo.backend_smtp import DemoSMTPFactory
from axigen_fe.demo.layout import DOMAIN, DemoLayout, DemoUser
from axigen_fe.demo.mailstore import Account, MailStore


def backend_name(index: int) -> str:
    return f"demo back-end {index}"


def welcome_message(user: DemoUser, host: str) -> bytes:
    """The seeded INBOX message: its subject says which back-end holds the mailbox."""
    name = backend_name(user.backend)
    lines = [
        f"From: Demo Postmaster <postmaster@{DOMAIN}>",
        f"To: {user.display_name} <{user.address}>",
        f"Subject: Welcome to {name}",
        f"Date: {email.utils.formatdate(localtime=True)}",
        f"Message-ID: <welcome-{user.uid}-{user.backend}@{DOMAIN}>",
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=utf-8",
        "",
        f"Welcome to {name} ({host}).",
        "",
        f"Your mailbox {user.address} lives on {name}. The axigen-fe node routed",
        f"your session here because the directory's mailHost for you is {host}.",
        "",
    ]
    return "\r\n".join(lines).encode("utf-8")


class _Cooperation(MultiService):
    """Stops the back-end's cooperator (used for FETCH/RETR output) with the back-end."""

    def __init__(self, cooperator: Cooperator) -> None:
        super().__init__()
        self.cooperator = cooperator

    def stopService(self) -> Any:
        d = super().stopService()
        self.cooperator.stop()
        return d


class DemoBackend:
    """One in-process mail server: store, portal and the four listening services."""

    def __init__(
        self,
        reactor: Any,
        index: int,
        host: str,
        users: tuple[DemoUser, ...],
        all_accounts: dict[str, Account],
    ) -> None:
        self.reactor = reactor
        self.index = index
        self.host = host
        self.name = backend_name(index)
        mine = tuple(u for u in users if u.backend == index)
        self.store = MailStore(u.address for u in mine)
        for user in mine:
            account = self.store.account(user.address)
            assert account is not None
            account.inbox.deliver(welcome_message(user, host))
            all_accounts[user.address.lower()] = account
        self._all_accounts = all_accounts
        self.portal = Portal(
            BackendRealm(self.store), [DemoPasswords({u.address: u.password for u in mine})]
        )
        self.cooperator = Cooperator(scheduler=lambda f: reactor.callLater(0, f), started=True)

    def _listen(
        self, port: int, factory: IProtocolFactory, name: str
    ) -> StreamServerEndpointService:
        service = StreamServerEndpointService(
            TCP4ServerEndpoint(self.reactor, port, interface=self.host), factory
        )
        service._raiseSynchronously = True  # a port in use stops the demo at start-up, loudly
        service.setName(name)
        return service

    def service(self, layout: DemoLayout) -> MultiService:
        top = _Cooperation(self.cooperator)
        top.setName(f"demo-backend-{self.index}")
        local = self.store.account
        everywhere = self._all_accounts.get
        for port, factory, name in (
            (
                layout.backend_imap_port,
                DemoIMAPFactory(self.name, self.portal, self.cooperator.coiterate),
                "imap",
            ),
            (
                layout.backend_pop3_port,
                DemoPOP3Factory(self.name, self.portal, self.cooperator.coiterate),
                "pop3",
            ),
            (
                layout.backend_smtp_port,
                DemoSMTPFactory(self.name, self.portal, False, local),
                "smtp",
            ),
            (
                layout.backend_submission_port,
                DemoSMTPFactory(self.name, self.portal, True, lambda a: everywhere(a.lower())),
                "submission",
            ),
        ):
            self._listen(port, factory, name).setServiceParent(top)
        return top


def make_backends(
    reactor: Any, layout: DemoLayout, users: tuple[DemoUser, ...]
) -> list[DemoBackend]:
    """Both back-ends; they share a table of all mailboxes for submission between them."""
    all_accounts: dict[str, Account] = {}
    return [
        DemoBackend(reactor, i, layout.backend_hosts[i - 1], users, all_accounts) for i in (1, 2)
    ]
