"""Command-line parsing: verbs, paths, ESMTP parameters, domains, xtext, replies."""

from __future__ import annotations

import pytest

from axigen_fe.smtp.parser import (
    CommandError,
    domain_served,
    parse_mail,
    parse_rcpt,
    split_command,
    xtext,
)
from axigen_fe.smtp.replies import Reply, queue_id, reply


def code(e: pytest.ExceptionInfo[CommandError]) -> str:
    r = e.value.reply
    return f"{r.code} {r.enhanced}"


def test_split_command() -> None:
    assert split_command(b"mail FROM:<a@b>").verb == "MAIL"
    assert split_command(b"mail FROM:<a@b>").arg == b"FROM:<a@b>"
    assert split_command(b"QUIT").arg == b""
    assert split_command(b"RSET  ").verb == "RSET"
    assert split_command(b"12 x").verb == ""
    assert split_command(b"").verb == ""


@pytest.mark.parametrize(
    ("arg", "address"),
    [
        (b"FROM:<alice@example.com>", "alice@example.com"),
        (b"from:<alice@example.com>", "alice@example.com"),
        (b"FROM: <alice@example.com>", "alice@example.com"),  # a common client quirk
        (b"FROM:<>", ""),
        (b'FROM:<"odd > local"@example.com>', '"odd > local"@example.com'),
        (b"FROM:<@relay.test,@other.test:alice@example.com>", "alice@example.com"),
        (b"FROM:<a@[192.0.2.1]>", "a@[192.0.2.1]"),
        (b"FROM:<first.last+tag@sub-domain.example.com>", "first.last+tag@sub-domain.example.com"),
    ],
)
def test_mail_paths(arg: bytes, address: str) -> None:
    assert parse_mail(arg, esmtp=True).path.address == address


def test_mail_parameters() -> None:
    m = parse_mail(b"FROM:<a@b.test> size=123 body=8bitmime", esmtp=True)
    assert (m.size, m.body) == (123, "8BITMIME")
    assert m.backend_command() == b"MAIL FROM:<a@b.test> SIZE=123 BODY=8BITMIME"
    assert parse_mail(b"FROM:<>", esmtp=False).backend_command() == b"MAIL FROM:<>"


@pytest.mark.parametrize(
    ("arg", "expected"),
    [
        (b"FROM:a@b.test", "501 5.5.4"),
        (b"FROM:<a@b.test", "501 5.5.4"),
        (b"TO:<a@b.test>", "501 5.5.4"),
        (b"FROM:<a@b.test>SIZE=1", "501 5.5.4"),
        (b"FROM:<a@b.test> SIZE=x", "501 5.5.4"),
        (b"FROM:<a@b.test> SIZE=1 SIZE=2", "501 5.5.4"),
        (b"FROM:<a@b.test> BODY=BINARYMIME", "501 5.5.4"),
        (b"FROM:<a@b.test> RET=FULL", "555 5.5.4"),
        (b"FROM:<a@b.test> SMTPUTF8", "555 5.5.4"),
        (b"FROM:<no-domain>", "501 5.1.7"),
        (b"FROM:<a@-bad-.test>", "501 5.1.7"),
        (b"FROM:<a b@c.test>", "501 5.1.7"),
        (b"FROM:<a@b.test\x01>", "501 5.1.7"),
        ("FROM:<jörg@example.com>".encode(), "553 5.6.7"),
    ],
)
def test_mail_errors(arg: bytes, expected: str) -> None:
    with pytest.raises(CommandError) as e:
        parse_mail(arg, esmtp=True)
    assert code(e) == expected


def test_mail_parameters_need_ehlo() -> None:
    with pytest.raises(CommandError) as e:
        parse_mail(b"FROM:<a@b.test> SIZE=1", esmtp=False)
    assert code(e) == "555 5.5.4"


def test_rcpt() -> None:
    assert parse_rcpt(b"TO:<Alice@Example.COM>").path.address == "Alice@Example.COM"
    assert parse_rcpt(b"TO:<Alice@Example.COM>").path.domain == "Example.COM"
    pm = parse_rcpt(b"TO:<Postmaster>").path
    assert (pm.address, pm.domain) == ("Postmaster", "")
    assert parse_rcpt(b"TO:<a@b.test>").backend_command() == b"RCPT TO:<a@b.test>"
    for bad, expected in ((b"TO:<>", "501 5.1.3"), (b"TO:<a@b.test> NOTIFY=NEVER", "555 5.5.4")):
        with pytest.raises(CommandError) as e:
            parse_rcpt(bad)
        assert code(e) == expected


def test_domain_served() -> None:
    domains = ("example.com", "*.example.org")
    assert domain_served("example.com", domains)
    assert domain_served("EXAMPLE.COM", domains)
    assert domain_served("a.example.org", domains)
    assert domain_served("a.b.example.org", domains)
    assert not domain_served("example.org", domains)
    assert not domain_served("sub.example.com", domains)
    assert not domain_served("badexample.org", domains)
    assert not domain_served("[192.0.2.1]", domains)
    assert not domain_served("example.com.evil.test", domains)


def test_xtext() -> None:
    assert xtext("a+b=c d") == b"a+2Bb+3Dc+20d"
    assert xtext("[UNAVAILABLE]") == b"[UNAVAILABLE]"
    assert xtext("ü") == b"+C3+BC"


def test_reply_encoding_and_fields() -> None:
    r = Reply(250, (b"mx", b"PIPELINING", b"SIZE 10"))
    assert r.encode() == b"250-mx\r\n250-PIPELINING\r\n250 SIZE 10\r\n"
    assert reply(550, "5.1.1", "nope").encode() == b"550 5.1.1 nope\r\n"
    assert reply(550, "5.1.1", "nope").enhanced == "5.1.1"
    assert Reply(354, (b"go ahead",)).enhanced is None
    assert queue_id(Reply(250, (b"2.0.0 Ok: queued as 4XyZ12",))) == "4XyZ12"
    assert queue_id(Reply(250, (b"2.0.0 Ok",))) is None
