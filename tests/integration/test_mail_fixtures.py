"""Smoke tests of the real Dovecot / Postfix back-end fixtures (no proxy involved)."""

from __future__ import annotations

import imaplib
import poplib
import smtplib
import ssl
import subprocess
import uuid

import pytest

from tests.integration.directory_data import MAILBOX_USERS, MASTER_PASSWORD, MASTER_USER

pytestmark = pytest.mark.integration

ALICE = MAILBOX_USERS["alice@example.com"]
BOB = MAILBOX_USERS["bob@example.com"]


def _ctx(pki) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki.cert_file))
    ctx.check_hostname = True
    return ctx


def _inbox_subjects(imap: imaplib.IMAP4) -> list[bytes]:
    typ, data = imap.select("INBOX", readonly=True)
    assert typ == "OK", data
    typ, data = imap.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT X-BACKEND)])")
    assert typ == "OK", data
    return [part[1] for part in data if isinstance(part, tuple)]


# ------------------------------------------------------------------ Dovecot


def test_both_dovecots_share_ports_on_their_own_address(dovecot_backends, backend_hosts):
    a, b = dovecot_backends["a"], dovecot_backends["b"]
    assert (a.host, b.host) == (backend_hosts["a"], backend_hosts["b"])
    for attr in ("imap_port", "imaps_port", "pop3_port", "pop3s_port", "lmtp_port"):
        assert getattr(a, attr) == getattr(b, attr)
    assert a.is_running() and b.is_running()
    assert a.pid != b.pid


@pytest.mark.parametrize("label", ["a", "b"])
def test_imap_login_sees_welcome_of_its_backend(dovecot_backends, label):
    server = dovecot_backends[label]
    user = next(u for u in MAILBOX_USERS.values() if u.backend == label and u.password.isascii())
    with imaplib.IMAP4(server.host, server.imap_port, timeout=10) as imap:
        imap.login(user.address, user.password)
        headers = b"".join(_inbox_subjects(imap))
    assert f"Subject: Welcome to backend {label}".encode() in headers
    assert f"X-Backend: {label}".encode() in headers


def test_imap_starttls_verifies_against_test_ca(dovecot_backends, pki):
    server = dovecot_backends["a"]
    with imaplib.IMAP4(server.host, server.imap_port, timeout=10) as imap:
        assert "STARTTLS" in imap.capabilities
        imap.starttls(ssl_context=_ctx(pki))
        imap.login(ALICE.address, ALICE.password)
        assert any(b"Welcome to backend a" in s for s in _inbox_subjects(imap))


def test_imap_starttls_refused_with_wrong_ca(dovecot_backends, wrong_ca):
    server = dovecot_backends["a"]
    imap = imaplib.IMAP4(server.host, server.imap_port, timeout=10)
    try:
        with pytest.raises(ssl.SSLCertVerificationError):
            imap.starttls(ssl_context=ssl.create_default_context(cafile=str(wrong_ca.cert_file)))
    finally:
        try:
            imap.sock.close()
        except OSError:
            pass


def test_imaps(dovecot_backends, pki):
    server = dovecot_backends["b"]
    with imaplib.IMAP4_SSL(
        server.host, server.imaps_port, ssl_context=_ctx(pki), timeout=10
    ) as imap:
        imap.login(BOB.address, BOB.password)
        assert any(b"Welcome to backend b" in s for s in _inbox_subjects(imap))


def test_imap_id_x_originating_ip_lands_in_log_as_rip(dovecot_backends):
    server = dovecot_backends["a"]
    with imaplib.IMAP4(server.host, server.imap_port, timeout=10) as imap:
        typ, data = imap.xatom("ID", '("x-originating-ip" "127.9.9.9" "x-originating-port" "4242")')
        assert typ == "OK", data
        imap.login(ALICE.address, ALICE.password)
    text = server.wait_for_log("rip=127.9.9.9")
    line = next(line for line in text.splitlines() if "rip=127.9.9.9" in line)
    assert "Login: user=<alice@example.com>" in line


def test_imap_master_user_login(dovecot_backends):
    server = dovecot_backends["a"]
    with imaplib.IMAP4(server.host, server.imap_port, timeout=10) as imap:
        imap.login(f"{ALICE.address}*{MASTER_USER}", MASTER_PASSWORD)
        assert any(b"Welcome to backend a" in s for s in _inbox_subjects(imap))
    # a master login for a user this back-end does not have fails (pass = yes)
    with imaplib.IMAP4(server.host, server.imap_port, timeout=10) as imap:
        with pytest.raises(imaplib.IMAP4.error):
            imap.login(f"{BOB.address}*{MASTER_USER}", MASTER_PASSWORD)


def test_imap_sasl_plain_authzid_as_master(dovecot_backends):
    server = dovecot_backends["b"]
    with imaplib.IMAP4(server.host, server.imap_port, timeout=10) as imap:
        blob = f"{BOB.address}\0{MASTER_USER}\0{MASTER_PASSWORD}".encode()
        imap.authenticate("PLAIN", lambda _: blob)
        assert any(b"Welcome to backend b" in s for s in _inbox_subjects(imap))


@pytest.mark.parametrize("address", ["umlaut@example.com", "spacey@example.com"])
def test_awkward_passwords(dovecot_backends, address):
    """Non-ASCII (AUTHENTICATE PLAIN) and quotes/backslash/spaces (quoted LOGIN) both work."""
    user = MAILBOX_USERS[address]
    server = dovecot_backends[user.backend]
    with imaplib.IMAP4(server.host, server.imap_port, timeout=10) as imap:
        blob = f"\0{user.address}\0{user.password}".encode()
        imap.authenticate("PLAIN", lambda _: blob)
    if user.password.isascii():
        with imaplib.IMAP4(server.host, server.imap_port, timeout=10) as imap:
            imap.login(user.address, user.password)


def test_imap_wrong_password_fails(dovecot_backends):
    server = dovecot_backends["a"]
    with imaplib.IMAP4(server.host, server.imap_port, timeout=10) as imap:
        with pytest.raises(imaplib.IMAP4.error):
            imap.login(ALICE.address, "not-the-password")


def test_pop3_user_pass_and_xclient_rip(dovecot_backends):
    server = dovecot_backends["b"]
    pop = poplib.POP3(server.host, server.pop3_port, timeout=10)
    try:
        assert "STLS" in pop.capa()
        assert pop._shortcmd("XCLIENT ADDR=127.9.9.8 PORT=4243").startswith(b"+OK")
        pop.user(BOB.address)
        pop.pass_(BOB.password)
        count, _ = pop.stat()
        assert count >= 1
        _, lines, _ = pop.retr(1)
        assert b"Subject: Welcome to backend b" in lines
    finally:
        pop.quit()
    text = server.wait_for_log("rip=127.9.9.8")
    line = next(line for line in text.splitlines() if "rip=127.9.9.8" in line)
    assert "pop3-login" in line and "Login: user=<bob@example.com>" in line


def test_pop3_stls_and_pop3s(dovecot_backends, pki):
    server = dovecot_backends["a"]
    pop = poplib.POP3(server.host, server.pop3_port, timeout=10)
    try:
        pop.stls(context=_ctx(pki))
        pop.user(ALICE.address)
        pop.pass_(ALICE.password)
    finally:
        pop.quit()
    pop = poplib.POP3_SSL(server.host, server.pop3s_port, context=_ctx(pki), timeout=10)
    try:
        pop.user(ALICE.address)
        pop.pass_(ALICE.password)
        assert pop.stat()[0] >= 1
    finally:
        pop.quit()


# ------------------------------------------------------------------ Postfix


def test_postfixes_share_ports(postfix_backends, backend_hosts):
    a, b = postfix_backends["a"], postfix_backends["b"]
    assert (a.host, b.host) == (backend_hosts["a"], backend_hosts["b"])
    assert a.smtp_port == b.smtp_port and a.submission_port == b.submission_port
    assert a.is_running() and b.is_running()
    with smtplib.SMTP(a.host, a.smtp_port, timeout=10) as smtp:
        code, banner = smtp.ehlo()
        assert code == 250 and b"XCLIENT" in banner and b"STARTTLS" in banner


def test_smtp_delivers_over_lmtp_to_same_backend(postfix_backends, dovecot_backends):
    marker = f"X-Test-Marker: {uuid.uuid4()}"
    msg = (
        "From: <sender@elsewhere.test>\r\nTo: <bob@example.com>\r\nSubject: hello bob\r\n"
        f"{marker}\r\n\r\nhi\r\n"
    )
    pf = postfix_backends["b"]
    with smtplib.SMTP(pf.host, pf.smtp_port, timeout=10) as smtp:
        refused = smtp.sendmail("sender@elsewhere.test", [BOB.address], msg.encode())
        assert refused == {}
    delivered = dovecot_backends["b"].wait_for_message(BOB.address, marker.encode())
    assert b"Subject: hello bob" in delivered
    assert not any(
        marker.encode() in m for m in dovecot_backends["a"].mailbox_messages(BOB.address)
    )


def test_smtp_unknown_recipient_550(postfix_backends):
    pf = postfix_backends["a"]
    with smtplib.SMTP(pf.host, pf.smtp_port, timeout=10) as smtp:
        smtp.ehlo()
        smtp.mail("sender@elsewhere.test")
        code, reply = smtp.rcpt("nobody@example.com")
        assert code == 550 and b"5.1.1" in reply
        # a user of the other back-end is unknown here too
        code, _ = smtp.rcpt(BOB.address)
        assert code == 550


def test_unauthenticated_relay_refused(postfix_backends):
    pf = postfix_backends["a"]
    for port in (pf.smtp_port, pf.submission_port):
        with smtplib.SMTP(pf.host, port, timeout=10) as smtp:
            smtp.ehlo()
            smtp.mail("alice@example.com")
            code, reply = smtp.rcpt("someone@elsewhere.test")
            assert code == 554 and b"Relay access denied" in reply


def test_submission_xclient_login_relays(postfix_backends, pki):
    pf = postfix_backends["a"]
    with smtplib.SMTP(pf.host, pf.submission_port, timeout=10) as smtp:
        smtp.starttls(context=_ctx(pki))
        smtp.ehlo()
        code, reply = smtp.docmd("XCLIENT", "LOGIN=alice@example.com ADDR=127.9.9.7")
        assert code == 220, reply
        smtp.ehlo()
        refused = smtp.sendmail(
            ALICE.address, ["someone@elsewhere.test"], b"Subject: outbound\r\n\r\ngoes nowhere\r\n"
        )
        assert refused == {}
    text = pf.wait_for_log("sasl_username=alice@example.com")
    line = next(line for line in text.splitlines() if "sasl_username=alice@example.com" in line)
    assert "[127.9.9.7]" in line and "/submission/" in line
    pf.wait_for_log("to=<someone@elsewhere.test>, relay=none")


def test_submission_sasl_auth_via_dovecot(postfix_backends, pki):
    pf = postfix_backends["b"]
    with smtplib.SMTP(pf.host, pf.submission_port, timeout=10) as smtp:
        smtp.starttls(context=_ctx(pki))
        smtp.login(BOB.address, BOB.password)
        assert smtp.sendmail(BOB.address, ["x@elsewhere.test"], b"Subject: t\r\n\r\nx\r\n") == {}


def test_swaks(postfix_backends, dovecot_backends, pki):
    pf = postfix_backends["a"]
    marker = str(uuid.uuid4())
    res = subprocess.run(
        [
            "swaks",
            "--server",
            f"{pf.host}:{pf.smtp_port}",
            "--from",
            "swaks@elsewhere.test",
            "--to",
            ALICE.address,
            "--header",
            f"Subject: swaks {marker}",
            "--body",
            "via swaks",
            "--tls",
            "--tls-verify",
            "--tls-ca-path",
            str(pki.cert_file),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    dovecot_backends["a"].wait_for_message(ALICE.address, f"swaks {marker}".encode())


def test_add_message_appears_in_imap(dovecot_backends):
    server = dovecot_backends["b"]
    marker = f"added-{uuid.uuid4()}"
    server.add_message(BOB.address, f"Subject: {marker}\r\nX-Backend: b\r\n\r\nbody\r\n".encode())
    with imaplib.IMAP4(server.host, server.imap_port, timeout=10) as imap:
        imap.login(BOB.address, BOB.password)
        assert any(marker.encode() in s for s in _inbox_subjects(imap))
