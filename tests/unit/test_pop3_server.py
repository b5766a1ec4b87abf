"""The client-facing POP3 state machine, with an in-memory map and scripted back-ends."""

from __future__ import annotations

import base64
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone, ConnectionRefusedError
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure

from axigen_fe.config.model import MailboxServiceConfig, TLSMode
from axigen_fe.net.listener import ListenerContext
from axigen_fe.ops.sessionlog import SessionIds
from axigen_fe.pop3.backend import CapabilityCache, Pop3BackendProtocol
from axigen_fe.pop3.server import Pop3ProxyFactory, Pop3ProxyServer, State
from axigen_fe.usermap.memory import MemoryUserMap

LOOPBACK = IPv4Address("TCP", "127.0.0.1", 40000)
REMOTE = IPv4Address("TCP", "192.0.2.10", 50000)
BACKEND_CAPA = b"+OK\r\nUSER\r\nPIPELINING\r\nSASL PLAIN LOGIN\r\n.\r\n"


def b64(data: bytes) -> bytes:
    return base64.b64encode(data)


class FakeTransport(StringTransport):
    """A StringTransport that records startTLS and whether reading is paused."""

    def __init__(self, peer: IPv4Address) -> None:
        super().__init__(peerAddress=peer)
        self.tls: Any = None
        self.pre_tls = b""

    def startTLS(self, options: Any) -> None:
        self.tls = options
        self.pre_tls = self.value()


class FakeConnector:
    """Hands each back-end protocol to the test, which connects or refuses it."""

    def __init__(self, tls_mode: TLSMode = TLSMode.NONE) -> None:
        self.tls_mode = tls_mode
        self.attempts: list[tuple[str, int, Pop3BackendProtocol, Deferred[Any]]] = []
        self.cancelled: list[tuple[str, int]] = []

    def connect(self, host: str, port: int, protocol: Any) -> Deferred[Any]:
        d: Deferred[Any] = Deferred(lambda _: self.cancelled.append((host, port)))
        self.attempts.append((host, port, protocol, d))
        return d

    def tls_options(self, host: str) -> Any:
        return f"options-for-{host}"


class Backend:
    """The far side of one accepted back-end connection."""

    def __init__(self, proto: Pop3BackendProtocol, d: Deferred[Any]) -> None:
        self.proto = proto
        self.transport = FakeTransport(IPv4Address("TCP", "10.0.0.1", 110))
        proto.makeConnection(self.transport)
        d.callback(proto)

    def feed(self, data: bytes) -> None:
        self.proto.dataReceived(data)

    def sent(self) -> bytes:
        value = self.transport.value()
        self.transport.clear()
        return value


class Session:
    def __init__(
        self,
        *,
        peer: IPv4Address = LOOPBACK,
        listener_tls: TLSMode = TLSMode.NONE,
        server_tls: Any = None,
        allow_plaintext: bool = False,
        loopback_plaintext: bool = True,
        authenticate_on_proxy: bool = True,
        master: tuple[str, str] | None = None,
        max_errors: int = 10,
        max_auth_errors: int = 3,
        connector: FakeConnector | None = None,
        usermap: MemoryUserMap | None = None,
    ) -> None:
        self.clock = MemoryReactorClock()
        self.usermap = usermap or MemoryUserMap(
            {
                "alice@example.com": ("10.0.0.1", "{PLAIN}alice-secret"),
                "bob@example.com": ("10.0.0.2:1110", "{PLAIN}bob secret ü"),
            }
        )
        self.connector = connector or FakeConnector()
        config = MailboxServiceConfig(
            kind="pop3",
            usermap="main",
            backend_port=110,
            authenticate_on_proxy=authenticate_on_proxy,
            backend_master_user=master[0] if master else None,
            backend_master_password=master[1] if master else None,
            greeting="POP3 proxy ready",
            max_errors=max_errors,
            max_auth_errors=max_auth_errors,
            preauth_timeout=60,
            idle_timeout=600,
        )
        listener = ListenerContext(
            "tcp:110", listener_tls, server_tls, allow_plaintext, loopback_plaintext
        )
        self.factory = Pop3ProxyFactory(
            self.clock,
            config,
            listener,
            self.usermap,
            self.connector,
            CapabilityCache(self.clock),
            SessionIds("fe1", "pop3"),
        )
        self.proto: Pop3ProxyServer = self.factory.buildProtocol(peer)
        self.transport = FakeTransport(peer)
        self.proto.makeConnection(self.transport)

    def send(self, data: bytes) -> None:
        self.proto.dataReceived(data)

    def lines(self) -> list[bytes]:
        value = self.transport.value()
        self.transport.clear()
        return value.split(b"\r\n")[:-1]

    def backend(self, index: int = -1) -> Backend:
        _, _, proto, d = self.connector.attempts[index]
        return Backend(proto, d)

    def log_in_backend(self, backend: Backend, answer: bytes = b"+OK Logged in.") -> None:
        backend.feed(b"+OK [XCLIENT] Dovecot ready.\r\n")
        backend.feed(BACKEND_CAPA)
        backend.feed(b"+OK Updated\r\n" + answer + b"\r\n")

    def disconnect(self) -> None:
        self.proto.connectionLost(Failure(ConnectionDone()))


# ---------------------------------------------------------------------- greeting and CAPA


def test_greeting() -> None:
    s = Session()
    assert s.lines() == [b"+OK POP3 proxy ready"]


def test_capa_on_a_plaintext_loopback_connection_offers_logins() -> None:
    s = Session()
    s.lines()
    s.send(b"CAPA\r\n")
    assert s.lines() == [
        b"+OK Capability list follows",
        b"USER",
        b"SASL PLAIN LOGIN",
        b"RESP-CODES",
        b"AUTH-RESP-CODE",
        b"PIPELINING",
        b"IMPLEMENTATION axigen-fe",
        b".",
    ]


def test_capa_is_honest_before_tls_on_a_remote_connection() -> None:
    s = Session(peer=REMOTE, listener_tls=TLSMode.STARTTLS, server_tls="server-ctx")
    s.lines()
    s.send(b"CAPA\r\n")
    capa = s.lines()
    assert b"USER" not in capa and b"SASL PLAIN LOGIN" not in capa
    assert b"STLS" in capa
    s.send(b"STLS\r\n")
    assert s.lines() == [b"+OK Begin TLS negotiation now."]
    assert s.transport.tls == "server-ctx"
    s.send(b"CAPA\r\n")
    capa = s.lines()
    assert b"USER" in capa and b"SASL PLAIN LOGIN" in capa and b"STLS" not in capa


def test_no_stls_where_the_listener_has_no_tls() -> None:
    s = Session()
    s.lines()
    s.send(b"CAPA\r\n")
    assert b"STLS" not in s.lines()
    s.send(b"STLS\r\n")
    assert s.lines()[0].startswith(b"-ERR")
    assert s.transport.tls is None


def test_implicit_tls_listener_offers_logins_and_no_stls() -> None:
    s = Session(peer=REMOTE, listener_tls=TLSMode.IMPLICIT, server_tls="ctx")
    s.lines()
    s.send(b"CAPA\r\n")
    capa = s.lines()
    assert b"USER" in capa and b"STLS" not in capa
    s.send(b"STLS\r\n")
    assert s.lines() == [b"-ERR TLS is already active."]


def test_user_before_tls_is_refused_on_a_remote_connection() -> None:
    s = Session(peer=REMOTE, listener_tls=TLSMode.STARTTLS, server_tls="ctx")
    s.lines()
    s.send(
        b"USER alice@example.com\r\nAUTH PLAIN "
        + b64(b"\0alice@example.com\0alice-secret")
        + b"\r\n"
    )
    assert [line[:11] for line in s.lines()] == [b"-ERR [AUTH]", b"-ERR [AUTH]"]
    assert s.usermap.lookups == []


def test_allow_plaintext_without_tls() -> None:
    s = Session(peer=REMOTE, listener_tls=TLSMode.STARTTLS, server_tls="ctx", allow_plaintext=True)
    s.lines()
    s.send(b"USER alice@example.com\r\n")
    assert s.lines() == [b"+OK"]


# ---------------------------------------------------------------------- STLS injection


def test_commands_pipelined_behind_stls_are_discarded() -> None:
    s = Session(peer=REMOTE, listener_tls=TLSMode.STARTTLS, server_tls="ctx")
    s.lines()
    s.send(b"STLS\r\nUSER alice@example.com\r\nPASS alice-secret\r\n")
    assert s.lines() == [b"+OK Begin TLS negotiation now."]
    assert s.transport.tls == "ctx"
    assert s.usermap.lookups == []
    # the session goes on normally over TLS
    s.send(b"PASS alice-secret\r\n")
    assert s.lines() == [b"-ERR No user name given (USER first)."]


def test_stls_forgets_a_user_given_before() -> None:
    s = Session(listener_tls=TLSMode.STARTTLS, server_tls="ctx")
    s.lines()
    s.send(b"USER alice@example.com\r\n")
    s.send(b"STLS\r\n")
    s.lines()
    s.send(b"PASS alice-secret\r\n")
    assert s.lines() == [b"-ERR No user name given (USER first)."]


# ---------------------------------------------------------------------- logging in


def test_user_pass_routes_and_relays_the_backend_answer() -> None:
    s = Session()
    s.lines()
    s.send(b"USER alice@example.com\r\n")
    assert s.lines() == [b"+OK"]
    s.send(b"PASS alice-secret\r\n")
    assert s.proto.state is State.BUSY
    host, port, _, _ = s.connector.attempts[0]
    assert (host, port) == ("10.0.0.1", 110)
    backend = s.backend()
    backend.feed(b"+OK [XCLIENT] Dovecot ready.\r\n")
    assert backend.sent() == b"CAPA\r\n"
    backend.feed(BACKEND_CAPA)
    assert backend.sent() == (
        b"XCLIENT ADDR=127.0.0.1 PORT=40000\r\nAUTH PLAIN "
        + b64(b"\0alice@example.com\0alice-secret")
        + b"\r\n"
    )
    backend.feed(b"+OK Updated\r\n+OK Logged in.\r\n")
    assert s.lines() == [b"+OK Logged in."]
    assert s.proto.state is State.RELAY
    # relay both ways
    s.send(b"STAT\r\n")
    assert backend.sent() == b"STAT\r\n"
    backend.feed(b"+OK 1 355\r\n")
    assert s.lines() == [b"+OK 1 355"]
    assert s.usermap.lookups == [("alice@example.com", b"alice-secret")]


def test_mapped_port_wins_over_backend_port() -> None:
    s = Session()
    s.send(b"USER bob@example.com\r\nPASS bob secret \xc3\xbc\r\n")
    host, port, _, _ = s.connector.attempts[0]
    assert (host, port) == ("10.0.0.2", 1110)


def test_auth_plain_with_initial_response() -> None:
    s = Session()
    s.lines()
    s.send(b"AUTH PLAIN " + b64(b"\0alice@example.com\0alice-secret") + b"\r\n")
    s.log_in_backend(s.backend())
    assert s.lines() == [b"+OK Logged in."]


def test_auth_plain_with_continuation_and_authzid_equal_to_authcid() -> None:
    s = Session()
    s.lines()
    s.send(b"AUTH PLAIN\r\n")
    assert s.lines() == [b"+ "]
    s.send(b64(b"alice@example.com\0alice@example.com\0alice-secret") + b"\r\n")
    assert s.usermap.lookups == [("alice@example.com", b"alice-secret")]


def test_auth_plain_for_someone_else_is_refused() -> None:
    s = Session()
    s.lines()
    s.send(b"AUTH PLAIN " + b64(b"bob@example.com\0alice@example.com\0alice-secret") + b"\r\n")
    s.clock.advance(1)
    assert s.lines() == [b"-ERR [AUTH] Authentication failed."]
    assert s.connector.attempts == []


def test_auth_login_with_and_without_initial_response() -> None:
    s = Session()
    s.lines()
    s.send(b"AUTH LOGIN\r\n")
    assert s.lines() == [b"+ VXNlcm5hbWU6"]
    s.send(b64(b"alice@example.com") + b"\r\n")
    assert s.lines() == [b"+ UGFzc3dvcmQ6"]
    s.send(b64(b"alice-secret") + b"\r\n")
    assert s.usermap.lookups == [("alice@example.com", b"alice-secret")]

    t = Session()
    t.lines()
    t.send(b"AUTH LOGIN " + b64(b"alice@example.com") + b"\r\n")
    assert t.lines() == [b"+ UGFzc3dvcmQ6"]


def test_sasl_cancel() -> None:
    s = Session()
    s.lines()
    s.send(b"AUTH PLAIN\r\n*\r\n")
    assert s.lines() == [b"+ ", b"-ERR Authentication cancelled."]
    s.send(b"AUTH LOGIN\r\n*\r\n")
    assert s.lines() == [b"+ VXNlcm5hbWU6", b"-ERR Authentication cancelled."]
    s.send(b"AUTH LOGIN\r\n" + b64(b"alice@example.com") + b"\r\n*\r\n")
    assert s.lines()[-1] == b"-ERR Authentication cancelled."
    assert s.proto.state is State.PREAUTH
    assert s.usermap.lookups == []


def test_bad_base64_and_unknown_mechanism() -> None:
    s = Session()
    s.lines()
    s.send(b"AUTH PLAIN !!!\r\nAUTH CRAM-MD5\r\n")
    assert s.lines() == [
        b"-ERR Invalid base64 data.",
        b"-ERR Unsupported authentication mechanism.",
    ]


def test_bare_auth_lists_mechanisms() -> None:
    s = Session()
    s.lines()
    s.send(b"AUTH\r\n")
    assert s.lines() == [b"+OK", b"PLAIN", b"LOGIN", b"."]


def test_unknown_user_and_wrong_password_get_the_same_answer_after_the_same_delay() -> None:
    answers = []
    for user, password in ((b"nobody@example.com", b"x"), (b"alice@example.com", b"wrong")):
        s = Session()
        s.lines()
        s.send(b"USER " + user + b"\r\nPASS " + password + b"\r\n")
        assert s.lines() == [b"+OK"]
        s.clock.advance(0.49)
        assert s.lines() == []
        s.clock.advance(0.01)
        answers.append(s.lines())
    assert answers[0] == answers[1] == [[b"-ERR [AUTH] Authentication failed."]][0]


def test_directory_outage_is_sys_temp_and_not_an_auth_failure() -> None:
    s = Session(max_auth_errors=1)
    s.usermap.outage = "ldap down"
    s.lines()
    s.send(b"USER alice@example.com\r\nPASS alice-secret\r\n")
    assert s.lines() == [b"+OK", b"-ERR [SYS/TEMP] Temporary failure, please try again later."]
    assert not s.transport.disconnecting
    s.usermap.outage = None
    s.send(b"USER alice@example.com\r\nPASS alice-secret\r\n")
    assert len(s.connector.attempts) == 1


def test_backend_unreachable_is_sys_temp() -> None:
    s = Session()
    s.lines()
    s.send(b"USER alice@example.com\r\nPASS alice-secret\r\n")
    s.connector.attempts[0][3].errback(Failure(ConnectionRefusedError()))
    assert s.lines() == [b"+OK", b"-ERR [SYS/TEMP] Temporary failure, please try again later."]
    assert s.proto.state is State.PREAUTH


def test_backend_tls_failure_is_sys_temp() -> None:
    from OpenSSL import SSL

    s = Session()
    s.send(b"USER alice@example.com\r\nPASS alice-secret\r\n")
    s.lines()
    backend = s.backend()
    backend.proto.connectionLost(
        Failure(SSL.Error([("SSL routines", "", "certificate verify failed")]))
    )
    assert s.lines() == [b"-ERR [SYS/TEMP] Temporary failure, please try again later."]


def test_backend_refusing_the_replayed_login_is_an_auth_failure() -> None:
    s = Session()
    s.send(b"USER alice@example.com\r\nPASS alice-secret\r\n")
    s.lines()
    backend = s.backend()
    s.log_in_backend(backend, b"-ERR [AUTH] Authentication failed.")
    s.clock.advance(1)
    assert s.lines() == [b"-ERR [AUTH] Authentication failed."]
    assert backend.transport.disconnecting


def test_backend_in_use_is_passed_on() -> None:
    s = Session()
    s.send(b"USER alice@example.com\r\nPASS alice-secret\r\n")
    s.lines()
    s.log_in_backend(s.backend(), b"-ERR [IN-USE] Mailbox locked.")
    assert s.lines() == [b"-ERR [IN-USE] Mailbox locked."]
    assert s.proto.state is State.PREAUTH


def test_max_auth_errors_closes() -> None:
    s = Session(max_auth_errors=2)
    s.lines()
    s.send(b"USER alice@example.com\r\nPASS wrong\r\n")
    s.clock.advance(1)
    assert s.lines() == [b"+OK", b"-ERR [AUTH] Authentication failed."]
    s.send(b"USER alice@example.com\r\nPASS wrong\r\n")
    s.clock.advance(1)
    assert s.lines() == [b"+OK", b"-ERR [AUTH] Too many failures, closing connection."]
    assert s.transport.disconnecting


def test_max_errors_closes() -> None:
    s = Session(max_errors=3)
    s.lines()
    s.send(b"STAT\r\nLIST\r\nRETR 1\r\nNOOP\r\n")
    assert s.lines() == [
        b"-ERR Unknown command.",
        b"-ERR Unknown command.",
        b"-ERR Too many bad commands, closing connection.",
    ]
    assert s.transport.disconnecting


def test_pass_without_user_counts_as_an_error() -> None:
    s = Session(max_errors=1)
    s.lines()
    s.send(b"PASS x\r\n")
    assert s.lines() == [b"-ERR Too many bad commands, closing connection."]


def test_quit_and_noop() -> None:
    s = Session()
    s.lines()
    s.send(b"NOOP\r\nQUIT\r\nUSER x\r\n")
    assert s.lines() == [b"+OK", b"+OK Logging out."]
    assert s.transport.disconnecting


def test_overlong_line_closes() -> None:
    s = Session()
    s.lines()
    s.send(b"A" * 9000)
    assert s.lines() == [b"-ERR Line too long."]
    assert s.transport.disconnecting


# ---------------------------------------------------------------------- pipelining


def test_commands_pipelined_behind_a_successful_login_go_to_the_backend() -> None:
    s = Session()
    s.lines()
    s.send(b"USER alice@example.com\r\nPASS alice-secret\r\nSTAT\r\nLIST\r\n")
    backend = s.backend()
    s.log_in_backend(backend)
    assert s.lines() == [b"+OK", b"+OK Logged in."]
    assert backend.sent().endswith(b"\r\nSTAT\r\nLIST\r\n")


def test_commands_pipelined_behind_a_failed_login_are_parsed_afterwards() -> None:
    s = Session()
    s.lines()
    s.send(
        b"USER alice@example.com\r\nPASS wrong\r\nUSER alice@example.com\r\nPASS alice-secret\r\n"
    )
    assert s.lines() == [b"+OK"]
    s.clock.advance(1)
    assert s.lines() == [b"-ERR [AUTH] Authentication failed.", b"+OK"]
    assert len(s.connector.attempts) == 1


def test_client_is_no_longer_read_when_it_floods_during_a_login() -> None:
    s = Session()
    s.usermap.pending = []
    s.send(b"USER alice@example.com\r\nPASS alice-secret\r\n")
    s.send(b"NOOP\r\n" * 20000)
    assert s.transport.producerState == "paused"
    s.usermap.pending[0].callback(None)
    s.log_in_backend(s.backend())
    assert s.transport.producerState == "producing"


# ---------------------------------------------------------------------- options


def test_without_authentication_on_the_proxy_the_map_gets_no_password() -> None:
    s = Session(authenticate_on_proxy=False)
    s.send(b"USER alice@example.com\r\nPASS whatever\r\n")
    assert s.usermap.lookups == [("alice@example.com", None)]
    backend = s.backend()
    backend.feed(b"+OK ready\r\n")
    backend.feed(BACKEND_CAPA)
    assert backend.sent().endswith(b64(b"\0alice@example.com\0whatever") + b"\r\n")


def test_master_user_mode() -> None:
    s = Session(master=("fe-master", "master-secret"))
    s.send(b"USER alice@example.com\r\nPASS alice-secret\r\n")
    backend = s.backend()
    backend.feed(b"+OK ready\r\n")
    backend.feed(BACKEND_CAPA)
    assert backend.sent().endswith(b64(b"alice@example.com\0fe-master\0master-secret") + b"\r\n")


def test_master_user_mode_checks_the_password_on_the_node_even_if_told_not_to() -> None:
    """The master login lets anyone in on the back-end: the node is the only check left."""
    s = Session(master=("fe-master", "master-secret"), authenticate_on_proxy=False)
    s.send(b"USER alice@example.com\r\nPASS not-alices\r\n")
    assert s.usermap.lookups == [("alice@example.com", b"not-alices")]
    assert s.connector.attempts == []
    s.clock.advance(1)
    assert s.lines()[-1].startswith(b"-ERR [AUTH]")


def test_master_user_mode_refuses_a_user_the_map_stores_no_password_for() -> None:
    s = Session(master=("fe-master", "master-secret"))
    s.usermap.users["carol@example.com"] = ("10.0.0.3", None)  # routing only
    s.send(b"USER carol@example.com\r\nPASS anything\r\n")
    assert s.connector.attempts == []
    s.clock.advance(1)
    assert s.lines()[-1].startswith(b"-ERR [AUTH]")


def test_backend_starttls_uses_verifying_options_for_the_mapped_host() -> None:
    s = Session(connector=FakeConnector(TLSMode.STARTTLS))
    s.send(b"USER alice@example.com\r\nPASS alice-secret\r\n")
    backend = s.backend()
    backend.feed(b"+OK ready\r\n")
    assert backend.sent() == b"STLS\r\n"
    backend.feed(b"+OK Begin TLS negotiation now.\r\n")
    assert backend.transport.tls == "options-for-10.0.0.1"


# ---------------------------------------------------------------------- timers and endings


def test_preauth_timeout() -> None:
    s = Session()
    s.lines()
    s.clock.advance(60)
    assert s.lines() == [b"-ERR Disconnected for inactivity."]
    assert s.transport.disconnecting


def test_preauth_timeout_during_a_backend_login_drops_the_backend() -> None:
    s = Session()
    s.send(b"USER alice@example.com\r\nPASS alice-secret\r\n")
    backend = s.backend()
    s.clock.advance(60)
    assert backend.transport.disconnected or backend.transport.disconnecting


def test_idle_timeout_after_login_closes_both_sides() -> None:
    s = Session()
    s.send(b"USER alice@example.com\r\nPASS alice-secret\r\n")
    backend = s.backend()
    s.log_in_backend(backend)
    s.clock.pump([10] * 30)  # time passes in steps, as it does: checks sample counters
    s.send(b"NOOP\r\n")
    s.clock.pump([10] * 30)
    assert not s.transport.disconnecting
    s.clock.pump([10] * (30 + 8))  # activity is sampled every idle_timeout / 8
    assert s.transport.disconnecting and backend.transport.disconnecting


def test_client_leaving_during_connect_cancels_it() -> None:
    s = Session()
    s.send(b"USER alice@example.com\r\nPASS alice-secret\r\n")
    s.disconnect()
    assert s.connector.cancelled == [("10.0.0.1", 110)]


def test_client_leaving_during_the_backend_login_aborts_it() -> None:
    s = Session()
    s.send(b"USER alice@example.com\r\nPASS alice-secret\r\n")
    backend = s.backend()
    backend.feed(b"+OK ready\r\n")
    s.disconnect()
    assert backend.transport.disconnected


def test_closing_either_side_closes_the_other() -> None:
    s = Session()
    s.send(b"USER alice@example.com\r\nPASS alice-secret\r\n")
    backend = s.backend()
    s.log_in_backend(backend)
    backend.proto.connectionLost(Failure(ConnectionDone()))
    assert s.transport.disconnecting

    t = Session()
    t.send(b"USER alice@example.com\r\nPASS alice-secret\r\n")
    backend = t.backend()
    t.log_in_backend(backend)
    t.disconnect()
    assert backend.transport.disconnecting


def test_logs_never_hold_the_password() -> None:
    from twisted.logger import globalLogPublisher

    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    try:
        s = Session()
        s.send(b"USER alice@example.com\r\nPASS alice-secret\r\n")
        s.log_in_backend(s.backend())
        s.disconnect()
        t = Session()
        t.send(b"USER alice@example.com\r\nPASS wrong-pw\r\n")
        t.clock.advance(1)
        t.send(b"AUTH PLAIN " + b64(b"\0nobody@example.com\0other-pw") + b"\r\n")
        t.clock.advance(1)
    finally:
        globalLogPublisher.removeObserver(events.append)
    from twisted.logger import formatEvent

    text = "\n".join(formatEvent(e) for e in events)
    assert "routed to 10.0.0.1:110" in text
    assert "bad password" in text and "unknown user" in text
    for secret in ("alice-secret", "wrong-pw", "other-pw"):
        assert secret not in text


def test_relay_registers_flow_control_both_ways() -> None:
    s = Session()
    s.send(b"USER alice@example.com\r\nPASS alice-secret\r\n")
    backend = s.backend()
    s.log_in_backend(backend)
    # a full client buffer pauses reading from the back-end, and the other way round
    assert s.transport.producer is backend.transport and s.transport.streaming
    assert backend.transport.producer is s.transport and backend.transport.streaming
