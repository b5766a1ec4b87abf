"""The LDAP maps and connector against a real OpenLDAP slapd.

Each test runs on the real reactor (trial's TestCase, which pytest runs and whose
Deferreds it waits for); the pytest fixtures reach the TestCase through an autouse
fixture that stores them on the instance. Every connector is closed in a cleanup, so
no connection outlives its test.
"""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet import reactor
from twisted.internet.defer import gatherResults
from twisted.logger import Logger
from twisted.trial.unittest import TestCase

from axigen_fe.config.model import LDAPConnectorConfig, OnMultiple
from axigen_fe.ldap import LDAPConnector
from axigen_fe.usermap.interface import LookupResult, Outcome
from axigen_fe.usermap.ldap_bind import LDAPBindUserMap
from axigen_fe.usermap.ldap_password import DirectorySearchMap, LDAPPasswordUserMap
from tests.integration.directory_data import (
    AD_DN,
    BASE_DN,
    PEOPLE_DN,
    PROXY_DN,
    PROXY_PASSWORD,
    USERS,
    user,
)
from tests.integration.servers.pki import TestCA
from tests.integration.servers.ports import free_port
from tests.integration.servers.slapd import Slapd

pytestmark = pytest.mark.integration

#: users whose stored password the proxy can verify, and who have a mailbox host
VERIFIABLE = [
    u
    for u in USERS
    if u.subtree == PEOPLE_DN
    and u.backend is not None
    and u.scheme != "UNKNOWN"
    and u.address != "dup@example.com"
]


class DirectoryTestCase(TestCase):
    """Builds connectors and maps for one slapd; closes them after the test."""

    slapd: Slapd
    hosts: dict[str, str]
    wrong_ca: TestCA

    def setUp(self) -> None:
        self.events: list[dict[str, Any]] = []

    def connector(self, **changes: Any) -> tuple[LDAPConnector, LDAPConnectorConfig]:
        settings: dict[str, Any] = {
            "name": "it",
            "uris": (self.slapd.ldap_uri,),
            "base_dn": BASE_DN,
            "bind_dn": PROXY_DN,
            "bind_password": PROXY_PASSWORD,
            "timeout": 4.0,
        }
        settings.update(changes)
        config = LDAPConnectorConfig(**settings)
        c = LDAPConnector(reactor, config)  # type: ignore[arg-type]
        c.log = Logger(observer=self.events.append, namespace="it")
        self.addCleanup(c.close)
        return c, config

    def password_map(self, **changes: Any) -> LDAPPasswordUserMap:
        c, config = self.connector(**changes)
        m = LDAPPasswordUserMap("users", c, config)
        m.log = Logger(observer=self.events.append, namespace="it")
        return m

    def bind_map(self, **changes: Any) -> LDAPBindUserMap:
        changes.setdefault("base_dn", AD_DN)
        c, config = self.connector(**changes)
        m = LDAPBindUserMap("ad", c, config)
        m.log = Logger(observer=self.events.append, namespace="it")
        return m

    async def expect(
        self,
        m: DirectorySearchMap,
        address: str,
        password: str | bytes | None,
        outcome: Outcome,
        host: str | None = None,
    ) -> LookupResult:
        if isinstance(password, str):
            password = password.encode("utf-8")
        result = await m.lookup(address, password)
        self.assertEqual(result.outcome, outcome, f"{address}: {result}")
        if host is not None:
            self.assertEqual(result.host, host, f"{address}: {result}")
        return result


class SharedSlapdTests(DirectoryTestCase):
    """Against the session's slapd (read-only)."""

    @pytest.fixture(autouse=True)
    def _servers(self, slapd: Slapd, backend_hosts: dict[str, str], wrong_ca: TestCA) -> None:
        self.slapd, self.hosts, self.wrong_ca = slapd, backend_hosts, wrong_ca

    # -- ldap-password: every stored scheme --------------------------------------------------

    async def test_every_password_scheme_routes_and_verifies(self) -> None:
        m = self.password_map()
        wrong: list[str] = []
        for u in VERIFIABLE:
            assert u.backend is not None
            right = await m.lookup(u.address, u.password.encode("utf-8"))
            bad = await m.lookup(u.address, (u.password + "x").encode("utf-8"))
            if (right.outcome, right.host) != (Outcome.ROUTED, self.hosts[u.backend]):
                wrong.append(f"{u.scheme} {u.address}: right password gave {right}")
            if bad.outcome is not Outcome.BAD_PASSWORD:
                wrong.append(f"{u.scheme} {u.address}: wrong password gave {bad}")
        self.assertEqual(wrong, [])
        self.assertGreaterEqual(len({u.scheme for u in VERIFIABLE}), 12)

    async def test_concurrent_lookups_share_the_pool(self) -> None:
        m = self.password_map(pool_size=3)
        results = await gatherResults(
            [m.lookup(u.address, u.password.encode()) for u in VERIFIABLE * 4]
        )
        self.assertEqual({r.outcome for r in results}, {Outcome.ROUTED})

    async def test_routing_without_a_password_and_case_insensitive_addresses(self) -> None:
        m = self.password_map()
        await self.expect(m, "ALICE@Example.COM", None, Outcome.ROUTED, self.hosts["a"])
        await self.expect(m, "bob@example.com", None, Outcome.ROUTED, self.hosts["b"])

    async def test_non_ascii_and_quoted_passwords(self) -> None:
        m = self.password_map()
        umlaut, spacey = user("umlaut@example.com"), user("spacey@example.com")
        await self.expect(m, umlaut.address, umlaut.password, Outcome.ROUTED, self.hosts["a"])
        await self.expect(m, umlaut.address, "passwort-EUR", Outcome.BAD_PASSWORD)
        await self.expect(
            m, umlaut.address, umlaut.password.encode("latin-1", "replace"), Outcome.BAD_PASSWORD
        )
        await self.expect(m, spacey.address, spacey.password, Outcome.ROUTED, self.hosts["b"])

    async def test_unknown_scheme_is_a_bad_password_and_an_error(self) -> None:
        m = self.password_map()
        u = user("u-unknown@example.com")
        await self.expect(m, u.address, u.password, Outcome.BAD_PASSWORD)
        self.assertTrue(any("FOO" in str(e.get("schemes")) for e in self.events))

    async def test_entry_without_mail_host_is_unknown(self) -> None:
        m = self.password_map()
        nohost = user("nohost@example.com")
        await self.expect(m, nohost.address, None, Outcome.UNKNOWN_USER)
        await self.expect(m, nohost.address, nohost.password, Outcome.UNKNOWN_USER)

    async def test_unknown_address_is_unknown(self) -> None:
        m = self.password_map()
        await self.expect(m, "nobody@example.com", None, Outcome.UNKNOWN_USER)
        await self.expect(m, "nobody@example.com", "x", Outcome.UNKNOWN_USER)

    async def test_duplicate_entries_follow_on_multiple(self) -> None:
        strict = self.password_map(on_multiple=OnMultiple.ERROR)
        result = await self.expect(strict, "dup@example.com", "dup-secret", Outcome.TEMPFAIL)
        self.assertIn("uid=dup1", result.detail)
        lenient = self.password_map(on_multiple=OnMultiple.FIRST)
        result = await self.expect(lenient, "dup@example.com", "dup-secret", Outcome.ROUTED)
        self.assertIn(result.host, {self.hosts["a"], self.hosts["b"]})

    async def test_filter_injection_never_routes(self) -> None:
        alice = user("alice@example.com")
        attempts = [
            "*@example.com",
            "*",
            "a*@example.com",
            "*)(uid=*))(|(uid=*@example.com",
            "x)(uid=*@example.com",
            "x)(|(uid=alice@example.com",
            "alice@example.com\0",
            "alice\0@example.com",
            "alice\\@example.com",
        ]
        for template, extra in (
            # payload after the "@" only reaches filters that use %e or %d; with
            # (uid=%u), "alice@<anything>" is alice by the operator's choice
            ("(mail=%e)", ["alice@example.com)(uid=*", "alice@example.com)(|(uid=*"]),
            ("(|(uid=%u)(mail=%e))", []),
            ("(&(uid=%u)(mail=*@%d))", ["alice@example.com)(uid=*", "alice@*"]),
        ):
            m = self.password_map(filter=template)
            for address in attempts + extra:
                for password in (None, alice.password.encode()):
                    result = await m.lookup(address, password)
                    self.assertNotEqual(
                        result.outcome, Outcome.ROUTED, f"{template} {address!r}: {result}"
                    )

    # -- identities ----------------------------------------------------------------------------

    async def test_anonymous_connector_routes_but_cannot_verify_passwords(self) -> None:
        """userPassword is readable only by the service account (slapd ACL): a password
        check without it is a bad password (logged with a hint), never a tempfail."""
        m = self.password_map(bind_dn=None, bind_password=None)
        alice = user("alice@example.com")
        await self.expect(m, alice.address, None, Outcome.ROUTED, self.hosts["a"])
        await self.expect(m, alice.address, alice.password, Outcome.BAD_PASSWORD)
        self.assertTrue(any("no readable" in e.get("log_format", "") for e in self.events))

    async def test_wrong_service_password_is_a_tempfail_not_a_bad_password(self) -> None:
        m = self.password_map(bind_password="not-the-proxy-password")
        alice = user("alice@example.com")
        result = await self.expect(m, alice.address, alice.password, Outcome.TEMPFAIL)
        self.assertIn(PROXY_DN, result.detail)
        self.assertIn("invalidCredentials", result.detail)

    async def test_missing_base_dn_is_a_tempfail(self) -> None:
        m = self.password_map(base_dn="ou=missing,dc=example,dc=com")
        result = await self.expect(m, "alice@example.com", None, Outcome.TEMPFAIL)
        self.assertIn("does not exist", result.detail)

    # -- ldap-bind -----------------------------------------------------------------------------

    async def test_bind_map_by_sam_account_name_and_by_user_principal_name(self) -> None:
        carol = user("carol@ad.example.com")
        for template in (
            "(sAMAccountName=%u)",
            "(userPrincipalName=%e)",
            "(|(sAMAccountName=%u)(userPrincipalName=%e))",
        ):
            m = self.bind_map(filter=template)
            await self.expect(m, carol.address, carol.password, Outcome.ROUTED, self.hosts["b"])
            await self.expect(m, carol.address, "wrong", Outcome.BAD_PASSWORD)
            await self.expect(m, carol.address, "", Outcome.BAD_PASSWORD)
            await self.expect(m, carol.address, None, Outcome.ROUTED, self.hosts["b"])
            await self.expect(m, "nobody@ad.example.com", "x", Outcome.UNKNOWN_USER)

    async def test_bind_map_with_a_non_ascii_password(self) -> None:
        m = self.bind_map(base_dn=BASE_DN, filter="(mail=%e)")
        umlaut = user("umlaut@example.com")
        await self.expect(m, umlaut.address, umlaut.password, Outcome.ROUTED, self.hosts["a"])
        await self.expect(m, umlaut.address, "pässwörd", Outcome.BAD_PASSWORD)

    async def test_non_ascii_addresses_are_searched_as_utf8(self) -> None:
        """ "jörg" reaches slapd as UTF-8 and matches the directoryString sAMAccountName;
        where the attribute cannot hold it (mail is IA5), the answer is unknown-user."""
        joerg = user("joerg@ad.example.com")
        m = self.bind_map(filter="(sAMAccountName=%u)")
        await self.expect(m, "JÖRG@ad.example.com", joerg.password, Outcome.ROUTED, self.hosts["b"])
        await self.expect(m, "jörg@ad.example.com", "wrong", Outcome.BAD_PASSWORD)
        await self.expect(m, "jörgen@ad.example.com", "x", Outcome.UNKNOWN_USER)
        mail = self.password_map()
        await self.expect(mail, "jörg@example.com", "x", Outcome.UNKNOWN_USER)

    async def test_bind_map_injection_never_routes(self) -> None:
        carol = user("carol@ad.example.com")
        m = self.bind_map(filter="(|(sAMAccountName=%u)(userPrincipalName=%e))")
        for address in ("*@ad.example.com", "carol)(uid=*@ad.example.com", "*"):
            result = await m.lookup(address, carol.password.encode())
            self.assertNotEqual(result.outcome, Outcome.ROUTED, f"{address!r}: {result}")

    # -- TLS -----------------------------------------------------------------------------------

    async def test_starttls_with_the_right_ca(self) -> None:
        m = self.password_map(start_tls=True, ca_file=self.slapd.ca_file)
        alice = user("alice@example.com")
        await self.expect(m, alice.address, alice.password, Outcome.ROUTED, self.hosts["a"])

    async def test_starttls_with_the_wrong_ca_is_a_tempfail(self) -> None:
        m = self.password_map(start_tls=True, ca_file=self.wrong_ca.cert_file)
        alice = user("alice@example.com")
        result = await self.expect(m, alice.address, alice.password, Outcome.TEMPFAIL)
        self.assertIn("certificate verify failed", result.detail)

    async def test_ldaps_with_the_right_ca(self) -> None:
        m = self.password_map(uris=(self.slapd.ldaps_uri,), ca_file=self.slapd.ca_file)
        alice = user("alice@example.com")
        await self.expect(m, alice.address, alice.password, Outcome.ROUTED, self.hosts["a"])

    async def test_ldaps_by_host_name(self) -> None:
        """The certificate's DNS name is checked too (C{localhost} is in its SANs)."""
        uri = f"ldaps://localhost:{self.slapd.ldaps_port}"
        m = self.password_map(uris=(uri,), ca_file=self.slapd.ca_file)
        await self.expect(m, "alice@example.com", None, Outcome.ROUTED, self.hosts["a"])

    async def test_ldaps_with_the_wrong_ca_is_a_tempfail(self) -> None:
        m = self.password_map(uris=(self.slapd.ldaps_uri,), ca_file=self.wrong_ca.cert_file)
        result = await self.expect(m, "alice@example.com", None, Outcome.TEMPFAIL)
        self.assertIn("certificate verify failed", result.detail)

    async def test_bind_map_over_ldaps(self) -> None:
        carol = user("carol@ad.example.com")
        m = self.bind_map(
            uris=(self.slapd.ldaps_uri,), ca_file=self.slapd.ca_file, filter="(sAMAccountName=%u)"
        )
        await self.expect(m, carol.address, carol.password, Outcome.ROUTED, self.hosts["b"])
        await self.expect(m, carol.address, "wrong", Outcome.BAD_PASSWORD)

    # -- failover ------------------------------------------------------------------------------

    async def test_dead_first_uri_fails_over(self) -> None:
        dead = f"ldap://127.0.0.1:{free_port()}"
        m = self.password_map(uris=(dead, self.slapd.ldap_uri))
        alice = user("alice@example.com")
        await self.expect(m, alice.address, alice.password, Outcome.ROUTED, self.hosts["a"])
        self.assertTrue(
            any(e.get("uri") == dead and e.get("next") == self.slapd.ldap_uri for e in self.events)
        )

    async def test_no_reachable_uri_is_a_tempfail(self) -> None:
        m = self.password_map(uris=(f"ldap://127.0.0.1:{free_port()}",))
        alice = user("alice@example.com")
        result = await self.expect(m, alice.address, alice.password, Outcome.TEMPFAIL)
        self.assertIn("connection refused", result.detail)


class PrivateSlapdTests(DirectoryTestCase):
    """Against a slapd of the test's own, which the test stops, freezes and restarts."""

    @pytest.fixture(autouse=True)
    def _servers(
        self, private_slapd: Slapd, backend_hosts: dict[str, str], wrong_ca: TestCA
    ) -> None:
        self.slapd, self.hosts, self.wrong_ca = private_slapd, backend_hosts, wrong_ca

    async def test_directory_stopped_mid_run_is_a_tempfail_then_recovers(self) -> None:
        password_map = self.password_map()
        bind_map = self.bind_map(filter="(sAMAccountName=%u)")
        alice, carol = user("alice@example.com"), user("carol@ad.example.com")
        await self.expect(password_map, alice.address, alice.password, Outcome.ROUTED)
        await self.expect(bind_map, carol.address, carol.password, Outcome.ROUTED)

        self.slapd.stop()
        for m, u in ((password_map, alice), (bind_map, carol)):
            await self.expect(m, u.address, u.password, Outcome.TEMPFAIL)
            await self.expect(m, u.address, "wrong", Outcome.TEMPFAIL)  # not BAD_PASSWORD
            await self.expect(m, u.address, None, Outcome.TEMPFAIL)  # not UNKNOWN_USER

        self.slapd.start()
        await self.expect(
            password_map, alice.address, alice.password, Outcome.ROUTED, self.hosts["a"]
        )
        await self.expect(bind_map, carol.address, carol.password, Outcome.ROUTED, self.hosts["b"])

    async def test_frozen_directory_times_out(self) -> None:
        """A server that accepts but never answers (SIGSTOP) costs one timeout, then a
        temporary failure; after it thaws the pool reconnects."""
        m = self.password_map(timeout=1.0)
        alice = user("alice@example.com")
        await self.expect(m, alice.address, alice.password, Outcome.ROUTED)
        self.addCleanup(self.slapd.thaw)
        self.slapd.freeze()
        result = await self.expect(m, alice.address, alice.password, Outcome.TEMPFAIL)
        self.assertIn("within 1s", result.detail)  # the per-operation timeout answered
        self.slapd.thaw()
        await self.expect(m, alice.address, alice.password, Outcome.ROUTED, self.hosts["a"])

    async def test_failover_to_the_second_server_when_the_first_stops(self) -> None:
        """Two URIs for one slapd (ldap:// and ldaps://); stopping it and restarting with
        only the second reachable is modelled by a dead first URI."""
        dead = f"ldap://127.0.0.1:{free_port()}"
        m = self.password_map(uris=(dead, self.slapd.ldaps_uri), ca_file=self.slapd.ca_file)
        alice = user("alice@example.com")
        await self.expect(m, alice.address, alice.password, Outcome.ROUTED)
        self.slapd.stop()
        await self.expect(m, alice.address, alice.password, Outcome.TEMPFAIL)
        self.slapd.start()
        await self.expect(m, alice.address, alice.password, Outcome.ROUTED, self.hosts["a"])
