"""The back-end leg: greeting, STARTTLS, ID, login replay, post-login capabilities."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from twisted.internet.error import ConnectionLost
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from axigen_fe.imap.backend import (
    BackendLogin,
    BackendRefused,
    BackendSession,
    BackendUnavailable,
    ClientAddress,
    Credentials,
    MasterUser,
    id_command,
    plan_login,
)

DOVECOT_CAPS = (
    b"IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ STARTTLS AUTH=PLAIN AUTH=LOGIN"
)
POST_CAPS = b"IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE SORT THREAD=REFERENCES MOVE"


class TLSTransport(StringTransport):
    """A StringTransport that records startTLS."""

    def __init__(self) -> None:
        super().__init__()
        self.tls_started: Any = None

    def startTLS(self, options: Any) -> None:
        self.tls_started = options


class Outcome:
    def __init__(self, login: BackendLogin) -> None:
        self.result: BackendSession | None = None
        self.error: Exception | None = None
        login.done.addCallbacks(self._ok, self._err)

    def _ok(self, s: BackendSession) -> None:
        self.result = s

    def _err(self, f: Failure) -> None:
        self.error = f.value  # type: ignore[assignment]


def make(
    user: str = "alice@example.com",
    password: bytes = b"secret",
    **kw: Any,
) -> tuple[BackendLogin, TLSTransport, Clock, Outcome]:
    clock = Clock()
    login = BackendLogin(clock, Credentials(user, password), timeout=5, **kw)
    transport = TLSTransport()
    login.makeConnection(transport)
    return login, transport, clock, Outcome(login)


def greet(login: BackendLogin, caps: bytes = DOVECOT_CAPS) -> None:
    login.dataReceived(b"* OK [CAPABILITY " + caps + b"] Dovecot ready.\r\n")


# ------------------------------------------------------------------ plan_login


def test_plan_quotes_printable_credentials() -> None:
    plan = plan_login(Credentials("alice", b'with spaces "q" \\ b'), None, {b"AUTH=PLAIN"})
    assert plan.method == "LOGIN"
    assert plan.parts == (b'X3 LOGIN "alice" "with spaces \\"q\\" \\\\ b"\r\n',)


def test_plan_uses_plain_for_non_ascii_with_sasl_ir() -> None:
    password = "pässwörd-€".encode()
    plan = plan_login(
        Credentials("umlaut@example.com", password), None, {b"AUTH=PLAIN", b"SASL-IR"}
    )
    assert plan.method == "AUTHENTICATE PLAIN"
    (wire,) = plan.parts
    assert wire.startswith(b"X3 AUTHENTICATE PLAIN ")
    assert base64.b64decode(wire.split()[3]) == b"\0umlaut@example.com\0" + password


def test_plan_waits_for_continuation_without_sasl_ir_or_when_caps_unknown() -> None:
    for caps in ({b"AUTH=PLAIN"}, None):
        plan = plan_login(Credentials("u", "ü".encode()), None, caps)
        assert plan.parts[0] == b"X3 AUTHENTICATE PLAIN\r\n"
        assert base64.b64decode(plan.parts[1].strip()) == "\0u\0ü".encode()


def test_plan_falls_back_to_literals_without_auth_plain() -> None:
    plan = plan_login(Credentials("u", "ü".encode()), None, {b"IMAP4rev1"})
    assert plan.method == "LOGIN"
    assert plan.parts == (b'X3 LOGIN "u" {2}\r\n', "ü".encode() + b"\r\n")
    plan = plan_login(Credentials("u", "ü".encode()), None, {b"LITERAL+"})
    assert plan.parts == (b'X3 LOGIN "u" {2+}\r\n' + "ü".encode() + b"\r\n",)


def test_plan_literals_are_split_where_we_put_them_not_inside_the_password() -> None:
    password = "ü {5}\r\nx".encode()
    plan = plan_login(Credentials("us\x01er", password), None, {b"IMAP4rev1"})
    assert plan.parts == (
        b"X3 LOGIN {5}\r\n",
        b"us\x01er {%d}\r\n" % len(password),
        password + b"\r\n",
    )


def test_plan_respects_logindisabled() -> None:
    plan = plan_login(Credentials("u", b"p"), None, {b"LOGINDISABLED", b"AUTH=PLAIN"})
    assert plan.method == "AUTHENTICATE PLAIN"


def test_plan_master_user() -> None:
    master = MasterUser("fe-master", b"master-secret")
    plan = plan_login(Credentials("alice@example.com", b"ignored"), master, {b"AUTH=PLAIN"})
    assert plan.parts == (b'X3 LOGIN "alice@example.com*fe-master" "master-secret"\r\n',)
    # a user name that cannot be quoted: PLAIN with the user as authorization identity
    plan = plan_login(Credentials("jürgen", b"ignored"), master, {b"AUTH=PLAIN", b"SASL-IR"})
    assert plan.method == "AUTHENTICATE PLAIN"
    assert base64.b64decode(plan.parts[0].split()[3]) == "jürgen\0fe-master\0master-secret".encode()


def test_id_command_carries_the_client_address() -> None:
    wire = id_command(ClientAddress("192.0.2.7", 50123, "127.0.0.1", 143, "0000002A"))
    assert wire == (
        b'X1 ID ("x-originating-ip" "192.0.2.7" "x-originating-port" "50123" '
        b'"x-connected-ip" "127.0.0.1" "x-connected-port" "143" "x-session-ext-id" "0000002A")\r\n'
    )


# ----------------------------------------------------------------- the protocol


def test_plain_login_with_caps_in_the_ok() -> None:
    client = ClientAddress("192.0.2.7", 50123, "127.0.0.1", 143, "1")
    login, t, clock, out = make(client=client)
    assert t.value() == b""  # nothing before the greeting
    greet(login)
    sent = t.value()
    assert sent.startswith(b"X1 ID (") and sent.endswith(
        b'X3 LOGIN "alice@example.com" "secret"\r\n'
    )
    t.clear()
    login.dataReceived(b'* ID ("name" "Dovecot")\r\nX1 OK ID completed.\r\n')
    login.dataReceived(b"X3 OK [CAPABILITY " + POST_CAPS + b"] Logged in\r\n* 1 EXISTS\r\n")
    assert out.result == BackendSession(POST_CAPS, b"Logged in", "LOGIN", b"* 1 EXISTS\r\n")
    assert not clock.getDelayedCalls()


def test_no_forwarding_sends_no_id() -> None:
    login, t, _, _ = make()
    greet(login)
    assert t.value() == b'X3 LOGIN "alice@example.com" "secret"\r\n'


def test_capability_command_when_the_ok_has_none() -> None:
    login, t, _, out = make()
    greet(login)
    t.clear()
    login.dataReceived(b"X3 OK Logged in\r\n")
    assert t.value() == b"X4 CAPABILITY\r\n"
    assert out.result is None
    login.dataReceived(b"* CAPABILITY " + POST_CAPS + b"\r\nX4 OK done\r\n")
    assert out.result is not None and out.result.capabilities == POST_CAPS


def test_untagged_capability_before_the_ok_is_used() -> None:
    login, t, _, out = make()
    greet(login)
    login.dataReceived(b"* CAPABILITY " + POST_CAPS + b"\r\nX3 OK Logged in\r\n")
    assert out.result is not None and out.result.capabilities == POST_CAPS


def test_plain_exchange_without_sasl_ir() -> None:
    login, t, _, out = make(password="ü".encode())
    greet(login, b"IMAP4rev1 AUTH=PLAIN")
    assert t.value() == b"X3 AUTHENTICATE PLAIN\r\n"
    t.clear()
    login.dataReceived(b"+ \r\n")
    assert base64.b64decode(t.value().strip()) == "\0alice@example.com\0ü".encode()
    login.dataReceived(b"X3 OK [CAPABILITY IMAP4rev1] Logged in\r\n")
    assert out.result is not None and out.result.method == "AUTHENTICATE PLAIN"


def test_refused_login() -> None:
    login, t, _, out = make()
    greet(login)
    login.dataReceived(b"X3 NO [AUTHENTICATIONFAILED] Authentication failed.\r\n")
    assert isinstance(out.error, BackendRefused)
    assert "AUTHENTICATIONFAILED" in out.error.response
    assert t.disconnecting or t.value()  # connection dropped


@pytest.mark.parametrize("code", [b"UNAVAILABLE", b"SERVERBUG", b"LIMIT", b"INUSE"])
def test_refusals_that_are_not_the_users_fault_are_unavailable(code: bytes) -> None:
    login, t, _, out = make()
    greet(login)
    login.dataReceived(b"X3 NO [" + code + b"] Try again later\r\n")
    assert isinstance(out.error, BackendUnavailable)
    assert code.decode() in out.error.reason


def test_bye_greeting_is_unavailable() -> None:
    login, t, _, out = make()
    login.dataReceived(b"* BYE Too many connections\r\n")
    assert isinstance(out.error, BackendUnavailable)
    assert "Too many connections" in out.error.reason
    assert t.value() == b""


def test_silent_backend_times_out() -> None:
    login, t, clock, out = make()
    clock.advance(5)
    assert isinstance(out.error, BackendUnavailable)
    assert "login not done within 5s, stuck waiting for the greeting" == out.error.reason


def test_connection_lost_during_login() -> None:
    login, t, clock, out = make()
    greet(login)
    login.connectionLost(Failure(ConnectionLost("reset")))
    assert isinstance(out.error, BackendUnavailable)
    assert "waiting for the login answer" in out.error.reason
    assert not clock.getDelayedCalls()


def test_starttls_sends_no_credentials_before_the_handshake() -> None:
    login, t, _, out = make(
        starttls=lambda: "verifying-options",
        client=ClientAddress("1.2.3.4", 5, "6.7.8.9", 143, "1"),
    )
    greet(login)
    assert t.value() == b"X2 STARTTLS\r\n"
    t.clear()
    login.dataReceived(b"X2 OK Begin TLS negotiation now.\r\n")
    assert t.tls_started == "verifying-options"
    assert t.value() == b""  # the handshake (and its verification) comes first
    login.handshakeCompleted()
    assert b'X3 LOGIN "alice@example.com" "secret"\r\n' in t.value()
    assert t.value().startswith(b"X1 ID")


def test_starttls_not_offered() -> None:
    login, t, _, out = make(starttls=lambda: "x")
    greet(login, b"IMAP4rev1 AUTH=PLAIN")
    assert isinstance(out.error, BackendUnavailable)
    assert "STARTTLS" in out.error.reason
    assert t.value() == b""


def test_starttls_refused() -> None:
    login, t, _, out = make(starttls=lambda: "x")
    greet(login)
    login.dataReceived(b"X2 BAD not now\r\n")
    assert isinstance(out.error, BackendUnavailable)


def test_tls_failure_during_handshake_is_unavailable() -> None:
    from OpenSSL import SSL

    login, t, _, out = make(starttls=lambda: "x")
    greet(login)
    login.dataReceived(b"X2 OK go\r\n")
    login.connectionLost(Failure(SSL.Error([("SSL routines", "", "certificate verify failed")])))
    assert isinstance(out.error, BackendUnavailable)
    assert "TLS failed" in out.error.reason and "certificate verify failed" in out.error.reason


def test_literals_in_responses_are_skipped() -> None:
    login, t, _, out = make()
    greet(login)
    login.dataReceived(b'* ID ("name" {5}\r\nX3 OK)\r\n')  # a literal that looks like our tag
    assert out.result is None
    login.dataReceived(b"X3 OK [CAPABILITY IMAP4rev1] Logged in\r\n")
    assert out.result is not None


def test_relay_after_login() -> None:
    login, t, _, out = make()
    greet(login)
    login.dataReceived(b"X3 OK [CAPABILITY IMAP4rev1] Logged in\r\n")
    got: list[bytes] = []
    lost: list[bool] = []
    login.start_relay(got.append, lambda: lost.append(True))
    login.dataReceived(b"* 2 EXISTS\r\n")
    assert got == [b"* 2 EXISTS\r\n"]
    login.connectionLost(Failure(ConnectionLost()))
    assert lost == [True]


def test_abort_before_login_fires_nothing_twice() -> None:
    login, t, clock, out = make()
    login.abort()
    login.connectionLost(Failure(ConnectionLost()))
    assert out.result is None and out.error is None
    assert not clock.getDelayedCalls()


@pytest.mark.parametrize("greeting", [b"* PREAUTH hi\r\n", b"garbage\r\n"])
def test_odd_greetings(greeting: bytes) -> None:
    login, t, _, out = make()
    login.dataReceived(greeting)
    assert isinstance(out.error, BackendUnavailable)
