"""Submission: AUTH on the node (only where a password may cross), then XCLIENT and relay."""

from __future__ import annotations

import base64

from axigen_fe.config.model import TLSMode
from tests.unit.test_smtp_support import Client, Script, captured_log, plain, smtp_config

LOOPBACK = "127.0.0.1"


def sub(**kw: object) -> Client:
    kw.setdefault("peer", LOOPBACK)
    return Client(submission=True, **kw)  # type: ignore[arg-type]


def test_ehlo_offers_auth_to_a_loopback_peer_without_tls() -> None:
    c = sub()
    assert c.ehlo().endswith(b"250-ENHANCEDSTATUSCODES\r\n250 AUTH PLAIN LOGIN\r\n")


def test_no_auth_before_tls_for_a_remote_peer() -> None:
    with captured_log() as log:
        c = sub(peer="192.0.2.7", listener_tls=TLSMode.STARTTLS)
        ehlo = c.ehlo()
        assert b"AUTH" not in ehlo
        assert b"STARTTLS" in ehlo
        assert c.send(
            b"AUTH PLAIN " + plain("alice@example.com", "alice-secret") + b"\r\n"
        ).startswith(b"538 5.7.11")
    assert c.map.lookups == []
    assert "AUTH refused: no TLS" in "\n".join(log)
    c.send(b"STARTTLS\r\n")
    assert c.ehlo().endswith(b"250 AUTH PLAIN LOGIN\r\n")


def test_loopback_exemption_can_be_turned_off() -> None:
    c = sub(loopback_plaintext=False, listener_tls=TLSMode.STARTTLS)
    assert b"AUTH" not in c.ehlo()


def test_implicit_tls_offers_auth_at_once() -> None:
    c = sub(peer="192.0.2.7", listener_tls=TLSMode.IMPLICIT)
    assert c.ehlo().endswith(b"250 AUTH PLAIN LOGIN\r\n")


def test_mail_rcpt_data_before_auth_get_530() -> None:
    c = sub()
    c.ehlo()
    for line in (b"MAIL FROM:<alice@example.com>", b"RCPT TO:<x@y.test>", b"DATA"):
        assert c.send(line + b"\r\n") == b"530 5.7.0 Authentication required\r\n"


def test_auth_needs_ehlo_first() -> None:
    c = sub()
    assert c.send(b"AUTH PLAIN " + plain("alice@example.com", "alice-secret") + b"\r\n").startswith(
        b"503 5.5.1"
    )


def test_auth_plain_opens_the_users_backend_with_xclient_login_then_relays() -> None:
    with captured_log() as log:
        c = sub(peer="192.0.2.7", listener_tls=TLSMode.IMPLICIT)
        c.ehlo(b"laptop.example.net")
        out = c.send(b"AUTH PLAIN " + plain("alice@example.com", "alice-secret") + b"\r\n")
        assert out == b"235 2.7.0 Authentication successful\r\n"
        (mta,) = c.backends()
        assert (mta.host, mta.port) == ("10.0.0.1", 587)
        assert mta.commands == [
            b"EHLO mx.example.com",
            b"XCLIENT ADDR=192.0.2.7 PORT=4321 NAME=[UNAVAILABLE] PROTO=ESMTP"
            b" HELO=laptop.example.net LOGIN=alice@example.com",
            b"EHLO laptop.example.net",
        ]
        # from now on bytes go through untouched, both ways
        out = c.send(
            b"MAIL FROM:<alice@example.com>\r\nRCPT TO:<friend@elsewhere.test>\r\nDATA\r\n"
        )
        assert out == b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n"
        assert c.send(b"..x\r\n.\r\n") == b"250 2.0.0 Ok: queued as ABC123\r\n"
        assert mta.messages == [b"..x\r\n.\r\n"]
        c.send(b"QUIT\r\n")
        assert c.transport.disconnecting
    text = "\n".join(log)
    assert "AUTH ok for alice@example.com: back-end session 10.0.0.1:587 opened" in text
    assert "alice-secret" not in text


def test_after_auth_the_client_cannot_change_who_the_session_is() -> None:
    """XCLIENT/XFORWARD/STARTTLS never reach the back-end, which trusts the node's XCLIENT."""
    with captured_log() as log:
        c = sub()
        c.ehlo()
        c.send(b"AUTH PLAIN " + plain("alice@example.com", "alice-secret") + b"\r\n")
        (mta,) = c.backends()
        c.send(b"XCLIENT LOGIN=bob@example.com\r\nNOOP\r\n")
        assert mta.commands[-2:] == [b"X-REFUSED-BY-PROXY", b"NOOP"]
    assert any("refused XCLIENT from user alice@example.com" in line for line in log)


def test_auth_plain_with_an_empty_challenge() -> None:
    c = sub()
    c.ehlo()
    assert c.send(b"AUTH PLAIN\r\n") == b"334 \r\n"
    assert c.send(plain("bob@example.com", "bob-secret") + b"\r\n").startswith(b"235 2.7.0")
    assert c.backends()[0].host == "10.0.0.2"
    assert c.map.lookups == [("bob@example.com", b"bob-secret")]


def test_auth_login_in_two_steps() -> None:
    c = sub()
    c.ehlo()
    assert c.send(b"AUTH LOGIN\r\n") == b"334 VXNlcm5hbWU6\r\n"
    assert c.send(base64.b64encode(b"alice@example.com") + b"\r\n") == b"334 UGFzc3dvcmQ6\r\n"
    assert c.send(base64.b64encode(b"alice-secret") + b"\r\n").startswith(b"235 2.7.0")


def test_auth_login_with_initial_user() -> None:
    c = sub()
    c.ehlo()
    assert (
        c.send(b"AUTH LOGIN " + base64.b64encode(b"alice@example.com") + b"\r\n")
        == b"334 UGFzc3dvcmQ6\r\n"
    )
    assert c.send(base64.b64encode(b"alice-secret") + b"\r\n").startswith(b"235 2.7.0")


def test_wrong_password_and_unknown_user_look_the_same() -> None:
    with captured_log() as log:
        c = sub()
        c.ehlo()
        wrong = c.send(b"AUTH PLAIN " + plain("alice@example.com", "nope") + b"\r\n")
        unknown = c.send(b"AUTH PLAIN " + plain("nobody@example.com", "nope") + b"\r\n")
    assert wrong == unknown == b"535 5.7.8 Authentication credentials invalid\r\n"
    assert c.backends() == []
    text = "\n".join(log)
    assert "AUTH failed for alice@example.com: bad-password" in text
    assert "AUTH failed for nobody@example.com: unknown-user" in text
    assert "nope" not in text


def test_a_user_the_map_stores_no_password_for_cannot_authenticate() -> None:
    """The back-end takes XCLIENT LOGIN= on trust: routing only must not let anyone in."""
    c = sub(users={"carol@example.com": ("10.0.0.3", None)})
    c.ehlo()
    out = c.send(b"AUTH PLAIN " + plain("carol@example.com", "anything") + b"\r\n")
    assert out == b"535 5.7.8 Authentication credentials invalid\r\n"
    assert c.backends() == []


def test_directory_outage_is_454_not_535() -> None:
    c = sub()
    c.ehlo()
    c.map.outage = "ldap down"
    assert c.send(b"AUTH PLAIN " + plain("alice@example.com", "alice-secret") + b"\r\n") == (
        b"454 4.7.0 Temporary authentication failure\r\n"
    )
    assert c.session.auth_errors == 0  # type: ignore[attr-defined]


def test_max_auth_errors_closes_with_421() -> None:
    c = sub()
    c.ehlo()
    bad = b"AUTH PLAIN " + plain("alice@example.com", "nope") + b"\r\n"
    c.send(bad)
    c.send(bad)
    out = c.send(bad)
    assert (
        out == b"535 5.7.8 Authentication credentials invalid\r\n"
        b"421 4.7.0 Error: too many failed authentications, closing connection\r\n"
    )
    assert c.transport.disconnecting


def test_authzid_other_than_the_user_is_refused() -> None:
    c = sub()
    c.ehlo()
    out = c.send(
        b"AUTH PLAIN "
        + plain("alice@example.com", "alice-secret", authzid="bob@example.com")
        + b"\r\n"
    )
    assert out.startswith(b"535 5.7.8")


def test_cancel_bad_base64_unknown_mechanism() -> None:
    c = sub()
    c.ehlo()
    c.send(b"AUTH PLAIN\r\n")
    assert c.send(b"*\r\n").startswith(b"501 5.0.0")
    assert c.send(b"AUTH PLAIN !!!\r\n").startswith(b"501 5.5.2")
    assert c.send(b"AUTH CRAM-MD5\r\n").startswith(b"504 5.5.4")
    assert c.send(b"NOOP\r\n") == b"250 2.0.0 Ok\r\n"


def test_backend_without_xclient_is_a_temporary_failure() -> None:
    with captured_log() as log:
        c = sub(script=Script(caps=[b"PIPELINING", b"AUTH PLAIN"]))
        c.ehlo()
        out = c.send(b"AUTH PLAIN " + plain("alice@example.com", "alice-secret") + b"\r\n")
    assert out == b"454 4.7.0 Temporary authentication failure\r\n"
    assert "does not offer XCLIENT" in "\n".join(log)


def test_backend_down_is_a_temporary_failure() -> None:
    c = sub()
    c.connector.down.add(("10.0.0.1", 587))
    c.ehlo()
    assert c.send(b"AUTH PLAIN " + plain("alice@example.com", "alice-secret") + b"\r\n").startswith(
        b"454 4.7.0"
    )


def test_backend_starttls_before_xclient_login() -> None:
    c = sub(script=Script(starttls=True), backend_tls=TLSMode.STARTTLS)
    c.ehlo()
    assert c.send(b"AUTH PLAIN " + plain("alice@example.com", "alice-secret") + b"\r\n").startswith(
        b"235"
    )
    cmds = c.backends()[0].commands
    assert cmds[:3] == [b"EHLO mx.example.com", b"STARTTLS", b"EHLO mx.example.com"]
    assert cmds[3].endswith(b"LOGIN=alice@example.com")


def test_login_name_is_xtext_encoded() -> None:
    users = {"o+d=d@example.com": ("10.0.0.1", "{PLAIN}pw")}
    c = sub(users=users)
    c.ehlo()
    assert c.send(b"AUTH PLAIN " + plain("o+d=d@example.com", "pw") + b"\r\n").startswith(b"235")
    assert c.backends()[0].commands[1].endswith(b"LOGIN=o+2Bd+3Dd@example.com")


def test_backend_closing_ends_the_client_session() -> None:
    c = sub()
    c.ehlo()
    c.send(b"AUTH PLAIN " + plain("alice@example.com", "alice-secret") + b"\r\n")
    c.connector.pumps[0].serverIO.loseConnection()
    c.connector.flush()
    assert c.transport.disconnecting


def test_forward_client_address_off_still_sends_login() -> None:
    cfg = smtp_config(
        kind="submission", require_auth=True, backend_port=587, forward_client_address=False
    )
    c = Client(submission=True, cfg=cfg, peer=LOOPBACK)
    c.ehlo()
    c.send(b"AUTH PLAIN " + plain("alice@example.com", "alice-secret") + b"\r\n")
    assert c.backends()[0].commands[1] == b"XCLIENT LOGIN=alice@example.com"
