"""The POP3 back-end leg: greeting, STLS, CAPA (remembered), XCLIENT, login replay."""

from __future__ import annotations

import base64
from typing import Any

from OpenSSL import SSL
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from axigen_fe.config.model import TLSMode
from axigen_fe.pop3.backend import (
    BackendLogin,
    Capabilities,
    CapabilityCache,
    LoginOutcome,
    LoginResult,
    Pop3BackendProtocol,
)

DOVECOT_CAPA = (
    b"+OK\r\nCAPA\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nPIPELINING\r\nAUTH-RESP-CODE\r\n"
    b"STLS\r\nUSER\r\nSASL PLAIN LOGIN\r\n.\r\n"
)
PLAIN_ALICE = base64.b64encode(b"\0alice@example.com\0secret")


class TLSStringTransport(StringTransport):
    """Records startTLS instead of doing it."""

    tls_started_with: Any = None

    def startTLS(self, options: Any) -> None:
        self.tls_started_with = options


class Leg:
    def __init__(
        self,
        login: BackendLogin | None = None,
        *,
        tls_mode: TLSMode = TLSMode.NONE,
        client: tuple[str, int] | None = ("192.0.2.7", 4242),
        cache: CapabilityCache | None = None,
        clock: Clock | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.clock = clock or Clock()
        self.cache = cache or CapabilityCache(self.clock)
        self.proto = Pop3BackendProtocol(
            self.clock,
            login or BackendLogin(b"alice@example.com", b"secret"),
            host="10.0.0.1",
            port=110,
            tls_mode=tls_mode,
            tls_options=(lambda: "tls-options") if tls_mode is TLSMode.STARTTLS else None,  # type: ignore[arg-type,return-value]
            client_address=client,
            capabilities=self.cache,
            timeout=timeout,
        )
        self.transport = TLSStringTransport()
        self.results: list[LoginResult] = []
        self.proto.result.addCallback(self.results.append)
        self.proto.makeConnection(self.transport)

    def feed(self, data: bytes) -> None:
        self.proto.dataReceived(data)

    def sent(self) -> bytes:
        value = self.transport.value()
        self.transport.clear()
        return value

    @property
    def result(self) -> LoginResult:
        assert len(self.results) == 1, self.results
        return self.results[0]


def test_first_login_asks_capa_then_pipelines_xclient_and_auth_plain() -> None:
    leg = Leg()
    leg.feed(b"+OK [XCLIENT] Dovecot ready.\r\n")
    assert leg.sent() == b"CAPA\r\n"
    leg.feed(DOVECOT_CAPA)
    assert leg.sent() == b"XCLIENT ADDR=192.0.2.7 PORT=4242\r\nAUTH PLAIN " + PLAIN_ALICE + b"\r\n"
    leg.feed(b"+OK Updated\r\n+OK Logged in.\r\n")
    assert leg.result == LoginResult(LoginOutcome.READY, b"+OK Logged in.", "", True)


def test_remembered_capabilities_save_the_capa_round_trip() -> None:
    clock = Clock()
    cache = CapabilityCache(clock, ttl=300)
    first = Leg(cache=cache, clock=clock)
    first.feed(b"+OK [XCLIENT] ready\r\n")
    first.feed(DOVECOT_CAPA)
    second = Leg(cache=cache, clock=clock)
    second.feed(b"+OK [XCLIENT] ready\r\n")
    assert second.sent().startswith(b"XCLIENT ADDR=192.0.2.7 PORT=4242\r\nAUTH PLAIN ")
    clock.advance(301)
    third = Leg(cache=cache, clock=clock)
    third.feed(b"+OK [XCLIENT] ready\r\n")
    assert third.sent() == b"CAPA\r\n"


def test_no_xclient_when_the_backend_does_not_offer_it() -> None:
    leg = Leg()
    leg.feed(b"+OK ready\r\n")
    leg.sent()
    leg.feed(DOVECOT_CAPA)
    assert leg.sent() == b"AUTH PLAIN " + PLAIN_ALICE + b"\r\n"
    leg.feed(b"+OK Logged in.\r\n")
    assert leg.result.outcome is LoginOutcome.READY
    assert not leg.result.forwarded


def test_xclient_listed_in_capa_is_used_too() -> None:
    leg = Leg()
    leg.feed(b"+OK ready\r\n")
    leg.sent()
    leg.feed(b"+OK\r\nXCLIENT\r\nSASL PLAIN\r\n.\r\n")
    # no PIPELINING: one command at a time
    assert leg.sent() == b"XCLIENT ADDR=192.0.2.7 PORT=4242\r\n"
    leg.feed(b"+OK\r\n")
    assert leg.sent() == b"AUTH PLAIN " + PLAIN_ALICE + b"\r\n"
    leg.feed(b"+OK Logged in.\r\n")
    assert leg.result.forwarded


def test_refused_xclient_is_noted_and_the_login_goes_on() -> None:
    leg = Leg()
    leg.feed(b"+OK [XCLIENT] ready\r\n")
    leg.sent()
    leg.feed(DOVECOT_CAPA)
    leg.sent()
    leg.feed(b"-ERR You aren't allowed to use XCLIENT\r\n+OK Logged in.\r\n")
    assert leg.result.outcome is LoginOutcome.READY
    assert not leg.result.forwarded
    assert "XCLIENT" in leg.result.detail


def test_user_pass_without_sasl_plain() -> None:
    leg = Leg(BackendLogin(b"spacey@example.com", b'with spaces "q" \\ b'), client=None)
    leg.feed(b"+OK ready\r\n")
    leg.sent()
    leg.feed(b"+OK\r\nUSER\r\n.\r\n")
    assert leg.sent() == b"USER spacey@example.com\r\n"
    leg.feed(b"+OK\r\n")
    assert leg.sent() == b'PASS with spaces "q" \\ b\r\n'
    leg.feed(b"+OK Logged in.\r\n")
    assert leg.result.line == b"+OK Logged in."


def test_pipelined_user_pass_refused_at_user() -> None:
    leg = Leg(client=None)
    leg.feed(b"+OK ready\r\n")
    leg.feed(b"+OK\r\nUSER\r\nPIPELINING\r\n.\r\n")
    assert leg.sent() == b"CAPA\r\nUSER alice@example.com\r\nPASS secret\r\n"
    leg.feed(b"-ERR no such mailbox\r\n")
    assert leg.result.outcome is LoginOutcome.REFUSED
    assert leg.transport.disconnecting


def test_capa_refused_means_plain_old_user_pass() -> None:
    leg = Leg(client=None)
    leg.feed(b"+OK ready\r\n")
    leg.sent()
    leg.feed(b"-ERR Unknown command\r\n")
    assert leg.sent() == b"USER alice@example.com\r\n"


def test_credentials_that_cannot_travel_on_a_line_need_sasl_plain() -> None:
    leg = Leg(BackendLogin(b"alice@example.com", b"a\r\nDELE 1"), client=None)
    leg.feed(b"+OK ready\r\n")
    leg.sent()
    leg.feed(b"+OK\r\nUSER\r\n.\r\n")
    assert leg.sent() == b"QUIT\r\n"
    assert leg.result.outcome is LoginOutcome.REFUSED


def test_master_user_mode_uses_plain_with_authorization_identity() -> None:
    leg = Leg(BackendLogin(b"alice@example.com", b"master-secret", b"fe-master"), client=None)
    leg.feed(b"+OK ready\r\n")
    leg.sent()
    leg.feed(DOVECOT_CAPA)
    expected = base64.b64encode(b"alice@example.com\0fe-master\0master-secret")
    assert leg.sent() == b"AUTH PLAIN " + expected + b"\r\n"


def test_master_user_mode_without_sasl_uses_the_separator() -> None:
    leg = Leg(BackendLogin(b"alice@example.com", b"master-secret", b"fe-master"), client=None)
    leg.feed(b"+OK ready\r\n")
    leg.sent()
    leg.feed(b"+OK\r\nUSER\r\n.\r\n")
    assert leg.sent() == b"USER alice@example.com*fe-master\r\n"


def test_long_plain_response_waits_for_the_prompt() -> None:
    leg = Leg(BackendLogin(b"u" * 150, b"p" * 100), client=None)
    leg.feed(b"+OK ready\r\n")
    leg.sent()
    leg.feed(DOVECOT_CAPA)
    assert leg.sent() == b"AUTH PLAIN\r\n"
    leg.feed(b"+ \r\n")
    assert leg.sent() == base64.b64encode(b"\0" + b"u" * 150 + b"\0" + b"p" * 100) + b"\r\n"
    leg.feed(b"+OK Logged in.\r\n")
    assert leg.result.outcome is LoginOutcome.READY


def test_refused_login_carries_the_backend_line() -> None:
    leg = Leg()
    leg.feed(b"+OK [XCLIENT] ready\r\n")
    leg.feed(DOVECOT_CAPA)
    leg.feed(b"+OK Updated\r\n-ERR [AUTH] Authentication failed.\r\n")
    assert leg.result.outcome is LoginOutcome.REFUSED
    assert leg.result.line == b"-ERR [AUTH] Authentication failed."
    # capabilities still trusted after an ordinary [AUTH] refusal
    assert leg.cache.get(("10.0.0.1", 110, TLSMode.NONE)) is not None


def test_unexpected_refusal_forgets_the_capabilities() -> None:
    leg = Leg()
    leg.feed(b"+OK ready\r\n")
    leg.feed(DOVECOT_CAPA)
    leg.feed(b"-ERR Unsupported authentication mechanism.\r\n")
    assert leg.cache.get(("10.0.0.1", 110, TLSMode.NONE)) is None


def test_bad_greeting_is_unavailable() -> None:
    leg = Leg()
    leg.feed(b"-ERR [SYS/TEMP] too many connections\r\n")
    assert leg.result.outcome is LoginOutcome.UNAVAILABLE
    assert "greeting" in leg.result.detail


def test_starttls_then_capa_over_tls() -> None:
    leg = Leg(tls_mode=TLSMode.STARTTLS)
    leg.feed(b"+OK [XCLIENT] ready\r\n")
    assert leg.sent() == b"STLS\r\n"
    leg.feed(b"+OK Begin TLS negotiation now.\r\n")
    assert leg.transport.tls_started_with == "tls-options"
    assert leg.sent() == b"CAPA\r\n"


def test_starttls_refused_is_unavailable() -> None:
    leg = Leg(tls_mode=TLSMode.STARTTLS)
    leg.feed(b"+OK ready\r\n")
    leg.feed(b"-ERR TLS support isn't enabled.\r\n")
    assert leg.result.outcome is LoginOutcome.UNAVAILABLE
    assert leg.transport.tls_started_with is None


def test_plaintext_injected_behind_the_stls_answer_is_refused() -> None:
    leg = Leg(tls_mode=TLSMode.STARTTLS)
    leg.feed(b"+OK ready\r\n")
    leg.feed(b"+OK Begin TLS\r\n+OK Logged in.\r\n")
    assert leg.result.outcome is LoginOutcome.UNAVAILABLE
    assert leg.transport.tls_started_with is None


def test_tls_failure_is_reported_as_such() -> None:
    leg = Leg(tls_mode=TLSMode.STARTTLS)
    leg.feed(b"+OK ready\r\n")
    leg.feed(b"+OK Begin TLS\r\n")
    error = SSL.Error([("SSL routines", "", "certificate verify failed")])
    leg.proto.connectionLost(Failure(error))
    assert leg.result.outcome is LoginOutcome.UNAVAILABLE
    assert leg.result.detail.startswith("TLS failure: certificate verify failed")


def test_connection_lost_during_login_is_unavailable() -> None:
    leg = Leg()
    leg.feed(b"+OK ready\r\n")
    leg.proto.connectionLost(Failure(ConnectionDone()))
    assert leg.result.outcome is LoginOutcome.UNAVAILABLE
    assert "waiting for CAPA" in leg.result.detail


def test_silence_times_out() -> None:
    leg = Leg(timeout=5)
    leg.clock.advance(5)
    assert leg.result.outcome is LoginOutcome.UNAVAILABLE
    assert "within 5 s" in leg.result.detail


def test_endless_line_is_refused() -> None:
    leg = Leg()
    leg.feed(b"+" * 9000)
    assert leg.result.outcome is LoginOutcome.UNAVAILABLE


def test_relay_gets_leftover_then_every_byte_and_the_loss() -> None:
    leg = Leg(client=None)
    leg.feed(b"+OK ready\r\n")
    leg.feed(DOVECOT_CAPA)
    leg.feed(b"+OK Logged in.\r\n+OK 2 messages\r\n")
    got: list[bytes] = []
    lost: list[Failure] = []
    assert leg.proto.start_relay(got.append, lost.append) == b"+OK 2 messages\r\n"
    leg.feed(b"raw \r\n bytes")
    assert got == [b"raw \r\n bytes"]
    leg.proto.connectionLost(Failure(ConnectionLost()))
    assert len(lost) == 1
    assert len(leg.results) == 1


def test_capabilities_parse() -> None:
    caps = Capabilities.parse([b"TOP", b"pipelining", b"SASL LOGIN PLAIN", b"XCLIENT"])
    assert caps == Capabilities(pipelining=True, sasl_plain=True, xclient=True)
    assert Capabilities.parse([b"SASL LOGIN"]).sasl_plain is False
