"""The LDAP Password and LDAP Bind user maps: outcomes for every directory answer.

Most tests give the maps L{FakeDirectory}, an in-memory twin of L{LDAPConnector}
that answers searches from a table and records what it was asked; a few run the
real connector against ldaptor's in-memory server (see test_ldap_connector).
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field, replace
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import Logger, LogLevel, formatEvent
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from axigen_fe.config.model import LDAPConnectorConfig, OnMultiple
from axigen_fe.ldap import DirectoryUnavailable, LDAPConnector, SearchEntry, filter_text
from axigen_fe.usermap.interface import IUserMap, LookupResult, Outcome
from axigen_fe.usermap.ldap_bind import LDAPBindUserMap
from axigen_fe.usermap.ldap_password import DirectorySearchMap, LDAPPasswordUserMap
from tests.unit.test_ldap_connector import ALICE_DN, Directory, FakeNetwork
from tests.unit.test_ldap_connector import config as connector_config


def ssha(password: str, salt: bytes = b"saltsalt") -> bytes:
    digest = hashlib.sha1(password.encode() + salt).digest()
    return b"{SSHA}" + base64.b64encode(digest + salt)


ALICE: SearchEntry = (
    "uid=alice,ou=people,dc=example,dc=com",
    {"mailhost": [b"127.0.1.1"], "userpassword": [ssha("alice-secret")]},
)


@dataclass
class FakeDirectory:
    """An in-memory twin of L{LDAPConnector} for the maps."""

    entries: list[SearchEntry] = field(default_factory=list)
    outage: str | None = None
    crash: Exception | None = None
    passwords: dict[str, bytes] = field(default_factory=dict)
    searches: list[tuple[str, list[str]]] = field(default_factory=list)
    binds: list[tuple[str, bytes]] = field(default_factory=list)

    def search(self, filter_obj: Any, attributes: list[str]) -> Deferred[list[SearchEntry]]:
        self.searches.append((filter_text(filter_obj), attributes))
        if self.crash is not None:
            return fail(self.crash)
        if self.outage is not None:
            return fail(DirectoryUnavailable(self.outage))
        return succeed(
            [
                (dn, {k: v for k, v in attrs.items() if k in {a.lower() for a in attributes}})
                for dn, attrs in self.entries
            ]
        )

    def check_bind(self, dn: str, password: bytes) -> Deferred[bool]:
        self.binds.append((dn, password))
        if self.outage is not None:
            return fail(DirectoryUnavailable(self.outage))
        return succeed(bool(password) and self.passwords.get(dn) == password)


def map_config(**changes: Any) -> LDAPConnectorConfig:
    base = LDAPConnectorConfig(name="dir", uris=("ldap://127.0.0.1",), base_dn="dc=example,dc=com")
    return replace(base, **changes)


class MapTestCase(SynchronousTestCase):
    map_class: type[DirectorySearchMap] = LDAPPasswordUserMap

    def setUp(self) -> None:
        self.directory = FakeDirectory(entries=[ALICE])
        self.events: list[dict[str, Any]] = []

    def make(self, **changes: Any) -> DirectorySearchMap:
        m = self.map_class("users", self.directory, map_config(**changes))
        m.log = Logger(observer=self.events.append, namespace="test")
        return m

    def lookup(
        self, address: str = "alice@example.com", password: bytes | None = None, **changes: Any
    ) -> LookupResult:
        return self.successResultOf(self.make(**changes).lookup(address, password))

    def logged(self, level: LogLevel) -> list[str]:
        return [formatEvent(e) for e in self.events if e.get("log_level") == level]


class PasswordMapRoutingTests(MapTestCase):
    def test_provides_the_interface(self) -> None:
        m = self.make()
        self.assertTrue(verifyObject(IUserMap, m))
        self.assertFalse(m.checks_passwords_always)
        self.assertEqual(m.name, "users")

    def test_routes_without_a_password(self) -> None:
        result = self.lookup()
        self.assertEqual(
            (result.outcome, result.host, result.port), (Outcome.ROUTED, "127.0.1.1", None)
        )
        self.assertEqual(result.address, "alice@example.com")

    def test_host_with_port(self) -> None:
        self.directory.entries = [(ALICE[0], {"mailhost": [b" 127.0.1.9:1143 "]})]
        result = self.lookup()
        self.assertEqual((result.host, result.port), ("127.0.1.9", 1143))

    def test_asks_for_host_and_password_attributes_with_the_expanded_filter(self) -> None:
        self.lookup("Alice@Example.com", password_attribute="userPassword")
        self.assertEqual(
            self.directory.searches, [("(mail=alice@example.com)", ["mailHost", "userPassword"])]
        )

    def test_custom_attributes(self) -> None:
        self.directory.entries = [(ALICE[0], {"mailroutingaddress": [b"10.0.0.1"]})]
        result = self.lookup(host_attribute="mailRoutingAddress")
        self.assertEqual(result.host, "10.0.0.1")

    def test_no_entry_is_unknown_user(self) -> None:
        self.directory.entries = []
        self.assertEqual(self.lookup().outcome, Outcome.UNKNOWN_USER)

    def test_entry_without_host_is_unknown_and_logged(self) -> None:
        self.directory.entries = [(ALICE[0], {"userpassword": [ssha("alice-secret")]})]
        result = self.lookup(password=b"alice-secret")
        self.assertEqual(result.outcome, Outcome.UNKNOWN_USER)
        self.assertIn(ALICE[0], self.logged(LogLevel.warn)[0])
        self.assertIn("mailHost", self.logged(LogLevel.warn)[0])

    def test_several_entries_with_on_multiple_error_is_a_tempfail(self) -> None:
        """Nothing is mis-routed, the client retries, the operator is told."""
        other = ("uid=alice2,ou=people,dc=example,dc=com", {"mailhost": [b"127.0.1.2"]})
        self.directory.entries = [ALICE, other]
        result = self.lookup(on_multiple=OnMultiple.ERROR)
        self.assertEqual(result.outcome, Outcome.TEMPFAIL)
        (error,) = self.logged(LogLevel.error)
        self.assertIn(ALICE[0], error)
        self.assertIn(other[0], error)

    def test_several_entries_with_on_multiple_first_routes_to_the_first(self) -> None:
        other = ("uid=alice2,ou=people,dc=example,dc=com", {"mailhost": [b"127.0.1.2"]})
        self.directory.entries = [ALICE, other]
        result = self.lookup(on_multiple=OnMultiple.FIRST)
        self.assertEqual((result.outcome, result.host), (Outcome.ROUTED, "127.0.1.1"))
        self.assertEqual(len(self.logged(LogLevel.warn)), 1)

    def test_injection_is_escaped_before_the_directory_sees_it(self) -> None:
        self.directory.entries = []
        for address in ("*@example.com", "alice@example.com)(uid=*", "a\\@example.com"):
            self.assertEqual(self.lookup(address).outcome, Outcome.UNKNOWN_USER)
        self.assertEqual(
            [f for f, _ in self.directory.searches],
            [
                r"(mail=\2a@example.com)",
                r"(mail=alice@example.com\29\28uid=\2a)",
                r"(mail=a\5c@example.com)",
            ],
        )

    def test_control_characters_never_reach_the_directory(self) -> None:
        """slapd cuts IA5String values at a NUL: (mail=alice@example.com\\00) finds alice."""
        for address in ("alice@example.com\0", "alice\0@example.com", "alice@exa\nmple.com"):
            self.assertEqual(self.lookup(address, b"alice-secret").outcome, Outcome.UNKNOWN_USER)
        self.assertEqual(self.directory.searches, [])

    def test_an_address_the_filter_cannot_express_is_unknown(self) -> None:
        result = self.lookup("no-domain", filter="(&(uid=%u)(associatedDomain=%d))")
        self.assertEqual(result.outcome, Outcome.UNKNOWN_USER)
        self.assertEqual(self.directory.searches, [])

    def test_bad_template_stops_construction(self) -> None:
        with self.assertRaises(ValueError) as e:
            self.make(filter="(mail=%x)")
        self.assertIn("LDAP connector 'dir'", str(e.exception))


class PasswordMapPasswordTests(MapTestCase):
    def test_right_password_routes(self) -> None:
        self.assertEqual(self.lookup(password=b"alice-secret").outcome, Outcome.ROUTED)

    def test_wrong_password(self) -> None:
        self.assertEqual(self.lookup(password=b"nope").outcome, Outcome.BAD_PASSWORD)

    def test_empty_password_never_matches(self) -> None:
        self.assertEqual(self.lookup(password=b"").outcome, Outcome.BAD_PASSWORD)

    def test_any_of_several_stored_values_may_match(self) -> None:
        self.directory.entries = [
            (ALICE[0], {"mailhost": [b"h"], "userpassword": [ssha("old"), b"{PLAIN}new"]})
        ]
        self.assertEqual(self.lookup(password=b"old").outcome, Outcome.ROUTED)
        self.assertEqual(self.lookup(password=b"new").outcome, Outcome.ROUTED)
        self.assertEqual(self.lookup(password=b"other").outcome, Outcome.BAD_PASSWORD)

    def test_unreadable_password_is_a_bad_password_with_a_hint(self) -> None:
        """E.g. an anonymous connector, or a service account the ACL does not allow."""
        self.directory.entries = [(ALICE[0], {"mailhost": [b"127.0.1.1"]})]
        self.assertEqual(self.lookup(password=b"alice-secret").outcome, Outcome.BAD_PASSWORD)
        (warning,) = self.logged(LogLevel.warn)
        self.assertIn("no readable userPassword", warning)
        # ... while routing without a password still works
        self.assertEqual(self.lookup().outcome, Outcome.ROUTED)

    def test_unknown_scheme_is_a_bad_password_and_an_error_naming_the_scheme(self) -> None:
        stored = b"{FOO}" + base64.b64encode(b"alice-secret")
        self.directory.entries = [(ALICE[0], {"mailhost": [b"h"], "userpassword": [stored]})]
        self.assertEqual(self.lookup(password=b"alice-secret").outcome, Outcome.BAD_PASSWORD)
        (error,) = self.logged(LogLevel.error)
        self.assertIn("FOO", error)
        self.assertNotIn(stored.decode(), error)
        self.assertNotIn(base64.b64encode(b"alice-secret").decode(), error)

    def test_non_ascii_password(self) -> None:
        self.directory.entries = [
            (ALICE[0], {"mailhost": [b"h"], "userpassword": [ssha("pässwörd-€")]})
        ]
        self.assertEqual(self.lookup(password="pässwörd-€".encode()).outcome, Outcome.ROUTED)
        self.assertEqual(self.lookup(password=b"passwort").outcome, Outcome.BAD_PASSWORD)


class OutageTests(MapTestCase):
    def test_directory_outage_is_a_tempfail_never_a_bad_password(self) -> None:
        self.directory.outage = "no directory server reachable"
        for password in (None, b"alice-secret", b"wrong"):
            result = self.lookup(password=password)
            self.assertEqual(result.outcome, Outcome.TEMPFAIL)
            self.assertIn("no directory server reachable", result.detail)

    def test_unexpected_errors_are_a_logged_tempfail(self) -> None:
        self.directory.crash = RuntimeError("boom")
        self.assertEqual(self.lookup(password=b"x").outcome, Outcome.TEMPFAIL)
        self.assertEqual(len([e for e in self.events if e.get("log_failure")]), 1)

    def test_passwords_are_never_logged(self) -> None:
        stored = b"{FOO}c2VjcmV0"
        self.directory.entries = [(ALICE[0], {"userpassword": [stored]})]
        self.lookup(password=b"hunter2")
        self.directory.entries = [(ALICE[0], {"mailhost": [b"h"], "userpassword": [stored]})]
        self.lookup(password=b"hunter2")
        text = " ".join(formatEvent(e) for e in self.events)
        self.assertNotIn("hunter2", text)
        self.assertNotIn("c2VjcmV0", text)


class BindMapTests(MapTestCase):
    map_class = LDAPBindUserMap

    def setUp(self) -> None:
        super().setUp()
        self.directory.passwords[ALICE[0]] = b"alice-secret"

    def test_provides_the_interface(self) -> None:
        m = self.make()
        self.assertTrue(verifyObject(IUserMap, m))
        self.assertTrue(m.checks_passwords_always)

    def test_asks_only_for_the_host(self) -> None:
        self.lookup(filter="(|(sAMAccountName=%u)(userPrincipalName=%e))")
        self.assertEqual(
            self.directory.searches,
            [("(|(sAMAccountName=alice)(userPrincipalName=alice@example.com))", ["mailHost"])],
        )

    def test_right_password_binds_as_the_found_dn(self) -> None:
        result = self.lookup(password=b"alice-secret")
        self.assertEqual((result.outcome, result.host), (Outcome.ROUTED, "127.0.1.1"))
        self.assertEqual(self.directory.binds, [(ALICE[0], b"alice-secret")])

    def test_wrong_password(self) -> None:
        self.assertEqual(self.lookup(password=b"nope").outcome, Outcome.BAD_PASSWORD)

    def test_without_a_password_only_routes(self) -> None:
        self.assertEqual(self.lookup().outcome, Outcome.ROUTED)
        self.assertEqual(self.directory.binds, [])

    def test_unknown_user_is_not_bound(self) -> None:
        self.directory.entries = []
        self.assertEqual(self.lookup(password=b"x").outcome, Outcome.UNKNOWN_USER)
        self.assertEqual(self.directory.binds, [])

    def test_outage_during_the_bind_is_a_tempfail(self) -> None:
        m = self.make()
        self.directory.outage = None
        original = self.directory.check_bind

        def down(dn: str, password: bytes) -> Deferred[bool]:
            original(dn, password)
            return fail(DirectoryUnavailable("bind: no answer within 4s"))

        self.directory.check_bind = down  # type: ignore[method-assign]
        result = self.successResultOf(m.lookup("alice@example.com", b"alice-secret"))
        self.assertEqual(result.outcome, Outcome.TEMPFAIL)


class EndToEndTests(SynchronousTestCase):
    """The maps on the real connector and ldaptor's in-memory server."""

    def setUp(self) -> None:
        self.net = FakeNetwork()
        self.net.servers[389] = self.directory = Directory()
        self.connector = LDAPConnector(self.net.reactor, connector_config())
        self.connector.log = Logger(observer=lambda e: None)

    def lookup(self, m: DirectorySearchMap, address: str, password: bytes | None) -> LookupResult:
        d = m.lookup(address, password)
        self.net.run()
        return self.successResultOf(d)

    def test_password_map(self) -> None:
        m = LDAPPasswordUserMap("users", self.connector, connector_config())
        self.assertEqual(self.lookup(m, "Alice@example.com", b"alice-secret").host, "127.0.1.1")
        self.assertEqual(self.lookup(m, "alice@example.com", b"x").outcome, Outcome.BAD_PASSWORD)
        self.assertEqual(self.lookup(m, "*@example.com", None).outcome, Outcome.UNKNOWN_USER)
        joerg = self.lookup(m, "joerg@example.com", None)
        self.assertEqual((joerg.host, joerg.port), ("127.0.1.2", 1143))

    def test_bind_map(self) -> None:
        m = LDAPBindUserMap("users", self.connector, connector_config(filter="(uid=%u)"))
        self.assertEqual(self.lookup(m, "alice@anything", b"alice-secret").outcome, Outcome.ROUTED)
        self.assertEqual(self.lookup(m, "alice@anything", b"nope").outcome, Outcome.BAD_PASSWORD)
        self.assertEqual(self.lookup(m, "alice@anything", b"").outcome, Outcome.BAD_PASSWORD)
        self.assertEqual(self.directory.all_binds().count(ALICE_DN), 2)  # not for b""

    def test_outage_through_the_real_connector(self) -> None:
        del self.net.servers[389]
        m = LDAPPasswordUserMap("users", self.connector, connector_config())
        m.log = Logger(observer=lambda e: None)
        self.assertEqual(
            self.lookup(m, "alice@example.com", b"alice-secret").outcome, Outcome.TEMPFAIL
        )
