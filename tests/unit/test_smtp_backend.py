"""The back-end SMTP client: reply parsing, timeouts, the opening dance, XCLIENT lines."""

from __future__ import annotations

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from axigen_fe.config.model import TLSMode
from axigen_fe.smtp.backend import (
    BackendError,
    BackendGone,
    BackendSession,
    BackendSMTP,
    ClientFacts,
    open_backend,
    parse_ehlo,
    xclient_command,
)
from axigen_fe.smtp.replies import Reply
from tests.unit.test_smtp_support import FakeConnector, Script

ALL = {"NAME", "ADDR", "PROTO", "HELO", "REVERSE_NAME", "PORT", "LOGIN", "DESTADDR", "DESTPORT"}


def proto() -> tuple[BackendSMTP, StringTransport, Clock]:
    clock = Clock()
    p = BackendSMTP(clock, 30.0)
    t = StringTransport()
    p.makeConnection(t)
    return p, t, clock


def result(d: Deferred[Reply]) -> list[object]:
    out: list[object] = []
    d.addBoth(out.append)
    return out


def test_multiline_replies_are_collected_and_matched_in_order() -> None:
    p, t, _ = proto()
    greeting = result(p.greeting)
    p.dataReceived(b"220 mx ESMTP\r\n")
    assert greeting == [Reply(220, (b"mx ESMTP",))]
    ehlo = result(p.command(b"EHLO node"))
    noop = result(p.command(b"NOOP"))
    assert t.value() == b"EHLO node\r\nNOOP\r\n"
    p.dataReceived(b"250-mx\r\n250-PIPELINING\r\n250 SIZE 5\r\n250 Ok\r\n")
    assert ehlo == [Reply(250, (b"mx", b"PIPELINING", b"SIZE 5"))]
    assert noop == [Reply(250, (b"Ok",))]
    assert parse_ehlo(ehlo[0]) == {"PIPELINING": (), "SIZE": ("5",)}  # type: ignore[arg-type]


def test_garbage_instead_of_a_reply_drops_the_connection() -> None:
    p, t, _ = proto()
    greeting = result(p.greeting)
    p.dataReceived(b"HTTP/1.1 400 Bad Request\r\n")
    assert t.disconnected
    p.connectionLost(None)
    assert isinstance(greeting[0].value, BackendGone)  # type: ignore[attr-defined]


def test_no_reply_within_the_timeout_aborts() -> None:
    p, t, clock = proto()
    p.dataReceived(b"220 mx\r\n")
    noop = result(p.command(b"NOOP"))
    clock.advance(29)
    assert not t.disconnected
    clock.advance(2)
    assert t.disconnected
    p.connectionLost(None)
    assert "no reply from the back-end within 30s" in str(noop[0].value)  # type: ignore[attr-defined]


def test_unsolicited_421_closes() -> None:
    p, t, _ = proto()
    p.dataReceived(b"220 mx\r\n")
    p.dataReceived(b"421 4.4.2 mx Error: timeout exceeded\r\n")
    assert t.disconnected and p.lost


def test_xclient_sends_only_offered_attributes_xtext_encoded() -> None:
    facts = ClientFacts("2001:db8::1", 4000, "we ird=name", esmtp=False, login="a+b@example.com")
    assert xclient_command(ALL, facts, forward=True) == (
        b"XCLIENT ADDR=IPV6:2001:db8::1 PORT=4000 NAME=[UNAVAILABLE] PROTO=SMTP"
        b" HELO=we+20ird+3Dname LOGIN=a+2Bb@example.com"
    )
    assert (
        xclient_command({"ADDR", "LOGIN"}, facts, forward=False)
        == b"XCLIENT LOGIN=a+2Bb@example.com"
    )
    unix = ClientFacts(None, None, "h")
    assert (
        xclient_command({"ADDR", "HELO"}, unix, forward=True)
        == b"XCLIENT ADDR=[UNAVAILABLE] HELO=h"
    )


def opened(connector: FakeConnector, facts: ClientFacts, forward: bool = True) -> list[object]:
    d = Deferred.fromCoroutine(
        open_backend(
            connector,
            Clock(),
            "10.0.0.1",
            25,
            my_name="mx.test",
            facts=facts,
            forward=forward,
            reply_timeout=30,
        )  # type: ignore[arg-type]
    )
    out: list[object] = []
    d.addBoth(out.append)
    connector.flush()
    return out


def test_open_backend_dance() -> None:
    c = FakeConnector()
    (session,) = opened(c, ClientFacts("192.0.2.7", 1234, "client.test"))
    assert isinstance(session, BackendSession)
    assert session.forwarded == "XCLIENT"
    assert c.servers[0].commands == [
        b"EHLO mx.test",
        b"XCLIENT ADDR=192.0.2.7 PORT=1234 NAME=[UNAVAILABLE] PROTO=ESMTP HELO=client.test",
        b"EHLO client.test",
    ]


def test_no_forwarding_when_switched_off() -> None:
    c = FakeConnector()
    (session,) = opened(c, ClientFacts("192.0.2.7", 1234, "client.test"), forward=False)
    assert session.forwarded == "none"  # type: ignore[attr-defined]
    assert c.servers[0].commands == [b"EHLO mx.test"]


@pytest.mark.parametrize(
    ("script", "why"),
    [
        (Script(greeting=b"554 no"), "greeting refused"),
        (Script(custom={b"EHLO": (b"502 5.5.1 no EHLO",)}), "EHLO refused"),
        (Script(custom={b"XCLIENT": (b"550 5.7.0 not authorized",)}), "XCLIENT refused"),
    ],
)
def test_open_backend_failures_say_why(script: Script, why: str) -> None:
    c = FakeConnector(script)
    (err,) = opened(c, ClientFacts("192.0.2.7", 1234, "client.test"))
    assert isinstance(err.value, BackendError)  # type: ignore[attr-defined]
    assert why in str(err.value)  # type: ignore[attr-defined]
    assert c.pumps[0].clientIO.disconnecting


def test_starttls_required_but_not_offered() -> None:
    c = FakeConnector(Script(starttls=False), TLSMode.STARTTLS)
    (err,) = opened(c, ClientFacts("192.0.2.7", 1234, "client.test"))
    assert "does not offer STARTTLS" in str(err.value)  # type: ignore[attr-defined]


def test_mail_and_first_rcpt_are_pipelined_when_offered() -> None:
    from axigen_fe.smtp.parser import parse_mail, parse_rcpt

    p, t, _ = proto()
    p.dataReceived(b"220 mx\r\n")
    session = BackendSession(
        "10.0.0.1", 25, p, {"PIPELINING": ()}, "none", b"XFORWARD ADDR=192.0.2.7"
    )
    d = Deferred.fromCoroutine(
        session.mail(parse_mail(b"FROM:<a@b.test>", True), parse_rcpt(b"TO:<c@d.test>"))
    )
    out: list[object] = []
    d.addBoth(out.append)
    assert t.value() == b"XFORWARD ADDR=192.0.2.7\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\n"
    p.dataReceived(b"250 2.0.0 Ok\r\n250 2.1.0 Ok\r\n550 5.1.1 nope\r\n")
    assert out == [(Reply(250, (b"2.1.0 Ok",)), Reply(550, (b"5.1.1 nope",)))]


def test_without_pipelining_rcpt_waits_for_mail() -> None:
    from axigen_fe.smtp.parser import parse_mail, parse_rcpt

    p, t, _ = proto()
    p.dataReceived(b"220 mx\r\n")
    session = BackendSession("10.0.0.1", 25, p, {}, "none")
    d = Deferred.fromCoroutine(
        session.mail(parse_mail(b"FROM:<a@b.test>", True), parse_rcpt(b"TO:<c@d.test>"))
    )
    out: list[object] = []
    d.addBoth(out.append)
    assert t.value() == b"MAIL FROM:<a@b.test>\r\n"
    p.dataReceived(b"250 2.1.0 Ok\r\n")
    assert t.value() == b"MAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\n"
    p.dataReceived(b"250 2.1.5 Ok\r\n")
    assert out == [(Reply(250, (b"2.1.0 Ok",)), Reply(250, (b"2.1.5 Ok",)))]


def test_connection_lost_during_pipelined_commands_fails_once() -> None:
    from axigen_fe.smtp.parser import parse_mail, parse_rcpt

    p, t, _ = proto()
    p.dataReceived(b"220 mx\r\n")
    session = BackendSession("10.0.0.1", 25, p, {"PIPELINING": ()}, "none")
    d = Deferred.fromCoroutine(
        session.mail(parse_mail(b"FROM:<a@b.test>", True), parse_rcpt(b"TO:<c@d.test>"))
    )
    out: list[object] = []
    d.addBoth(out.append)
    p.connectionLost(None)
    assert isinstance(out[0].value, BackendGone)  # type: ignore[attr-defined]
