"""LDAPConnector: pooling, failover, back-off, timeouts, errors, password binds, TLS.

Most tests run the connector on a L{MemoryReactorClock} against ldaptor's in-memory
directory server, wired together with L{twisted.test.iosim} (L{FakeNetwork}): no
sockets, and time only moves when a test says so. The TLS tests at the end need real
handshakes and use an in-process ldaptor server on a loopback port.
"""

from __future__ import annotations

import io
import shutil
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from OpenSSL import SSL
from twisted.internet import reactor as global_reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.interfaces import IOpenSSLContextFactory, ISSLTransport
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import Logger, LogLevel, formatEvent
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer

from axigen_fe.config.model import LDAPConnectorConfig
from axigen_fe.ldap import DirectoryUnavailable, LDAPConnector, SearchEntry, build_filter
from axigen_fe.ldap._ldaptor import pureldap
from tests.integration.servers.pki import TestCA, make_ca

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from ldaptor.inmemory import fromLDIFFile
    from ldaptor.protocols.ldap.ldapserver import LDAPServer

BASE = "dc=example,dc=com"
PROXY_DN = f"cn=proxy,{BASE}"
PROXY_PASSWORD = "proxy-secret"
ALICE_DN = f"uid=alice,ou=people,{BASE}"

LDIF = f"""\
dn: {BASE}
objectClass: dcObject
dc: example

dn: ou=people,{BASE}
objectClass: organizationalUnit
ou: people

dn: {PROXY_DN}
objectClass: person
cn: proxy
userPassword: {PROXY_PASSWORD}

dn: {ALICE_DN}
objectClass: inetOrgPerson
uid: alice
mail: alice@example.com
mailHost: 127.0.1.1
userPassword: alice-secret

dn: uid=joerg,ou=people,{BASE}
objectClass: inetOrgPerson
uid: joerg
cn:: asO2cmc=
mail: joerg@example.com
mailHost: 127.0.1.2:1143

dn: uid=dup1,ou=people,{BASE}
objectClass: inetOrgPerson
uid: dup1
mail: dup@example.com
mailHost: 127.0.1.1

dn: uid=dup2,ou=people,{BASE}
objectClass: inetOrgPerson
uid: dup2
mail: dup@example.com
mailHost: 127.0.1.2

""".encode()


def load_directory(ldif: bytes = LDIF) -> Any:
    """ldaptor's in-memory tree (fromLDIFFile fires synchronously for a BytesIO)."""
    results: list[Any] = []
    fromLDIFFile(io.BytesIO(ldif)).addBoth(results.append)
    if isinstance(results[0], Failure):
        results[0].raiseException()
    return results[0]


@dataclass
class Directory:
    """One in-memory directory and how its servers behave, plus what they saw."""

    root: Any = field(default_factory=load_directory)
    search_answer: str | int = "normal"
    """"normal", "never" (no answer), "drop" (close the connection), or a resultCode."""
    bind_answer: dict[str, str | int] = field(default_factory=dict)
    """per bind DN: "never" or a resultCode instead of the real answer"""
    servers: list[DirectoryServer] = field(default_factory=list)
    """every server-side connection, in the order they were made"""

    def server(self) -> DirectoryServer:
        s = DirectoryServer(self)
        self.servers.append(s)
        return s

    def all_binds(self) -> list[str]:
        return [dn for s in self.servers for dn in s.binds]


class DirectoryServer(LDAPServer):  # type: ignore[misc]
    """ldaptor's server, recording what it is asked and misbehaving on request."""

    def __init__(self, directory: Directory) -> None:
        super().__init__()
        self.directory = directory
        self.factory = directory.root  # IConnectedLDAPEntry(factory) is the tree itself
        self.binds: list[str] = []
        self.searches = 0
        self.unbound = False
        self.tls_at_bind: list[bool] = []
        self.lost: Deferred[None] = Deferred()

    def handle_LDAPBindRequest(self, request: Any, controls: Any, reply: Any) -> Any:
        dn = request.dn.decode() if isinstance(request.dn, bytes) else request.dn
        self.binds.append(dn)
        self.tls_at_bind.append(ISSLTransport.providedBy(self.transport))
        answer = self.directory.bind_answer.get(dn)
        if answer == "never":
            return Deferred()
        if isinstance(answer, int):
            return pureldap.LDAPBindResponse(resultCode=answer)
        return super().handle_LDAPBindRequest(request, controls, reply)

    def handle_LDAPSearchRequest(self, request: Any, controls: Any, reply: Any) -> Any:
        self.searches += 1
        answer = self.directory.search_answer
        if answer == "never":
            return Deferred()
        if answer == "drop":
            self.directory.search_answer = "normal"  # only once
            self.transport.loseConnection()
            return None
        if isinstance(answer, int):
            return pureldap.LDAPSearchResultDone(resultCode=answer)
        return super().handle_LDAPSearchRequest(request, controls, reply)

    def handle_LDAPUnbindRequest(self, request: Any, controls: Any, reply: Any) -> Any:
        self.unbound = True
        return super().handle_LDAPUnbindRequest(request, controls, reply)

    def connectionLost(self, reason: Failure | None = None) -> None:
        super().connectionLost(reason)
        if not self.lost.called:
            self.lost.callback(None)


class FakeNetwork:
    """Completes the connector's TCP attempts on a MemoryReactorClock and moves bytes.

    Ports in L{servers} accept and get an in-memory LDAP server; ports in L{hanging}
    never answer the connection attempt; every other port refuses.
    """

    def __init__(self) -> None:
        self.reactor = MemoryReactorClock()
        self.servers: dict[int, Directory] = {}
        self.hanging: set[int] = set()
        self.attempts: list[int] = []
        self.pumps: list[tuple[Any, DirectoryServer, iosim.IOPump]] = []
        self._stuck: list[Any] = []

    def run(self) -> None:
        """Until nothing moves: answer connection attempts, deliver bytes, disconnect."""
        moved = True
        while moved:
            moved = False
            while self.reactor.tcpClients:
                host, port, factory, _timeout, _bind = self.reactor.tcpClients.pop(0)
                connector = self.reactor.connectors.pop(0)
                self.attempts.append(port)
                moved = True
                if port in self.hanging:
                    self._stuck.append(connector)
                elif port in self.servers:
                    client = factory.buildProtocol(IPv4Address("TCP", host, port))
                    server = self.servers[port].server()
                    pump = iosim.connect(
                        server,
                        iosim.makeFakeServer(server),
                        client,
                        iosim.makeFakeClient(client),
                        greet=False,
                        clock=self.reactor,
                    )
                    self.pumps.append((client, server, pump))
                else:
                    factory.clientConnectionFailed(connector, Failure(ConnectionRefusedError()))
            for _, _, pump in self.pumps:
                if pump.pump(advanceClock=False):
                    moved = True

    def advance(self, seconds: float) -> None:
        self.reactor.advance(seconds)
        self.run()

    def open_servers(self) -> list[DirectoryServer]:
        return [s for _, s, p in self.pumps if not p.serverIO.disconnected]


def temp_dir(case: SynchronousTestCase) -> Path:
    """A directory removed after the test (trial's mktemp() would litter the cwd when
    pytest runs the test)."""
    path = Path(tempfile.mkdtemp(prefix="axigen-fe-ldap-test-"))
    case.addCleanup(shutil.rmtree, path, True)
    return path


def config(**changes: Any) -> LDAPConnectorConfig:
    base = LDAPConnectorConfig(
        name="dir",
        uris=("ldap://127.0.0.1:389",),
        base_dn=BASE,
        bind_dn=PROXY_DN,
        bind_password=PROXY_PASSWORD,
    )
    return replace(base, **changes)


class ConnectorTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.net = FakeNetwork()
        self.directory = Directory()
        self.net.servers[389] = self.directory
        self.events: list[dict[str, Any]] = []

    def connector(self, **changes: Any) -> LDAPConnector:
        c = LDAPConnector(self.net.reactor, config(**changes))
        c.log = Logger(observer=self.events.append, namespace="test")
        return c

    def search(self, c: LDAPConnector, address: str = "alice@example.com") -> Deferred[Any]:
        d = c.search(build_filter("(mail=%e)", address), ["mailHost", "userPassword"])
        self.net.run()
        return d

    def logged(self, level: LogLevel | None = None) -> list[str]:
        return [formatEvent(e) for e in self.events if level is None or e.get("log_level") == level]

    def unavailable(self, d: Deferred[Any]) -> str:
        failure = self.failureResultOf(d, DirectoryUnavailable)
        assert isinstance(failure.value, DirectoryUnavailable)
        return failure.value.reason


class SearchTests(ConnectorTestCase):
    def test_search_returns_dn_and_lowercased_attributes(self) -> None:
        entries: list[SearchEntry] = self.successResultOf(self.search(self.connector()))
        self.assertEqual(
            entries,
            [(ALICE_DN, {"mailhost": [b"127.0.1.1"], "userpassword": [b"alice-secret"]})],
        )

    def test_no_match_is_an_empty_list(self) -> None:
        self.assertEqual(self.successResultOf(self.search(self.connector(), "x@nowhere")), [])

    def test_several_matches_are_all_returned(self) -> None:
        entries = self.successResultOf(self.search(self.connector(), "dup@example.com"))
        self.assertEqual(
            sorted(dn for dn, _ in entries),
            [f"uid=dup1,ou=people,{BASE}", f"uid=dup2,ou=people,{BASE}"],
        )

    def test_searches_run_as_the_service_account(self) -> None:
        self.successResultOf(self.search(self.connector()))
        self.assertEqual(self.directory.all_binds(), [PROXY_DN])

    def test_anonymous_connector_does_not_bind(self) -> None:
        c = self.connector(bind_dn=None, bind_password=None)
        self.assertEqual(len(self.successResultOf(self.search(c))), 1)
        self.assertEqual(self.directory.all_binds(), [])

    def test_search_request_is_bounded(self) -> None:
        """Subtree under base_dn, size limit 2 (none/one/several is all a map needs)."""
        sent: list[Any] = []
        real = pureldap.LDAPSearchRequest

        def spy(**kw: Any) -> Any:
            sent.append(kw)
            return real(**kw)

        self.patch(pureldap, "LDAPSearchRequest", spy)
        self.successResultOf(self.search(self.connector(timeout=2.5)))
        self.assertEqual(sent[0]["baseObject"], BASE)
        self.assertEqual(sent[0]["scope"], pureldap.LDAP_SCOPE_wholeSubtree)
        self.assertEqual(sent[0]["sizeLimit"], 2)
        self.assertEqual(sent[0]["timeLimit"], 3)

    def test_non_ascii_filter_values_reach_the_server_as_utf8(self) -> None:
        c = self.connector()
        d = c.search(build_filter("(cn=%u)", "JÖRG@example.com"), ["mailHost"])
        self.net.run()
        self.assertEqual(
            self.successResultOf(d),
            [(f"uid=joerg,ou=people,{BASE}", {"mailhost": [b"127.0.1.2:1143"]})],
        )

    def test_missing_base_dn_is_an_outage_not_an_empty_result(self) -> None:
        """Everyone would otherwise be "unknown" - and SMTP would bounce their mail."""
        reason = self.unavailable(self.search(self.connector(base_dn="dc=nowhere,dc=com")))
        self.assertIn("base DN 'dc=nowhere,dc=com' does not exist", reason)

    def test_busy_server_is_an_outage_and_the_connection_is_replaced(self) -> None:
        c = self.connector()
        self.directory.search_answer = 51
        self.assertIn("busy", self.unavailable(self.search(c)))
        self.directory.search_answer = "normal"
        self.successResultOf(self.search(c))
        self.assertEqual(len(self.directory.servers), 2)

    def test_other_server_errors_are_outages(self) -> None:
        self.directory.search_answer = 53
        self.assertIn("unwillingToPerform", self.unavailable(self.search(self.connector())))


class PoolTests(ConnectorTestCase):
    def test_connection_is_reused(self) -> None:
        c = self.connector()
        for _ in range(3):
            self.successResultOf(self.search(c))
        self.assertEqual(self.net.attempts, [389])
        self.assertEqual(self.directory.all_binds(), [PROXY_DN])

    def test_concurrent_searches_share_the_first_connection(self) -> None:
        c = self.connector()
        f = build_filter("(mail=%e)", "alice@example.com")
        ds = [c.search(f, ["mailHost"]) for _ in range(5)]
        self.net.run()
        for d in ds:
            self.assertEqual(len(self.successResultOf(d)), 1)
        self.assertEqual(self.net.attempts, [389])

    def test_busy_pool_grows_up_to_pool_size(self) -> None:
        c = self.connector(pool_size=3)
        self.successResultOf(self.search(c))  # one idle connection
        self.directory.search_answer = "never"
        f = build_filter("(mail=%e)", "alice@example.com")
        pending = [c.search(f, ["mailHost"]) for _ in range(10)]
        self.net.run()
        self.assertEqual(len(self.net.attempts), 3)  # never more than pool_size
        self.assertEqual(len(self.net.open_servers()), 3)
        # the searches did not wait for the new connections: all went out on the first
        self.assertEqual([s.searches for s in self.directory.servers], [11, 0, 0])
        self.net.advance(4)
        for d in pending:
            self.failureResultOf(d, DirectoryUnavailable)

    def test_idle_connections_take_turns(self) -> None:
        c = self.connector(pool_size=2)
        f = build_filter("(mail=%e)", "alice@example.com")
        self.successResultOf(self.search(c))
        # two at once: the second finds the only connection busy and grows the pool
        pair = gatherResults([c.search(f, ["mailHost"]) for _ in range(2)])
        self.net.run()
        self.successResultOf(pair)
        self.assertEqual(len(self.net.open_servers()), 2)
        for s in self.directory.servers:
            s.searches = 0
        batch = [c.search(f, ["mailHost"]) for _ in range(4)]
        self.net.run()
        for d in batch:
            self.successResultOf(d)
        self.assertEqual([s.searches for s in self.directory.servers], [2, 2])
        self.assertEqual(len(self.net.attempts), 2)

    def test_connection_closed_while_idle_is_replaced(self) -> None:
        c = self.connector()
        self.successResultOf(self.search(c))
        self.directory.servers[0].transport.loseConnection()
        self.net.run()
        self.assertTrue(any("closed" in m for m in self.logged(LogLevel.info)))
        self.successResultOf(self.search(c))
        self.assertEqual(self.net.attempts, [389, 389])

    def test_connection_dropped_under_a_search_is_retried_once(self) -> None:
        c = self.connector()
        self.successResultOf(self.search(c))
        self.directory.search_answer = "drop"
        self.assertEqual(len(self.successResultOf(self.search(c))), 1)
        self.assertEqual(self.net.attempts, [389, 389])
        self.assertTrue(any("retrying once" in m for m in self.logged(LogLevel.info)))

    def test_connection_dropped_twice_is_an_outage(self) -> None:
        c = self.connector()
        self.successResultOf(self.search(c))
        original = DirectoryServer.handle_LDAPSearchRequest

        def always_drop(server: DirectoryServer, *args: Any) -> Any:
            server.directory.search_answer = "drop"
            return original(server, *args)

        self.patch(DirectoryServer, "handle_LDAPSearchRequest", always_drop)
        self.assertIn("closed the connection", self.unavailable(self.search(c)))

    def test_notice_of_disconnection_retires_the_connection(self) -> None:
        c = self.connector()
        self.successResultOf(self.search(c))
        notice = pureldap.LDAPExtendedResponse(
            resultCode=52, responseName="1.3.6.1.4.1.1466.20036", errorMessage="shutting down"
        )
        self.directory.servers[0].queue(0, notice)
        self.net.run()
        self.successResultOf(self.search(c))
        self.assertEqual(self.net.attempts, [389, 389])


class FailoverTests(ConnectorTestCase):
    DEAD = "ldap://127.0.0.1:1"
    LIVE = "ldap://127.0.0.1:389"

    def drop_all(self) -> None:
        for s in self.net.open_servers():
            s.transport.loseConnection()
        self.net.run()

    def test_uris_are_tried_in_order(self) -> None:
        c = self.connector(uris=(self.DEAD, self.LIVE))
        self.assertEqual(len(self.successResultOf(self.search(c))), 1)
        self.assertEqual(self.net.attempts, [1, 389])
        self.assertIn(
            f"ldap connector dir: {self.DEAD} unreachable (connect: connection refused); "
            f"trying {self.LIVE}",
            self.logged(LogLevel.warn),
        )

    def test_failed_uri_is_skipped_during_the_backoff_then_tried_again(self) -> None:
        c = self.connector(uris=(self.DEAD, self.LIVE))
        self.successResultOf(self.search(c))
        self.drop_all()
        self.successResultOf(self.search(c))
        self.assertEqual(self.net.attempts, [1, 389, 389])
        self.net.advance(5)
        self.drop_all()
        self.successResultOf(self.search(c))
        self.assertEqual(self.net.attempts, [1, 389, 389, 1, 389])

    def test_all_uris_down_is_an_outage_naming_each(self) -> None:
        c = self.connector(uris=(self.DEAD, "ldap://127.0.0.1:2"))
        reason = self.unavailable(self.search(c))
        self.assertIn("ldap://127.0.0.1:1: connect: connection refused", reason)
        self.assertIn("ldap://127.0.0.1:2: connect: connection refused", reason)
        self.assertTrue(
            any("no directory server reachable" in m for m in self.logged(LogLevel.error))
        )

    def test_an_outage_is_logged_once_per_interval_with_a_count(self) -> None:
        c = self.connector(uris=(self.DEAD, "ldap://127.0.0.1:2"))
        for _ in range(3):
            self.unavailable(self.search(c))
        self.assertEqual(len(self.logged(LogLevel.error)), 1)
        self.assertEqual(len(self.logged(LogLevel.warn)), 1)  # DEAD started failing
        self.net.advance(60)
        self.unavailable(self.search(c))
        errors = self.logged(LogLevel.error)
        self.assertEqual(len(errors), 2)
        self.assertIn("2 more failed attempts since the last report", errors[1])

    def test_recovery_is_logged(self) -> None:
        del self.net.servers[389]
        c = self.connector()
        self.unavailable(self.search(c))
        self.net.servers[389] = self.directory
        self.successResultOf(self.search(c))
        self.assertIn(f"ldap connector dir: {self.LIVE} answers again", self.logged(LogLevel.info))

    def test_backed_off_uris_are_still_tried_when_nothing_else_answers(self) -> None:
        """A directory that comes back is used at once, not after the back-off."""
        del self.net.servers[389]
        c = self.connector()
        self.unavailable(self.search(c))
        self.net.servers[389] = self.directory
        self.successResultOf(self.search(c))

    def test_connect_timeout_fails_over(self) -> None:
        self.net.hanging.add(1)
        c = self.connector(uris=(self.DEAD, self.LIVE), timeout=4.0)
        d = self.search(c)
        self.assertNoResult(d)
        self.net.advance(3.9)
        self.assertNoResult(d)
        self.net.advance(0.1)
        self.successResultOf(d)
        self.assertTrue(
            any("no answer to connect within 4s" in m for m in self.logged(LogLevel.warn))
        )

    def test_search_timeout_is_an_outage_and_drops_the_connection(self) -> None:
        c = self.connector(timeout=2.0)
        self.successResultOf(self.search(c))
        self.directory.search_answer = "never"
        d = self.search(c)
        self.net.advance(2)
        self.assertIn("no answer to search within 2s", self.unavailable(d))
        self.assertEqual(self.net.open_servers(), [])
        self.directory.search_answer = "normal"
        self.successResultOf(self.search(c))

    def test_bind_timeout_fails_over(self) -> None:
        self.net.servers[390] = slow = Directory(bind_answer={PROXY_DN: "never"})
        c = self.connector(uris=("ldap://127.0.0.1:390", self.LIVE))
        d = self.search(c)
        self.net.advance(4)
        self.successResultOf(d)
        self.assertEqual(slow.all_binds(), [PROXY_DN])
        self.assertEqual(self.net.attempts, [390, 389])

    def test_refused_service_account_is_an_outage_naming_the_dn(self) -> None:
        """Not a user's wrong password: the operator must fix the configuration."""
        c = self.connector(bind_password="not-the-password")
        reason = self.unavailable(self.search(c))
        self.assertIn(f"bind as {PROXY_DN} refused: invalidCredentials", reason)
        errors = self.logged(LogLevel.error)
        self.assertTrue(
            any(PROXY_DN in m and "check bind_dn and bind_password" in m for m in errors)
        )
        self.assertFalse(any("not-the-password" in m for m in self.logged()))


class CheckBindTests(ConnectorTestCase):
    def check(self, c: LDAPConnector, password: bytes, dn: str = ALICE_DN) -> Deferred[bool]:
        d = c.check_bind(dn, password)
        self.net.run()
        return d

    def test_right_password(self) -> None:
        self.assertIs(self.successResultOf(self.check(self.connector(), b"alice-secret")), True)

    def test_wrong_password(self) -> None:
        self.assertIs(self.successResultOf(self.check(self.connector(), b"nope")), False)

    def test_unknown_dn(self) -> None:
        c = self.connector()
        self.assertIs(self.successResultOf(self.check(c, b"x", f"uid=ghost,{BASE}")), False)

    def test_empty_password_is_refused_without_asking(self) -> None:
        """An empty simple bind is anonymous: the server would say "success"."""
        self.assertIs(self.successResultOf(self.check(self.connector(), b"")), False)
        self.assertEqual(self.net.attempts, [])

    def test_binds_on_a_fresh_connection_and_closes_it(self) -> None:
        c = self.connector()
        self.successResultOf(self.search(c))
        self.successResultOf(self.check(c, b"alice-secret"))
        pooled, user = self.directory.servers
        self.assertEqual(pooled.binds, [PROXY_DN])  # the pool's identity is untouched
        self.assertEqual(user.binds, [ALICE_DN])  # no service bind first
        self.assertTrue(user.unbound)
        self.assertEqual(self.net.open_servers(), [pooled])

    def test_outage_is_not_a_wrong_password(self) -> None:
        del self.net.servers[389]
        self.unavailable(self.check(self.connector(), b"alice-secret"))

    def test_other_bind_errors_are_outages(self) -> None:
        self.directory.bind_answer[ALICE_DN] = 51
        self.assertIn("busy", self.unavailable(self.check(self.connector(), b"alice-secret")))

    def test_bind_timeout_is_an_outage(self) -> None:
        self.directory.bind_answer[ALICE_DN] = "never"
        d = self.check(self.connector(timeout=1.0), b"alice-secret")
        self.net.advance(1)
        self.assertIn("no answer to bind within 1s", self.unavailable(d))
        self.assertEqual(self.net.open_servers(), [])


class CloseTests(ConnectorTestCase):
    def test_close_unbinds_and_waits_for_the_connections(self) -> None:
        c = self.connector()
        self.successResultOf(self.search(c))
        d = c.close()
        self.net.run()
        self.successResultOf(d)
        self.assertTrue(self.directory.servers[0].unbound)
        self.assertEqual(self.net.reactor.getDelayedCalls(), [])
        self.assertIn("closed", self.unavailable(self.search(c)))

    def test_close_cancels_connection_attempts(self) -> None:
        self.net.hanging.add(389)
        c = self.connector()
        pending = self.search(c)
        checking = c.check_bind(ALICE_DN, b"alice-secret")
        self.net.run()
        self.successResultOf(c.close())
        self.assertIn("closed", self.unavailable(pending))
        self.assertIn("closed", self.unavailable(checking))
        self.assertEqual(self.net.reactor.getDelayedCalls(), [])

    def test_connection_that_will_not_close_is_aborted_after_the_timeout(self) -> None:
        c = self.connector(timeout=3.0)
        self.successResultOf(self.search(c))
        # neither our close nor the server's reaction to the unbind gets anywhere
        _, server, pump = self.net.pumps[0]
        self.patch(pump.clientIO, "loseConnection", lambda: None)
        self.patch(server, "handle_LDAPUnbindRequest", lambda *a: None)
        d = c.close()
        self.net.run()
        self.assertNoResult(d)
        self.net.advance(3)
        self.successResultOf(d)
        self.assertEqual(self.net.reactor.getDelayedCalls(), [])


class ConfigurationTests(SynchronousTestCase):
    def make(self, **changes: Any) -> LDAPConnector:
        return LDAPConnector(MemoryReactorClock(), config(**changes))

    def test_bind_dn_without_password_is_refused(self) -> None:
        with self.assertRaises(ValueError) as e:
            self.make(bind_password=None)
        self.assertIn("anonymous", str(e.exception))

    def test_bad_uri_names_the_connector(self) -> None:
        with self.assertRaises(ValueError) as e:
            self.make(uris=("http://x",))
        self.assertIn("LDAP connector 'dir'", str(e.exception))
        self.assertIn("ldap:// or ldaps://", str(e.exception))

    def test_no_uris(self) -> None:
        with self.assertRaises(ValueError):
            self.make(uris=())

    def test_unreadable_ca_file(self) -> None:
        with self.assertRaises(ValueError) as e:
            self.make(start_tls=True, ca_file=Path("/nonexistent/ca.pem"))
        self.assertIn("/nonexistent/ca.pem", str(e.exception))

    def test_ca_file_without_certificates(self) -> None:
        path = temp_dir(self) / "ca.pem"
        path.write_text("not a certificate\n")
        with self.assertRaises(ValueError) as e:
            self.make(uris=("ldaps://127.0.0.1",), ca_file=path)
        self.assertIn("no PEM certificate", str(e.exception))


# -- TLS: real handshakes on loopback ---------------------------------------------------------


class StartTLSServer(DirectoryServer):
    """Answers the StartTLS extended operation (ldaptor's server does not)."""

    tls_options: Any = None

    def handle_LDAPExtendedRequest(self, request: Any, controls: Any, reply: Any) -> Any:
        name = request.requestName
        if isinstance(name, str):
            name = name.encode()
        if name != pureldap.LDAPStartTLSRequest.oid or self.tls_options is None:
            return pureldap.LDAPExtendedResponse(resultCode=2, errorMessage="unsupported")
        self.queue_then_start_tls = True
        return pureldap.LDAPExtendedResponse(
            resultCode=0, responseName=pureldap.LDAPStartTLSResponse.oid
        )

    def _cbHandle(self, response: Any, id: Any) -> None:
        super()._cbHandle(response, id)
        if getattr(self, "queue_then_start_tls", False):
            self.queue_then_start_tls = False
            self.transport.startTLS(self.tls_options)


@implementer(IOpenSSLContextFactory)
@dataclass
class ServerTLS:
    """The test server's TLS context, loaded from files (Twisted's CertificateOptions
    would hand pyOpenSSL X509 objects, which it now reports as deprecated)."""

    cert_file: Path
    key_file: Path

    def getContext(self) -> SSL.Context:
        context = SSL.Context(SSL.TLS_METHOD)
        context.use_certificate_file(str(self.cert_file))
        context.use_privatekey_file(str(self.key_file))
        return context


class OneProtocolFactory(Factory):
    """Calls C{build} for each connection (C{Factory.forProtocol} would overwrite the
    server's C{factory}, which ldaptor's server adapts to the directory tree)."""

    noisy = False

    def __init__(self, build: Callable[[], Protocol]) -> None:
        self.build = build

    def buildProtocol(self, addr: Any) -> Protocol:
        return self.build()


@dataclass
class LoopbackServer:
    port: Any
    directory: Directory

    @property
    def number(self) -> int:
        return int(self.port.getHost().port)


class TLSTests(TestCase):
    """Certificate and host name checks, with real TLS on 127.0.0.1."""

    ca: TestCA
    wrong_ca: TestCA

    def setUp(self) -> None:
        base = temp_dir(self)
        self.ca = make_ca(base / "ca")
        self.wrong_ca = make_ca(base / "wrong", "wrong CA")
        self.events: list[dict[str, Any]] = []

    def serve(
        self, *, implicit: bool, ips: tuple[str, ...] = ("127.0.0.1",), start_tls: bool = True
    ) -> LoopbackServer:
        issued = self.ca.issue(f"ldap-{len(self.events)}-{implicit}", ips=ips, dns=("localhost",))
        options = ServerTLS(issued.cert_file, issued.key_file)
        directory = Directory()

        def build() -> Protocol:
            server = StartTLSServer(directory)
            directory.servers.append(server)
            server.tls_options = options if start_tls else None
            return server

        factory: Any = OneProtocolFactory(build)
        if implicit:
            factory = TLSMemoryBIOFactory(options, False, factory)
        port = global_reactor.listenTCP(0, factory, interface="127.0.0.1")  # type: ignore[attr-defined]
        self.addCleanup(port.stopListening)
        return LoopbackServer(port, directory)

    def connector(
        self, server: LoopbackServer, *, implicit: bool, ca: TestCA | None = None, **changes: Any
    ) -> LDAPConnector:
        scheme = "ldaps" if implicit else "ldap"
        c = LDAPConnector(
            global_reactor,  # type: ignore[arg-type]
            config(
                uris=(f"{scheme}://127.0.0.1:{server.number}",),
                start_tls=not implicit,
                ca_file=(ca or self.ca).cert_file,
                **changes,
            ),
        )
        c.log = Logger(observer=self.events.append, namespace="test")
        return c

    async def run_search(self, c: LDAPConnector, server: LoopbackServer) -> list[SearchEntry]:
        try:
            return await c.search(build_filter("(mail=%e)", "alice@example.com"), ["mailHost"])
        finally:
            await c.close()
            await gatherResults([s.lost for s in server.directory.servers])

    async def expect_unavailable(self, c: LDAPConnector, server: LoopbackServer) -> str:
        try:
            await self.run_search(c, server)
        except DirectoryUnavailable as e:
            return e.reason
        self.fail("the search succeeded")

    async def test_ldaps_with_the_right_ca(self) -> None:
        server = self.serve(implicit=True)
        entries = await self.run_search(self.connector(server, implicit=True), server)
        self.assertEqual(entries, [(ALICE_DN, {"mailhost": [b"127.0.1.1"]})])

    async def test_ldaps_with_the_wrong_ca(self) -> None:
        server = self.serve(implicit=True)
        c = self.connector(server, implicit=True, ca=self.wrong_ca)
        reason = await self.expect_unavailable(c, server)
        self.assertIn("TLS handshake: certificate verify failed", reason)
        self.assertEqual(server.directory.all_binds(), [])

    async def test_ldaps_certificate_for_another_address(self) -> None:
        server = self.serve(implicit=True, ips=("127.0.0.2",))
        reason = await self.expect_unavailable(self.connector(server, implicit=True), server)
        self.assertIn("not valid for this host", reason)
        self.assertEqual(server.directory.all_binds(), [])

    async def test_starttls_with_the_right_ca_binds_only_after_tls(self) -> None:
        server = self.serve(implicit=False)
        entries = await self.run_search(self.connector(server, implicit=False), server)
        self.assertEqual(len(entries), 1)
        self.assertEqual(server.directory.all_binds(), [PROXY_DN])
        self.assertEqual(server.directory.servers[0].tls_at_bind, [True])

    async def test_starttls_with_the_wrong_ca(self) -> None:
        server = self.serve(implicit=False)
        c = self.connector(server, implicit=False, ca=self.wrong_ca)
        reason = await self.expect_unavailable(c, server)
        self.assertIn("certificate verify failed", reason)
        self.assertEqual(server.directory.all_binds(), [])  # the password never left

    async def test_starttls_refused_by_the_server(self) -> None:
        server = self.serve(implicit=False, start_tls=False)
        reason = await self.expect_unavailable(self.connector(server, implicit=False), server)
        self.assertIn("the server refused StartTLS", reason)
        self.assertEqual(server.directory.all_binds(), [])

    async def test_check_bind_over_starttls(self) -> None:
        server = self.serve(implicit=False)
        c = self.connector(server, implicit=False)
        try:
            self.assertTrue(await c.check_bind(ALICE_DN, b"alice-secret"))
            self.assertFalse(await c.check_bind(ALICE_DN, b"wrong"))
        finally:
            await c.close()
            await gatherResults([s.lost for s in server.directory.servers])
        self.assertEqual([s.tls_at_bind for s in server.directory.servers], [[True], [True]])
