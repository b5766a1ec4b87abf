"""The client-facing IMAP session, driven through in-memory transports and a Clock."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone, ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import LogEvent, formatEvent, globalLogPublisher
from twisted.python.failure import Failure

from axigen_fe.config.model import MailboxServiceConfig, TLSMode
from axigen_fe.imap.backend import BackendLogin, MasterUser
from axigen_fe.imap.server import IMAPProxyFactory, State
from axigen_fe.net.listener import ListenerContext
from axigen_fe.ops.sessionlog import SessionIds
from axigen_fe.usermap.memory import MemoryUserMap

PASSWORD = "alice-secret"
POST_CAPS = b"IMAP4rev1 SASL-IR ID ENABLE IDLE SORT MOVE"
LOOPBACK = IPv4Address("TCP", "127.0.0.1", 40000)
REMOTE = IPv4Address("TCP", "192.0.2.10", 40000)
SERVER_TLS = object()  # stands for the listener's CertificateOptions


class TLSTransport(StringTransport):
    def __init__(self, peer: IPv4Address) -> None:
        super().__init__(hostAddress=IPv4Address("TCP", "127.0.0.1", 143), peerAddress=peer)
        self.tls_started: Any = None
        self.written_before_tls = b""

    def startTLS(self, options: Any) -> None:
        self.tls_started = options
        self.written_before_tls = self.value()


class FakeConnector:
    """Records connection attempts; the test decides how each one ends."""

    tls_mode = TLSMode.NONE

    def __init__(self) -> None:
        self.attempts: list[tuple[str, int, BackendLogin, Deferred[BackendLogin]]] = []

    def tls_options(self, host: str) -> str:
        return f"options-for-{host}"

    def connect(self, host: str, port: int, protocol: BackendLogin) -> Deferred[BackendLogin]:
        d: Deferred[BackendLogin] = Deferred()
        self.attempts.append((host, port, protocol, d))
        return d


class Session:
    """One client session plus the knobs a test turns."""

    def __init__(
        self,
        peer: IPv4Address = LOOPBACK,
        tls: TLSMode = TLSMode.NONE,
        master: MasterUser | None = None,
        **config: Any,
    ) -> None:
        self.clock = Clock()
        self.usermap = MemoryUserMap(
            {
                "alice@example.com": ("10.0.0.1", "{PLAIN}" + PASSWORD),
                "bob@example.com": ("10.0.0.2:1143", "{PLAIN}bob-secret"),
            }
        )
        self.config = replace(
            MailboxServiceConfig(
                kind="imap", usermap="m", backend_port=143, greeting="test proxy ready"
            ),
            **config,
        )
        server_tls: Any = SERVER_TLS if tls is not TLSMode.NONE else None
        self.listener = ListenerContext("tcp:143", tls, server_tls, False, True)
        self.connector = FakeConnector()
        connector: Any = self.connector
        self.factory = IMAPProxyFactory(
            self.clock,
            self.config,
            self.listener,
            self.usermap,
            connector,
            SessionIds("fe1", "imap"),
            master,
        )
        self.proto = self.factory.buildProtocol(peer)
        self.transport = TLSTransport(peer)
        self.proto.makeConnection(self.transport)
        self.backend_transport: StringTransport | None = None

    def send(self, data: bytes) -> bytes:
        self.transport.clear()
        self.proto.dataReceived(data)
        return self.transport.value()

    def settle(self) -> bytes:
        """Let the failure delay pass; return what the client got meanwhile."""
        self.clock.advance(self.factory.auth_failure_delay)
        return self.transport.value()

    def backend(self, index: int = -1) -> BackendLogin:
        return self.connector.attempts[index][2]

    def connect_backend(
        self, greeting: bytes = b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN SASL-IR] Dovecot ready.\r\n"
    ) -> StringTransport:
        host, port, proto, d = self.connector.attempts[-1]
        t = StringTransport()
        proto.makeConnection(t)
        d.callback(proto)
        proto.dataReceived(greeting)
        self.backend_transport = t
        return t

    def login_ok(
        self,
        tag: bytes = b"a1",
        user: bytes = b"alice@example.com",
        password: bytes = PASSWORD.encode(),
    ) -> bytes:
        self.send(tag + b" LOGIN " + user + b" " + password + b"\r\n")
        bt = self.connect_backend()
        assert b"LOGIN" in bt.value()
        self.transport.clear()
        self.backend().dataReceived(b"X3 OK [CAPABILITY " + POST_CAPS + b"] Logged in\r\n")
        return self.transport.value()


@pytest.fixture
def logs() -> Iterator[list[str]]:
    lines: list[str] = []

    def observe(event: LogEvent) -> None:
        lines.append(formatEvent(event))

    globalLogPublisher.addObserver(observe)
    try:
        yield lines
    finally:
        globalLogPublisher.removeObserver(observe)


# ------------------------------------------------------------ capabilities


def test_greeting_and_capability_on_loopback_plaintext() -> None:
    s = Session(peer=LOOPBACK)
    assert s.transport.value() == (
        b"* OK [CAPABILITY IMAP4rev1 SASL-IR LITERAL+ ID AUTH=PLAIN AUTH=LOGIN] "
        b"test proxy ready\r\n"
    )
    assert s.send(b"a CAPABILITY\r\n") == (
        b"* CAPABILITY IMAP4rev1 SASL-IR LITERAL+ ID AUTH=PLAIN AUTH=LOGIN\r\n"
        b"a OK Capability completed.\r\n"
    )


def test_capability_is_honest_before_and_after_starttls() -> None:
    s = Session(peer=REMOTE, tls=TLSMode.STARTTLS)
    caps = s.send(b"a CAPABILITY\r\n")
    assert b"STARTTLS" in caps and b"LOGINDISABLED" in caps and b"AUTH=" not in caps
    s.send(b"b STARTTLS\r\n")
    assert s.transport.tls_started is SERVER_TLS
    caps = s.send(b"c CAPABILITY\r\n")
    assert (
        b"STARTTLS" not in caps
        and b"LOGINDISABLED" not in caps
        and b"AUTH=PLAIN AUTH=LOGIN" in caps
    )


def test_implicit_tls_listener_allows_login_and_offers_no_starttls() -> None:
    s = Session(peer=REMOTE, tls=TLSMode.IMPLICIT)
    caps = s.send(b"a CAPABILITY\r\n")
    assert b"STARTTLS" not in caps and b"AUTH=PLAIN" in caps
    assert b"BAD" in s.send(b"b STARTTLS\r\n")


def test_plaintext_login_refused_without_tls() -> None:
    s = Session(peer=REMOTE, tls=TLSMode.STARTTLS)
    assert s.send(b"a LOGIN alice@example.com x\r\n").startswith(b"a NO [PRIVACYREQUIRED]")
    assert s.send(b"b AUTHENTICATE PLAIN\r\n").startswith(b"b NO [PRIVACYREQUIRED]")
    assert s.usermap.lookups == []


def test_no_starttls_on_a_plain_listener() -> None:
    s = Session(peer=REMOTE, tls=TLSMode.NONE)
    caps = s.send(b"a CAPABILITY\r\n")
    assert b"STARTTLS" not in caps and b"LOGINDISABLED" in caps
    assert s.send(b"b STARTTLS\r\n") == b"b BAD STARTTLS is not offered on this port.\r\n"


# --------------------------------------------------------------- STARTTLS


def test_starttls_discards_pipelined_commands(logs: list[str]) -> None:
    s = Session(peer=REMOTE, tls=TLSMode.STARTTLS)
    s.send(b"a STARTTLS\r\nb LOGIN alice@example.com alice-secret\r\n")
    assert s.transport.written_before_tls == b"a OK Begin TLS negotiation now.\r\n"
    s.clock.advance(1)
    assert s.transport.value() == b"a OK Begin TLS negotiation now.\r\n"  # nothing answered "b"
    assert s.usermap.lookups == []
    assert any("discarded 40 bytes pipelined after STARTTLS" in line for line in logs)
    assert b"STARTTLS" not in s.send(b"c CAPABILITY\r\n")


def test_starttls_twice() -> None:
    s = Session(peer=REMOTE, tls=TLSMode.STARTTLS)
    s.send(b"a STARTTLS\r\n")
    assert s.send(b"b STARTTLS\r\n") == b"b BAD TLS is already active.\r\n"


# ------------------------------------------------------------ simple commands


def test_noop_logout_id() -> None:
    s = Session()
    assert s.send(b"a NOOP\r\n") == b"a OK NOOP completed.\r\n"
    assert (
        s.send(b'b ID ("name" "test")\r\n')
        == b'* ID ("name" "axigen-fe")\r\nb OK ID completed.\r\n'
    )
    assert s.send(b"c ID NIL\r\n").endswith(b"c OK ID completed.\r\n")
    assert s.send(b"d ID foo\r\n").startswith(b"d BAD")
    assert s.send(b"e LOGOUT\r\n") == b"* BYE Logging out\r\ne OK Logout completed.\r\n"
    assert s.transport.disconnecting


def test_commands_of_later_states_and_unknown_ones_are_bad() -> None:
    s = Session()
    assert s.send(b"a SELECT INBOX\r\n") == b"a BAD SELECT is not allowed before login.\r\n"
    assert s.send(b"b FROB\r\n") == b"b BAD Unknown command.\r\n"
    assert s.send(b"c NOOP extra\r\n") == b"c BAD NOOP takes no arguments.\r\n"
    assert s.proto.errors == 3


def test_max_errors_closes_with_bye() -> None:
    s = Session(max_errors=3)
    s.send(b"a X\r\nb Y\r\n")
    assert not s.transport.disconnecting
    out = s.send(b"c Z\r\nd NOOP\r\n")
    assert out == b"c BAD Unknown command.\r\n* BYE Too many invalid IMAP commands.\r\n"
    assert s.transport.disconnecting


def test_untagged_bad_for_garbage_and_bye_for_huge_lines() -> None:
    s = Session()
    assert s.send(b"(((\r\n") == b"* BAD Missing or invalid tag.\r\n"
    out = s.send(b"a NOOP " + b"x" * 9000)
    assert out == b"* BYE Line too long.\r\n"
    assert s.transport.disconnecting


def test_preauth_timeout() -> None:
    s = Session(preauth_timeout=60)
    s.clock.advance(59)
    assert not s.transport.disconnecting
    s.transport.clear()
    s.clock.advance(1)
    assert s.transport.value() == b"* BYE Autologout; idle for too long\r\n"
    assert s.transport.disconnecting


def test_literal_continuation_is_offered() -> None:
    s = Session()
    assert s.send(b"a LOGIN {17}\r\n") == b"+ Ready for literal data\r\n"
    assert s.send(b"alice@example.com {12+}\r\nalice-secret\r\n") == b""
    assert s.usermap.lookups == [("alice@example.com", b"alice-secret")]


# ------------------------------------------------------------------ login


def test_login_routes_and_relays(logs: list[str]) -> None:
    s = Session(forward_client_address=True)
    out = s.login_ok()
    assert out == b"a1 OK [CAPABILITY " + POST_CAPS + b"] Logged in\r\n"
    host, port, backend, _ = s.connector.attempts[0]
    assert (host, port) == ("10.0.0.1", 143)
    assert s.proto.state is State.RELAYING
    # relay both ways, with flow control registered on both transports
    bt = s.backend_transport
    assert bt is not None
    bt.clear()
    s.proto.dataReceived(b"a2 SELECT INBOX\r\n")
    assert bt.value() == b"a2 SELECT INBOX\r\n"
    s.transport.clear()
    backend.dataReceived(b"* 1 EXISTS\r\na2 OK done\r\n")
    assert s.transport.value() == b"* 1 EXISTS\r\na2 OK done\r\n"
    assert s.transport.producer is bt and bt.producer is s.transport
    assert any(
        "login ok: user alice@example.com from 127.0.0.1:40000 routed to 10.0.0.1:143" in line
        for line in logs
    )
    # the back-end closing closes the client
    backend.connectionLost(Failure(ConnectionDone()))
    assert s.transport.disconnecting
    s.proto.connectionLost(Failure(ConnectionDone()))
    assert any(
        "disconnect: user alice@example.com, 17 bytes from client" in line
        and "closed by back-end" in line
        for line in logs
    )


def test_map_port_overrides_backend_port_and_id_is_sent() -> None:
    s = Session(forward_client_address=True)
    s.send(b"a LOGIN bob@example.com bob-secret\r\n")
    host, port, _, _ = s.connector.attempts[0]
    assert (host, port) == ("10.0.0.2", 1143)
    bt = s.connect_backend()
    assert b'"x-originating-ip" "127.0.0.1" "x-originating-port" "40000"' in bt.value()


def test_commands_pipelined_after_login_reach_the_backend() -> None:
    s = Session()
    s.send(b"a1 LOGIN alice@example.com alice-secret\r\na2 SELECT INBOX\r\na3 FETCH 1 BODY[]\r\n")
    bt = s.connect_backend()
    bt.clear()
    s.backend().dataReceived(b"X3 OK [CAPABILITY IMAP4rev1] Logged in\r\n")
    assert bt.value() == b"a2 SELECT INBOX\r\na3 FETCH 1 BODY[]\r\n"


def test_unknown_user_and_wrong_password_look_the_same(logs: list[str]) -> None:
    answers = []
    for user, password in ((b"nobody@example.com", b"x"), (b"alice@example.com", b"wrong")):
        s = Session()
        s.send(b"a LOGIN " + user + b" " + password + b"\r\n")
        assert s.transport.value() == b""  # not before the fixed delay
        answers.append(s.settle())
    assert answers[0] == answers[1] == b"a NO [AUTHENTICATIONFAILED] Authentication failed.\r\n"
    text = "\n".join(logs)
    assert "user nobody@example.com from 127.0.0.1:40000: unknown user" in text
    assert "user alice@example.com from 127.0.0.1:40000: wrong password" in text
    assert "wrong\n" not in text and "'wrong'" not in text


def test_max_auth_errors() -> None:
    s = Session(max_auth_errors=2)
    s.send(b"a LOGIN alice@example.com wrong\r\n")
    assert s.settle() == b"a NO [AUTHENTICATIONFAILED] Authentication failed.\r\n"
    s.send(b"b LOGIN alice@example.com wrong\r\n")
    assert s.settle() == (
        b"b NO [AUTHENTICATIONFAILED] Authentication failed.\r\n"
        b"* BYE Too many authentication failures\r\n"
    )
    assert s.transport.disconnecting


def test_directory_outage_is_unavailable_and_not_counted(logs: list[str]) -> None:
    s = Session(max_auth_errors=1)
    s.usermap.outage = "ldap://ldap1 timed out"
    out = s.send(b"a LOGIN alice@example.com alice-secret\r\n")
    assert out == b"a NO [UNAVAILABLE] Directory temporarily unavailable; try again later.\r\n"
    assert s.proto.auth_errors == 0 and s.proto.state is State.NOT_AUTHENTICATED
    assert any("from 127.0.0.1:40000: tempfail (ldap://ldap1 timed out)" in line for line in logs)
    s.usermap.outage = None
    s.send(b"b LOGIN alice@example.com alice-secret\r\n")
    assert len(s.connector.attempts) == 1  # recovered


def test_backend_unreachable_is_unavailable(logs: list[str]) -> None:
    s = Session()
    s.send(b"a LOGIN alice@example.com alice-secret\r\n")
    s.transport.clear()
    s.connector.attempts[0][3].errback(Failure(ConnectionRefusedError("10.0.0.1:143")))
    assert (
        s.transport.value()
        == b"a NO [UNAVAILABLE] Back-end server unavailable; try again later.\r\n"
    )
    assert any("back-end 10.0.0.1:143 unreachable" in line for line in logs)
    assert s.send(b"b NOOP\r\n") == b"b OK NOOP completed.\r\n"


def test_backend_tls_failure_is_unavailable() -> None:
    s = Session()
    s.send(b"a LOGIN alice@example.com alice-secret\r\n")
    host, port, proto, d = s.connector.attempts[0]
    proto.makeConnection(StringTransport())
    d.callback(proto)
    s.transport.clear()
    proto.connectionLost(Failure(ConnectionDone("TLS handshake failed")))
    assert s.transport.value().startswith(b"a NO [UNAVAILABLE]")


def test_backend_refusing_the_replay_is_an_authentication_failure(logs: list[str]) -> None:
    s = Session(authenticate_on_proxy=False)
    s.send(b"a LOGIN alice@example.com whatever\r\n")
    assert s.usermap.lookups == [("alice@example.com", None)]  # the node did not check
    s.connect_backend()
    s.transport.clear()
    s.backend().dataReceived(b"X3 NO [AUTHENTICATIONFAILED] Authentication failed.\r\n")
    assert s.settle() == b"a NO [AUTHENTICATIONFAILED] Authentication failed.\r\n"
    assert any("refused the login" in line for line in logs)


def test_master_user_mode_checks_passwords_on_the_node() -> None:
    s = Session(authenticate_on_proxy=False, master=MasterUser("fe-master", b"m-secret"))
    s.send(b"a LOGIN alice@example.com alice-secret\r\n")
    assert s.usermap.lookups == [("alice@example.com", b"alice-secret")]
    bt = s.connect_backend()
    assert bt.value().endswith(b'X3 LOGIN "alice@example.com*fe-master" "m-secret"\r\n')


def test_master_user_mode_refuses_a_user_the_map_stores_no_password_for() -> None:
    """The master login would let any password in: a route-only answer is not enough."""
    s = Session(master=MasterUser("fe-master", b"m-secret"))
    s.usermap.users["carol@example.com"] = ("10.0.0.3", None)
    s.send(b"a LOGIN carol@example.com anything\r\n")
    assert s.connector.attempts == []
    assert s.settle() == b"a NO [AUTHENTICATIONFAILED] Authentication failed.\r\n"


def test_client_leaving_during_lookup_and_backend_login() -> None:
    s = Session()
    s.usermap.pending = []
    s.send(b"a LOGIN alice@example.com alice-secret\r\n")
    s.proto.connectionLost(Failure(ConnectionDone()))
    s.usermap.pending[0].callback(None)
    assert s.connector.attempts == []

    s = Session()
    s.send(b"a LOGIN alice@example.com alice-secret\r\n")
    bt = s.connect_backend()
    s.proto.connectionLost(Failure(ConnectionDone()))
    assert bt.disconnected  # aborted, not left half-open on the back-end
    s.backend().dataReceived(b"X3 OK [CAPABILITY IMAP4rev1] Logged in\r\n")
    assert s.proto.state is State.CLOSED
    assert not s.clock.getDelayedCalls()


def test_client_leaving_while_connecting_cancels_the_attempt() -> None:
    s = Session()
    s.send(b"a LOGIN alice@example.com alice-secret\r\n")
    d = s.connector.attempts[0][3]
    s.proto.connectionLost(Failure(ConnectionDone()))
    assert d.called  # cancelled


def test_too_much_pipelined_data_pauses_the_client() -> None:
    s = Session()
    s.usermap.pending = []
    s.usermap.outage = "down"
    s.send(b"a LOGIN alice@example.com alice-secret\r\n" + b"x" * 70000)
    assert s.transport.producerState == "paused"
    s.usermap.pending[0].callback(None)
    assert s.transport.producerState == "producing"  # reading again once the login ended


def test_preauth_timeout_during_login_waits_for_the_answer() -> None:
    s = Session(preauth_timeout=5)
    s.usermap.pending = []
    s.usermap.outage = "down"
    s.send(b"a LOGIN alice@example.com alice-secret\r\n")
    s.clock.advance(6)
    assert not s.transport.disconnecting
    s.usermap.pending[0].callback(None)
    out = s.transport.value()
    assert out.startswith(b"a NO [UNAVAILABLE]") and out.endswith(
        b"* BYE Autologout; idle for too long\r\n"
    )


def test_idle_timeout_after_login(logs: list[str]) -> None:
    s = Session(idle_timeout=1800)
    s.login_ok()

    def run(seconds: int) -> None:
        s.clock.pump([5] * (seconds // 5))

    # traffic either way keeps the session alive well past the timeout
    for _ in range(5):
        run(1000)
        s.proto.dataReceived(b"a NOOP\r\n")
        run(1000)
        s.backend().dataReceived(b"* OK Still here\r\n")
    assert not s.transport.disconnecting
    run(1795)
    assert not s.transport.disconnecting
    run(1800 // 8 + 5)  # checked every timeout/8: closed within that much after the timeout
    assert s.transport.disconnecting
    assert any("idle timeout: no traffic for 1800s" in line for line in logs)


def test_non_utf8_user_name_fails_like_a_wrong_password() -> None:
    s = Session()
    s.send(b'a LOGIN "\xff\xfe" pw\r\n')
    assert s.settle() == b"a NO [AUTHENTICATIONFAILED] Authentication failed.\r\n"


# ---------------------------------------------------------- AUTHENTICATE


def b64(data: bytes) -> bytes:
    return base64.b64encode(data)


def test_authenticate_plain_with_initial_response() -> None:
    s = Session()
    s.send(b"a AUTHENTICATE PLAIN " + b64(b"\0alice@example.com\0alice-secret") + b"\r\n")
    assert s.usermap.lookups == [("alice@example.com", b"alice-secret")]
    assert len(s.connector.attempts) == 1


def test_authenticate_plain_without_initial_response() -> None:
    s = Session()
    assert s.send(b"a AUTHENTICATE PLAIN\r\n") == b"+ \r\n"
    s.send(b64(b"alice@example.com\0alice@example.com\0alice-secret") + b"\r\n")
    assert s.usermap.lookups == [("alice@example.com", b"alice-secret")]


def test_authenticate_plain_empty_initial_response_asks_for_it() -> None:
    s = Session()
    s.send(b"a AUTHENTICATE PLAIN =\r\n")
    assert s.settle() == b"a BAD Invalid PLAIN response.\r\n"


def test_authenticate_login_mechanism() -> None:
    s = Session()
    assert s.send(b"a AUTHENTICATE LOGIN\r\n") == b"+ VXNlcm5hbWU6\r\n"
    assert s.send(b64(b"alice@example.com") + b"\r\n") == b"+ UGFzc3dvcmQ6\r\n"
    s.send(b64(b"alice-secret") + b"\r\n")
    assert s.usermap.lookups == [("alice@example.com", b"alice-secret")]


def test_authenticate_cancel_and_bad_base64() -> None:
    s = Session()
    s.send(b"a AUTHENTICATE PLAIN\r\n")
    assert s.send(b"*\r\n") == b"a BAD Authentication canceled.\r\n"
    s.send(b"b AUTHENTICATE PLAIN\r\n")
    assert s.send(b"!!!\r\n") == b"b BAD Invalid base64 data.\r\n"
    assert s.send(b"c NOOP\r\n") == b"c OK NOOP completed.\r\n"


def test_authenticate_unknown_mechanism_and_other_authzid() -> None:
    s = Session()
    assert (
        s.send(b"a AUTHENTICATE CRAM-MD5\r\n") == b"a NO Unsupported authentication mechanism.\r\n"
    )
    s.send(
        b"b AUTHENTICATE PLAIN "
        + b64(b"bob@example.com\0alice@example.com\0alice-secret")
        + b"\r\n"
    )
    assert (
        s.settle()
        == b"b NO [AUTHORIZATIONFAILED] Authorization as another user is not supported.\r\n"
    )
    assert s.usermap.lookups == []


def test_no_password_in_any_log_line(logs: list[str]) -> None:
    s = Session()
    s.send(b"a LOGIN alice@example.com wrong-pass-123\r\n")
    s.settle()
    s.send(b"b AUTHENTICATE PLAIN " + b64(b"\0alice@example.com\0other-pass-456") + b"\r\n")
    s.settle()
    s.login_ok(b"c")
    s.proto.connectionLost(Failure(ConnectionDone()))
    text = "\n".join(logs)
    for secret in ("wrong-pass-123", "other-pass-456", PASSWORD):
        assert secret not in text
    assert "IMAP:" in text
