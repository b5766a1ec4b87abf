"""The SMTP proxies end to end: a real node (twistd), real slapd, two real Postfix back-ends
delivering over LMTP into two real Dovecot back-ends.

Clients are Python's smtplib and swaks. Delivered mail is read from the back-end's
mailbox. Two special cases use what the shared fixtures cannot do: a user routed to a
closed port (file map) and a tiny in-test back-end that answers 451 to the end of DATA.
"""

from __future__ import annotations

import base64
import random
import re
import smtplib
import socket
import ssl
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from email.utils import formatdate
from pathlib import Path

import pytest

from tests.integration.configs import ldap_usermap
from tests.integration.directory_data import user
from tests.integration.node import start_node
from tests.integration.servers.ports import free_port

pytestmark = pytest.mark.integration

ALICE = user("alice@example.com")
BOB = user("bob@example.com")


# ------------------------------------------------------------------ helpers


def ldap_map(slapd: object) -> str:
    return f"""
[node]
name = "fe-smtp"

{ldap_usermap(slapd)}"""


def file_map(path: Path) -> str:
    return f"""
[[usermap]]
name = "main"
type = "file"
path = "{path}"
cache_ttl = 0
negative_cache_ttl = 0
"""


def service(
    kind: str,
    backend_port: int,
    *,
    backend_tls: str = "starttls",
    ca_file: object = None,
    extra: str = "",
) -> str:
    ca = f'backend_ca_file = "{ca_file}"\n' if ca_file is not None else ""
    domains = 'domains = ["example.com", "*.example.org"]\n' if kind == "smtp" else ""
    return f"""
[{kind}]
usermap = "main"
backend_port = {backend_port}
backend_tls = "{backend_tls}"
{ca}forward_client_address = true
hostname = "{"mx" if kind == "smtp" else "submit"}.example.com"
{domains}max_message_size = 52428800
backend_connect_timeout = 5
{extra}
"""


def listener(
    kind: str, port: int, tls: str = "none", cert: object = None, *, loopback_plaintext: bool = True
) -> str:
    text = f"""
[[{kind}.listener]]
endpoint = "tcp:port={port}:interface=127.0.0.1"
tls = "{tls}"
loopback_plaintext = {str(loopback_plaintext).lower()}
"""
    if cert is not None:
        text += f'cert_file = "{cert.cert_file}"\nkey_file = "{cert.key_file}"\n'
    return text


def client_context(pki: object) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(pki.cert_file))


def message(marker: str, to: str, sender: str = "sender@remote.test", body: bytes = b"") -> bytes:
    """A complete message (every header Postfix would otherwise add), CRLF line ends."""
    head = (
        f"From: <{sender}>\r\nTo: <{to}>\r\nSubject: {marker}\r\n"
        f"Date: {formatdate()}\r\nMessage-ID: <{marker}@remote.test>\r\n\r\n"
    ).encode()
    return head + (body or f"Hello, {marker}.\r\n".encode())


def count_messages(dovecot: object, address: str, marker: str) -> int:
    return sum(1 for m in dovecot.mailbox_messages(address) if marker.encode() in m)


def wait_exactly_once(dovecot: object, address: str, marker: str) -> bytes:
    msg = dovecot.wait_for_message(address, marker.encode(), timeout=30)
    time.sleep(1.0)  # a duplicate would be delivered by now (same queue run)
    assert count_messages(dovecot, address, marker) == 1
    return msg


def unique_source() -> str:
    """A loopback source address no other test uses, to find in the back-end's log."""
    rng = random.SystemRandom()
    return f"127.{rng.randint(100, 250)}.{rng.randint(1, 250)}.{rng.randint(2, 250)}"


def vm_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


class RSSSampler(threading.Thread):
    """Samples a process's VmRSS every 20 ms until stopped; C{peak} in KiB."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.baseline = vm_rss_kib(pid)
        self.peak = self.baseline
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.peak = max(self.peak, vm_rss_kib(self.pid))
            time.sleep(0.02)

    def stop(self) -> int:
        self._stop_event.set()
        self.join()
        return self.peak - self.baseline


# ------------------------------------------------------------------- nodes


@pytest.fixture(scope="module")
def main_node(
    tmp_path_factory: pytest.TempPathFactory,
    slapd: object,
    pki: object,
    node_cert: object,
    postfix_backends: dict,
) -> Iterator[dict]:
    """LDAP map; verified STARTTLS to the Postfix back-ends; listeners: inbound STARTTLS,
    submission STARTTLS, submission implicit TLS, submission STARTTLS without the
    loopback exemption (stands for a remote client)."""
    ports = {
        "mx": free_port(),
        "submission": free_port(),
        "smtps": free_port(),
        "strict": free_port(),
    }
    a = postfix_backends["a"]
    config = (
        ldap_map(slapd)
        + service("smtp", a.smtp_port, ca_file=pki.cert_file)
        + listener("smtp", ports["mx"], "starttls", node_cert)
        + service("submission", a.submission_port, ca_file=pki.cert_file)
        + listener("submission", ports["submission"], "starttls", node_cert)
        + listener("submission", ports["smtps"], "implicit", node_cert)
        + listener("submission", ports["strict"], "starttls", node_cert, loopback_plaintext=False)
    )
    node = start_node(
        tmp_path_factory.mktemp("smtp-main"), config, [("127.0.0.1", p) for p in ports.values()]
    )
    try:
        yield {"node": node, **ports}
    finally:
        node.stop()


class DeferringBackend(threading.Thread):
    """A minimal SMTP back-end that takes the whole message and then says 451."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(5)
        self.port = self.sock.getsockname()[1]
        self.messages: list[bytes] = []
        self.commands: list[bytes] = []

    def run(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        f = conn.makefile("rb")
        conn.sendall(b"220 deferring.test ESMTP\r\n")
        try:
            for line in f:
                verb = line[:4].upper()
                self.commands.append(line.rstrip(b"\r\n"))
                if verb == b"EHLO":
                    conn.sendall(b"250-deferring.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n")
                elif verb == b"DATA":
                    conn.sendall(b"354 go ahead\r\n")
                    body = b""
                    for data_line in f:
                        if data_line == b".\r\n":
                            break
                        body += data_line
                    self.messages.append(body)
                    conn.sendall(b"451 4.3.0 Back-end is busy, try again later\r\n")
                elif verb == b"QUIT":
                    conn.sendall(b"221 2.0.0 Bye\r\n")
                    break
                else:
                    conn.sendall(b"250 2.0.0 Ok\r\n")
        finally:
            conn.close()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(scope="module")
def file_node(
    tmp_path_factory: pytest.TempPathFactory, pki: object, postfix_backends: dict
) -> Iterator[dict]:
    """A file map routing one user to a closed port and one to the deferring back-end,
    and alice to Postfix a with no password stored (routing only), behind submission."""
    directory = tmp_path_factory.mktemp("smtp-file")
    deferring = DeferringBackend()
    deferring.start()
    closed_port = free_port()  # nothing listens there
    a = postfix_backends["a"]
    (directory / "users.map").write_text(
        f"down@example.com 127.0.0.1:{closed_port}\nbusy@example.com 127.0.0.1:{deferring.port}\n"
        f"{ALICE.address} {a.host}\n"
    )
    port, submission = free_port(), free_port()
    config = (
        file_map(directory / "users.map")
        + service("smtp", 25, backend_tls="none")
        + listener("smtp", port)
        + service("submission", a.submission_port, ca_file=pki.cert_file)
        + listener("submission", submission)
    )
    node = start_node(directory, config, [("127.0.0.1", port), ("127.0.0.1", submission)])
    try:
        yield {"node": node, "port": port, "submission": submission, "deferring": deferring}
    finally:
        node.stop()
        deferring.close()


def mx(main_node: dict, pki: object, source: str | None = None) -> smtplib.SMTP:
    c = smtplib.SMTP(
        "127.0.0.1",
        main_node["mx"],
        local_hostname="client.remote.test",
        timeout=60,
        source_address=(source, 0) if source else None,
    )
    c.starttls(context=client_context(pki))
    c.ehlo("client.remote.test")
    return c


# ----------------------------------------------------------------- inbound


def test_messages_reach_the_mailbox_on_the_owners_backend(
    main_node: dict, pki: object, dovecot_backends: dict, postfix_backends: dict
) -> None:
    marker_a, marker_b = f"to-alice-{uuid.uuid4().hex}", f"to-bob-{uuid.uuid4().hex}"
    source = unique_source()
    c = mx(main_node, pki, source)
    assert c.sendmail("sender@remote.test", [ALICE.address], message(marker_a, ALICE.address)) == {}
    assert c.sendmail("sender@remote.test", [BOB.address], message(marker_b, BOB.address)) == {}
    c.quit()
    delivered = wait_exactly_once(dovecot_backends["a"], ALICE.address, marker_a)
    wait_exactly_once(dovecot_backends["b"], BOB.address, marker_b)
    assert count_messages(dovecot_backends["b"], BOB.address, marker_a) == 0
    # the back-end saw the real client (XCLIENT ADDR= and HELO=), not the node
    assert f"Received: from client.remote.test (unknown [{source}])".encode() in delivered
    assert f"client=unknown[{source}]" in postfix_backends["b"].wait_for_log(f"[{source}]")
    log = main_node["node"].log_text()
    a, b = postfix_backends["a"], postfix_backends["b"]
    assert re.search(
        rf"rcpt <alice@example\.com> from <sender@remote\.test>: accepted .*"
        rf" back-end {a.host}:{a.smtp_port}",
        log,
    )
    assert re.search(
        rf"message from <sender@remote\.test> accepted by {b.host}:{b.smtp_port}:"
        rf" size=\d+ queue-id=\w+",
        log,
    )
    assert f"back-end {a.host}:{a.smtp_port}, session opened (client address via XCLIENT)" in log


def test_swaks_delivers_through_the_node(main_node: dict, dovecot_backends: dict) -> None:
    marker = f"swaks-{uuid.uuid4().hex}"
    res = subprocess.run(
        [
            "swaks",
            "--server",
            f"127.0.0.1:{main_node['mx']}",
            "--tls",
            "--ehlo",
            "swaks.remote.test",
            "--from",
            "sender@remote.test",
            "--to",
            BOB.address,
            "--header",
            f"Subject: {marker}",
            "--body",
            f"body of {marker}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert "<~  250 2.0.0 Ok: queued as" in res.stdout
    wait_exactly_once(dovecot_backends["b"], BOB.address, marker)


def test_recipients_on_two_backends_second_gets_452_then_retry_delivers_both_once(
    main_node: dict, pki: object, dovecot_backends: dict
) -> None:
    marker = f"two-backends-{uuid.uuid4().hex}"
    msg = message(marker, "alice@example.com, bob@example.com")
    c = mx(main_node, pki)
    refused = c.sendmail("sender@remote.test", [ALICE.address, BOB.address], msg)
    assert refused == {
        BOB.address: (452, b"4.5.3 Too many recipients for this transaction; try again")
    }
    # the sender's retry for the refused recipient, in a new transaction
    assert c.sendmail("sender@remote.test", [BOB.address], msg) == {}
    c.quit()
    wait_exactly_once(dovecot_backends["a"], ALICE.address, marker)
    wait_exactly_once(dovecot_backends["b"], BOB.address, marker)
    assert count_messages(dovecot_backends["a"], BOB.address, marker) == 0


def test_unknown_user_is_550_511(main_node: dict, pki: object) -> None:
    c = mx(main_node, pki)
    c.mail("sender@remote.test")
    code, text = c.rcpt("nobody-here@example.com")
    assert (code, text[:5]) == (550, b"5.1.1")
    c.quit()
    assert (
        "rcpt <nobody-here@example.com> from <sender@remote.test>: unknown user"
        in main_node["node"].log_text()
    )


def test_not_an_open_relay(main_node: dict, pki: object) -> None:
    c = mx(main_node, pki)
    c.mail("spammer@remote.test")
    assert c.rcpt("victim@elsewhere.test") == (550, b"5.7.1 Relaying denied")
    assert c.rcpt("victim@example.org") == (
        550,
        b"5.7.1 Relaying denied",
    )  # parent of *.example.org
    c.quit()
    # and submission without AUTH takes nothing at all
    s = smtplib.SMTP("127.0.0.1", main_node["submission"], timeout=30)
    s.starttls(context=client_context(pki))
    s.ehlo()
    code, text = s.mail("spammer@remote.test")
    assert (code, text) == (530, b"5.7.0 Authentication required")
    s.quit()


def test_30_mb_message_is_byte_identical_and_node_memory_stays_bounded(
    main_node: dict, pki: object, dovecot_backends: dict
) -> None:
    marker = f"big-{uuid.uuid4().hex}"
    rng = random.Random(30)
    lines = []
    size = 0
    while size < 30 * 1024 * 1024:
        line = base64.b64encode(rng.randbytes(57)) + b"\r\n"
        if rng.random() < 0.01:
            line = b"." + line  # dot-stuffed on the wire, must come back unstuffed
        lines.append(line)
        size += len(line)
    msg = message(marker, ALICE.address, body=b"".join(lines))
    del lines
    node = main_node["node"]
    sampler = RSSSampler(node.pid())
    sampler.start()
    c = mx(main_node, pki)
    try:
        assert c.sendmail("sender@remote.test", [ALICE.address], msg) == {}
    finally:
        growth = sampler.stop()
        c.quit()
    print(f"node VmRSS growth during the 30 MB message (TLS on both legs): {growth} KiB")
    assert growth < 20 * 1024, f"node VmRSS grew by {growth} KiB during a 30 MB message"
    delivered = dovecot_backends["a"].wait_for_message(ALICE.address, marker.encode(), timeout=120)
    # the maildir stores LF line ends; Postfix and Dovecot prepend trace headers
    assert delivered.endswith(msg.replace(b"\r\n", b"\n"))
    on_the_wire = len(re.sub(rb"(?m)^\.", b"..", msg))  # size counts octets as sent, dots stuffed
    node.wait_for_log(f"size={on_the_wire} ")


# ----------------------------------------------------------------- special back-ends


def test_backend_down_is_451_441(file_node: dict) -> None:
    c = smtplib.SMTP("127.0.0.1", file_node["port"], timeout=30)
    c.ehlo("client.remote.test")
    c.mail("sender@remote.test")
    assert c.rcpt("down@example.com") == (451, b"4.4.1 Mailbox server unavailable, try again later")
    c.quit()
    assert "back-end 127.0.0.1:" in file_node["node"].wait_for_log("unavailable: cannot connect")


def test_backend_4xx_at_end_of_data_stays_4xx(file_node: dict) -> None:
    marker = f"busy-{uuid.uuid4().hex}"
    c = smtplib.SMTP("127.0.0.1", file_node["port"], timeout=30)
    c.ehlo("client.remote.test")
    with pytest.raises(smtplib.SMTPDataError) as e:
        c.sendmail("sender@remote.test", ["busy@example.com"], message(marker, "busy@example.com"))
    assert (e.value.smtp_code, e.value.smtp_error) == (
        451,
        b"4.3.0 Back-end is busy, try again later",
    )
    c.quit()
    assert any(marker.encode() in m for m in file_node["deferring"].messages)
    assert "not accepted (451 4.3.0 Back-end is busy" in file_node["node"].log_text()


# ----------------------------------------------------------------- submission


def test_submission_auth_over_starttls_relays_as_the_user_via_xclient(
    main_node: dict, pki: object, postfix_backends: dict, dovecot_backends: dict
) -> None:
    marker = f"submitted-{uuid.uuid4().hex}"
    c = smtplib.SMTP("127.0.0.1", main_node["submission"], local_hostname="laptop.test", timeout=30)
    c.starttls(context=client_context(pki))
    c.ehlo("laptop.test")
    assert "auth" in c.esmtp_features
    c.login(ALICE.address, ALICE.password)
    # to herself (delivered on her back-end) and to the outside (relayed only for a login)
    refused = c.sendmail(
        ALICE.address,
        [ALICE.address, "friend@elsewhere.test"],
        message(marker, ALICE.address, ALICE.address),
    )
    assert refused == {}
    c.quit()
    wait_exactly_once(dovecot_backends["a"], ALICE.address, marker)
    log = postfix_backends["a"].wait_for_log("sasl_username=alice@example.com")
    assert re.search(
        r"client=\S*\[127\.0\.0\.1\].*sasl_method=XCLIENT, sasl_username=alice@example\.com", log
    )
    assert "submission" in log
    node_log = main_node["node"].log_text()
    assert "AUTH ok for alice@example.com: back-end session" in node_log
    assert ALICE.password not in node_log


def test_submission_on_implicit_tls_with_swaks(
    main_node: dict, postfix_backends: dict, dovecot_backends: dict
) -> None:
    marker = f"smtps-{uuid.uuid4().hex}"
    res = subprocess.run(
        [
            "swaks",
            "--server",
            f"127.0.0.1:{main_node['smtps']}",
            "--tlsc",
            "--ehlo",
            "phone.test",
            "--auth",
            "PLAIN",
            "--auth-user",
            BOB.address,
            "--auth-password",
            BOB.password,
            "--from",
            BOB.address,
            "--to",
            BOB.address,
            "--header",
            f"Subject: {marker}",
            "--body",
            marker,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert "<~  235 2.7.0 Authentication successful" in res.stdout
    delivered = wait_exactly_once(dovecot_backends["b"], BOB.address, marker)
    assert b"Received: from phone.test (unknown [127.0.0.1])" in delivered  # XCLIENT HELO=
    log = postfix_backends["b"].wait_for_log("sasl_username=bob@example.com")
    assert re.search(
        r"client=unknown\[127\.0\.0\.1\], sasl_method=XCLIENT, sasl_username=bob@example\.com", log
    )


def test_wrong_password_is_535_578(main_node: dict, pki: object) -> None:
    c = smtplib.SMTP("127.0.0.1", main_node["submission"], timeout=30)
    c.starttls(context=client_context(pki))
    c.ehlo()
    with pytest.raises(smtplib.SMTPAuthenticationError) as e:
        c.login(ALICE.address, "wrong")
    assert (e.value.smtp_code, e.value.smtp_error) == (
        535,
        b"5.7.8 Authentication credentials invalid",
    )
    c.close()


def test_after_auth_xclient_from_the_client_never_reaches_postfix(
    main_node: dict, pki: object, dovecot_backends: dict
) -> None:
    """Postfix honours XCLIENT from the node at any time: a logged-in user must not be able
    to become someone else with it. Message content that looks like it is left alone."""
    marker = f"guard-{uuid.uuid4().hex}"
    c = smtplib.SMTP("127.0.0.1", main_node["submission"], timeout=30)
    c.starttls(context=client_context(pki))
    c.ehlo()
    c.login(ALICE.address, ALICE.password)
    code, _ = c.docmd(f"XCLIENT LOGIN={BOB.address}")
    assert code == 500  # Postfix's own "5.5.2 Error: command not recognized"
    assert c.docmd("XFORWARD ADDR=192.0.2.66")[0] == 500
    body = f"XCLIENT LOGIN={BOB.address}\r\n".encode()
    mail = message(marker, ALICE.address, ALICE.address, body)
    assert c.sendmail(ALICE.address, [ALICE.address], mail) == {}
    c.quit()
    got = dovecot_backends["a"].wait_for_message(ALICE.address, marker.encode(), timeout=30)
    assert body.replace(b"\r\n", b"\n") in got.replace(b"\r\n", b"\n")
    assert "refused XCLIENT from user alice@example.com" in main_node["node"].wait_for_log(
        "refused XFORWARD"
    )


def test_submission_refuses_a_user_the_map_stores_no_password_for(file_node: dict) -> None:
    """Postfix takes XCLIENT LOGIN= on trust: a route-only map line must not let any
    password in (it would make the node an open relay for that user's name)."""
    c = smtplib.SMTP("127.0.0.1", file_node["submission"], timeout=30)
    c.ehlo()
    with pytest.raises(smtplib.SMTPAuthenticationError) as e:
        c.login(ALICE.address, "any password at all")
    assert e.value.smtp_code == 535
    c.close()
    log = file_node["node"].wait_for_log("no password for this user")
    assert "any password at all" not in log


def test_auth_is_neither_offered_nor_taken_before_tls_from_a_non_loopback_peer(
    main_node: dict, pki: object, postfix_backends: dict
) -> None:
    source = "127.0.0.5"  # loopback_plaintext = false: stands for a remote client
    c = smtplib.SMTP("127.0.0.1", main_node["strict"], source_address=(source, 0), timeout=30)
    c.ehlo("remote-laptop.test")
    assert "auth" not in c.esmtp_features
    plain = base64.b64encode(f"\0{ALICE.address}\0{ALICE.password}".encode()).decode()
    code, text = c.docmd("AUTH", "PLAIN " + plain)
    assert (code, text[:6]) == (538, b"5.7.11")
    c.starttls(context=client_context(pki))
    c.ehlo("remote-laptop.test")
    assert "auth" in c.esmtp_features
    c.login(ALICE.address, ALICE.password)
    assert (
        c.sendmail(
            ALICE.address,
            ["friend@elsewhere.test"],
            message("strict", "friend@elsewhere.test", ALICE.address),
        )
        == {}
    )
    c.quit()
    log = postfix_backends["a"].wait_for_log(f"[{source}]")
    assert re.search(rf"client=\S*\[{re.escape(source)}\].*sasl_username=alice@example\.com", log)
    assert "AUTH refused: no TLS on a connection from 127.0.0.5" in main_node["node"].log_text()
