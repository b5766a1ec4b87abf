# mypy: disable-error-code="no-untyped-call"
# (twisted.application's services are untyped: calling into it is not an error here)
"""The demo directory: ldaptor's in-memory LDAP server holding the demo users.

It answers the same searches and binds a real directory would for the C{ldap-password}
user map: a service account (C{cn=proxy,...}) binds with a password, searches
C{(mail=...)} under C{ou=people} and reads C{mailHost} and an C{{SSHA}} C{userPassword}.
ldaptor's entries check simple binds against C{{SSHA}} and cleartext userPassword values,
so the service account's password is stored salted-hashed too.
"""

from __future__ import annotations

import os
from typing import Any

from ldaptor.entry import sshaDigest
from ldaptor.inmemory import ReadOnlyInMemoryLDAPEntry
from ldaptor.interfaces import IConnectedLDAPEntry
from ldaptor.protocols.ldap.ldapserver import LDAPServer
from twisted.application.internet import StreamServerEndpointService
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.protocol import ServerFactory
from twisted.python.components import registerAdapter

from axigen_fe.demo.layout import (
    BASE_DN,
    DIRECTORY_HOST,
    DOMAIN,
    PROXY_PASSWORD,
    DemoLayout,
    DemoUser,
)


def ssha(password: str) -> bytes:
    """A salted SHA-1 userPassword value, the scheme both ldaptor and our maps verify."""
    return sshaDigest(password.encode("utf-8"), os.urandom(8))  # type: ignore[no-any-return]


def build_tree(layout: DemoLayout, users: tuple[DemoUser, ...]) -> ReadOnlyInMemoryLDAPEntry:
    """dc=demo,dc=test with ou=services (the proxy account) and ou=people (the users)."""
    root = ReadOnlyInMemoryLDAPEntry(
        BASE_DN, {"objectClass": ["top", "dcObject", "organization"], "dc": ["demo"], "o": [DOMAIN]}
    )
    services = root.addChild(
        "ou=services", {"objectClass": ["organizationalUnit"], "ou": ["services"]}
    )
    services.addChild(
        "cn=proxy",
        {
            "objectClass": ["person", "simpleSecurityObject"],
            "cn": ["proxy"],
            "sn": ["proxy"],
            "description": [
                "axigen-fe service account: searches users, reads mailHost and userPassword"
            ],
            "userPassword": [ssha(PROXY_PASSWORD)],
        },
    )
    people = root.addChild("ou=people", {"objectClass": ["organizationalUnit"], "ou": ["people"]})
    for user in users:
        people.addChild(
            f"uid={user.uid}",
            {
                "objectClass": ["inetOrgPerson", "inetLocalMailRecipient"],
                "uid": [user.uid],
                "cn": [user.display_name],
                "sn": [user.display_name.split()[-1]],
                "mail": [user.address],
                "mailHost": [layout.backend_host(user)],
                "userPassword": [ssha(user.password)],
            },
        )
    return root


class DirectoryFactory(ServerFactory):
    """Serves one in-memory tree; ldaptor's server finds it through L{IConnectedLDAPEntry}."""

    protocol = LDAPServer
    noisy = False

    def __init__(self, root: ReadOnlyInMemoryLDAPEntry) -> None:
        self.root = root


def _root_of(factory: DirectoryFactory) -> Any:
    return factory.root


registerAdapter(_root_of, DirectoryFactory, IConnectedLDAPEntry)


def directory_service(
    reactor: Any, layout: DemoLayout, users: tuple[DemoUser, ...]
) -> StreamServerEndpointService:
    """Plain LDAP on loopback (C{layout.ldap_uri}); a busy port stops the demo at start-up."""
    endpoint = TCP4ServerEndpoint(reactor, layout.ldap_port, interface=DIRECTORY_HOST)
    service = StreamServerEndpointService(endpoint, DirectoryFactory(build_tree(layout, users)))
    service._raiseSynchronously = True
    service.setName("demo-directory")
    return service
