"""The IMAP proxy end to end: a real node (twistd), real slapd, two real Dovecot back-ends.

Clients are Python's imaplib, or a raw socket where imaplib cannot say what a test
needs (literals, SASL-IR, pipelining, non-ASCII passwords). Every node here runs in its
own temp dir on free ports; the shared slapd and Dovecot instances are never stopped.
"""

from __future__ import annotations

import base64
import imaplib
import os
import random
import re
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.clients import SourceIMAP4
from tests.integration.configs import ldap_usermap
from tests.integration.directory_data import (
    MASTER_PASSWORD,
    MASTER_USER,
    stored_password,
    user,
)
from tests.integration.node import Node, start_node
from tests.integration.servers.ports import free_port

pytestmark = pytest.mark.integration

ALICE = user("alice@example.com")
BOB = user("bob@example.com")
SPACEY = user("spacey@example.com")
UMLAUT = user("umlaut@example.com")
NOHASH = user("u-md5@example.com")  # a Dovecot user the file map stores no hash for
AUTH_FAILED = "[AUTHENTICATIONFAILED] Authentication failed."


# ------------------------------------------------------------------ helpers


def ldap_map(slapd: object, *, cache_ttl: float = 60, negative_ttl: float = 10) -> str:
    """An ldap-password user map against C{slapd} (StartTLS, verified)."""
    return f"""
{ldap_usermap(slapd, cache_ttl=cache_ttl, negative_ttl=negative_ttl)}"""


def imap_section(
    backend_port: int,
    *,
    backend_tls: str = "starttls",
    ca_file: Path | None = None,
    extra: str = "",
) -> str:
    ca = f'backend_ca_file = "{ca_file}"\n' if ca_file is not None else ""
    return f"""
[imap]
usermap = "main"
backend_port = {backend_port}
backend_tls = "{backend_tls}"
{ca}forward_client_address = true
max_auth_errors = 3
backend_connect_timeout = 5
{extra}
"""


def listener(
    port: int, tls: str = "none", cert: object | None = None, *, loopback_plaintext: bool = True
) -> str:
    text = f"""
[[imap.listener]]
endpoint = "tcp:port={port}:interface=127.0.0.1"
tls = "{tls}"
loopback_plaintext = {str(loopback_plaintext).lower()}
"""
    if cert is not None:
        text += f'cert_file = "{cert.cert_file}"\nkey_file = "{cert.key_file}"\n'
    return text


def run_node(directory: Path, config: str, ports: list[int]) -> Node:
    return start_node(directory, config, [("127.0.0.1", p) for p in ports])


class Raw:
    """A line-oriented raw IMAP client for what imaplib cannot send."""

    def __init__(self, port: int, *, tls: ssl.SSLContext | None = None) -> None:
        sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.sock: socket.socket = (
            tls.wrap_socket(sock, server_hostname="127.0.0.1") if tls else sock
        )
        self.buffer = b""
        self.greeting = self.line()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def line(self) -> bytes:
        while b"\r\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError(f"connection closed; pending {self.buffer!r}")
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\r\n")
        return line

    def until(self, tag: bytes) -> list[bytes]:
        """Lines up to and including the tagged response for C{tag}."""
        lines = []
        while True:
            line = self.line()
            lines.append(line)
            if line.startswith(tag + b" "):
                return lines

    def starttls(self, ctx: ssl.SSLContext, tag: bytes = b"s") -> None:
        self.send(tag + b" STARTTLS\r\n")
        assert self.until(tag)[-1].startswith(tag + b" OK")
        assert self.buffer == b""
        self.sock = ctx.wrap_socket(self.sock, server_hostname="127.0.0.1")

    def closed(self) -> bool:
        """True once the server closed the connection (EOF after what is buffered)."""
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.sock.close()


def client_context(pki: object) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(pki.cert_file))


def welcome_backend(c: imaplib.IMAP4) -> str:
    """Which back-end C{c} is logged in to: the X-Backend header of the seeded message."""
    typ, data = c.select("INBOX", readonly=True)
    assert typ == "OK", data
    # other test modules deliver into the same shared mailboxes (SMTP, POP3), so the
    # seeded message is found by its header rather than assumed to be number 1
    typ, found = c.search(None, "HEADER", "X-Backend", '""')
    assert typ == "OK" and found[0], found
    first = found[0].split()[0].decode()
    typ, data = c.fetch(first, "(BODY.PEEK[HEADER.FIELDS (SUBJECT X-BACKEND)])")
    assert typ == "OK", data
    header = data[0][1].decode()
    m = re.search(r"X-Backend: (\w+)", header)
    assert m and f"Welcome to backend {m.group(1)}" in header, header
    return m.group(1)


def unique_source() -> str:
    """A loopback source address no other test uses, to find in the back-end's log."""
    rng = random.SystemRandom()
    return f"127.{rng.randint(100, 250)}.{rng.randint(1, 250)}.{rng.randint(2, 250)}"


# ------------------------------------------------------------------- nodes


@pytest.fixture(scope="module")
def main_node(
    tmp_path_factory: pytest.TempPathFactory,
    slapd: object,
    pki: object,
    node_cert: object,
    dovecot_backends: dict,
) -> Iterator[dict]:
    """LDAP map, STARTTLS (verified) to the back-ends, three client listeners:
    STARTTLS with loopback plaintext allowed, implicit TLS, and STARTTLS strict."""
    ports = {"starttls": free_port(), "implicit": free_port(), "strict": free_port()}
    backend_port = dovecot_backends["a"].imap_port
    config = (
        ldap_map(slapd)
        + imap_section(backend_port, ca_file=pki.cert_file)
        + listener(ports["starttls"], "starttls", node_cert)
        + listener(ports["implicit"], "implicit", node_cert)
        + listener(ports["strict"], "starttls", node_cert, loopback_plaintext=False)
    )
    node = run_node(tmp_path_factory.mktemp("imap-main"), config, list(ports.values()))
    try:
        yield {"node": node, **ports}
    finally:
        node.stop()


# ----------------------------------------------------------------- routing


def test_users_reach_their_own_backend(main_node: dict, pki: object) -> None:
    for u, expected in ((ALICE, "a"), (BOB, "b")):
        c = imaplib.IMAP4("127.0.0.1", main_node["starttls"], timeout=30)
        c.starttls(client_context(pki))
        c.login(u.address, u.password)
        assert welcome_backend(c) == expected
        c.logout()
    log = main_node["node"].log_text()
    assert re.search(
        r"login ok: user alice@example\.com from 127\.0\.0\.1:\d+ routed to 127\.[\d.]+\.1:\d+", log
    )
    assert re.search(r"login ok: user bob@example\.com from .* routed to 127\.[\d.]+\.2:\d+", log)


def login_capabilities(c: imaplib.IMAP4, u: object) -> list[bytes]:
    """What the server announces with a successful login (response code or untagged)."""
    c.untagged_responses.pop("CAPABILITY", None)
    typ, data = c.login(u.address, u.password)
    m = re.match(rb"\[CAPABILITY ([^\]]*)\]", data[0])
    return (m.group(1) if m else c.untagged_responses["CAPABILITY"][-1]).split()


def test_post_login_capabilities_are_the_backends(
    main_node: dict, pki: object, dovecot_backends: dict
) -> None:
    direct = imaplib.IMAP4(dovecot_backends["a"].host, dovecot_backends["a"].imap_port, timeout=30)
    direct_caps = login_capabilities(direct, ALICE)
    direct.logout()

    c = imaplib.IMAP4("127.0.0.1", main_node["starttls"], timeout=30)
    c.starttls(client_context(pki))
    typ, data = c.login(ALICE.address, ALICE.password)
    proxied = re.match(rb"\[CAPABILITY ([^\]]*)\] ", data[0])  # in the tagged OK itself
    c.logout()
    assert proxied is not None and proxied.group(1).split() == direct_caps


# ------------------------------------------------------------ credentials


def test_login_with_spaces_quotes_and_backslash(main_node: dict) -> None:
    c = imaplib.IMAP4("127.0.0.1", main_node["starttls"], timeout=30)
    c.login(SPACEY.address, SPACEY.password)  # imaplib quotes and escapes
    assert welcome_backend(c) == "b"
    c.logout()


def test_login_with_synchronizing_literals(main_node: dict) -> None:
    r = Raw(main_node["starttls"])
    address, password = SPACEY.address.encode(), SPACEY.password.encode()
    r.send(b"a LOGIN {%d}\r\n" % len(address))
    assert r.line().startswith(b"+")
    r.send(address + b" {%d}\r\n" % len(password))
    assert r.line().startswith(b"+")
    r.send(password + b"\r\n")
    assert r.until(b"a")[-1].startswith(b"a OK [CAPABILITY ")
    r.send(b"b LOGOUT\r\n")
    r.until(b"b")
    r.close()


def test_login_with_non_ascii_password_in_a_non_synchronizing_literal(main_node: dict) -> None:
    r = Raw(main_node["starttls"])
    address, password = UMLAUT.address.encode(), UMLAUT.password.encode("utf-8")
    r.send(
        b"a LOGIN {%d+}\r\n%s {%d+}\r\n%s\r\n" % (len(address), address, len(password), password)
    )
    assert r.until(b"a")[-1].startswith(b"a OK [CAPABILITY ")
    r.send(b"b SELECT INBOX\r\n")
    assert r.until(b"b")[-1].startswith(b"b OK")
    r.close()
    # the node replayed it to Dovecot as AUTHENTICATE PLAIN (LOGIN cannot carry UTF-8)
    assert re.search(
        r"login ok: user umlaut@example\.com .*back-end AUTHENTICATE PLAIN",
        main_node["node"].log_text(),
    )


def test_authenticate_plain_without_sasl_ir(main_node: dict) -> None:
    c = imaplib.IMAP4("127.0.0.1", main_node["starttls"], timeout=30)
    secret = UMLAUT.password.encode("utf-8")
    typ, _ = c.authenticate("PLAIN", lambda _: b"\0" + UMLAUT.address.encode() + b"\0" + secret)
    assert typ == "OK"
    assert welcome_backend(c) == "a"
    c.logout()


def test_authenticate_plain_with_sasl_ir(main_node: dict) -> None:
    r = Raw(main_node["starttls"])
    response = base64.b64encode(b"\0" + BOB.address.encode() + b"\0" + BOB.password.encode())
    r.send(b"a AUTHENTICATE PLAIN " + response + b"\r\n")
    last = r.until(b"a")[-1]
    assert last.startswith(b"a OK [CAPABILITY IMAP4rev1")
    r.close()


def test_authenticate_login_and_cancel(main_node: dict) -> None:
    r = Raw(main_node["starttls"])
    r.send(b"a AUTHENTICATE PLAIN\r\n")
    assert r.line() == b"+ "
    r.send(b"*\r\n")
    assert r.line() == b"a BAD Authentication canceled."
    r.send(b"b AUTHENTICATE LOGIN\r\n")
    assert r.line() == b"+ VXNlcm5hbWU6"
    r.send(base64.b64encode(ALICE.address.encode()) + b"\r\n")
    assert r.line() == b"+ UGFzc3dvcmQ6"
    r.send(base64.b64encode(ALICE.password.encode()) + b"\r\n")
    assert r.until(b"b")[-1].startswith(b"b OK [CAPABILITY ")
    r.close()


# --------------------------------------------------------------- client TLS


def test_implicit_tls_listener(main_node: dict, pki: object) -> None:
    c = imaplib.IMAP4_SSL(
        "127.0.0.1", main_node["implicit"], ssl_context=client_context(pki), timeout=30
    )
    assert "STARTTLS" not in c.capabilities and "AUTH=PLAIN" in c.capabilities
    c.login(BOB.address, BOB.password)
    assert welcome_backend(c) == "b"
    c.logout()


def test_capabilities_are_honest_before_and_after_starttls(main_node: dict, pki: object) -> None:
    c = imaplib.IMAP4("127.0.0.1", main_node["strict"], timeout=30)
    assert "STARTTLS" in c.capabilities and "LOGINDISABLED" in c.capabilities
    assert not any(cap.startswith("AUTH=") for cap in c.capabilities)
    with pytest.raises(imaplib.IMAP4.error, match="PRIVACYREQUIRED"):
        c.login(ALICE.address, ALICE.password)
    c.starttls(client_context(pki))
    assert "STARTTLS" not in c.capabilities and "LOGINDISABLED" not in c.capabilities
    assert "AUTH=PLAIN" in c.capabilities
    c.login(ALICE.address, ALICE.password)
    assert welcome_backend(c) == "a"
    c.logout()


def test_commands_pipelined_after_starttls_are_discarded(main_node: dict, pki: object) -> None:
    r = Raw(main_node["strict"])
    # a man in the middle appends a command to the client's STARTTLS line
    r.send(b"a STARTTLS\r\nb CAPABILITY\r\n")
    assert r.line().startswith(b"a OK")
    r.sock = client_context(pki).wrap_socket(r.sock, server_hostname="127.0.0.1")
    r.send(b"c NOOP\r\n")
    lines = r.until(b"c")
    assert lines == [b"c OK NOOP completed."]  # nothing answered the injected "b"
    r.close()
    main_node["node"].wait_for_log("discarded 14 bytes pipelined after STARTTLS")


# -------------------------------------------------------------- back-end TLS


def test_backend_leg_uses_verified_starttls(main_node: dict, dovecot_backends: dict) -> None:
    source = unique_source()
    c = SourceIMAP4("127.0.0.1", main_node["starttls"], source)
    c.login(ALICE.address, ALICE.password)
    c.logout()
    line = wait_for_line(dovecot_backends["a"], f"rip={source}")
    assert "TLS" in line  # Dovecot marks logins over TLS
    # ID x-session-ext-id: the node's session id, qualified to be unique in the cluster
    assert re.search(r"session=<fe1-imap-[0-9A-F]{8}>", line), line


def wait_for_line(backend: object, needle: str, timeout: float = 10) -> str:
    deadline = time.monotonic() + timeout
    while True:
        for line in backend.log_text().splitlines():
            if needle in line and "Login:" in line:
                return line
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{needle!r} not in the back-end log:\n{backend.log_text()[-3000:]}"
            )
        time.sleep(0.05)


@pytest.fixture(scope="module")
def implicit_node(
    tmp_path_factory: pytest.TempPathFactory, slapd: object, pki: object, dovecot_backends: dict
) -> Iterator[dict]:
    port = free_port()
    config = ldap_map(slapd) + imap_section(
        dovecot_backends["a"].imaps_port,
        backend_tls="implicit",
        ca_file=pki.cert_file,
        extra="authenticate_on_proxy = false",  # the back-end alone checks passwords here
    )
    config += listener(port)
    node = run_node(tmp_path_factory.mktemp("imap-implicit"), config, [port])
    try:
        yield {"node": node, "port": port}
    finally:
        node.stop()


def test_backend_leg_with_implicit_tls(implicit_node: dict, dovecot_backends: dict) -> None:
    source = unique_source()
    c = SourceIMAP4("127.0.0.1", implicit_node["port"], source)
    c.login(BOB.address, BOB.password)
    assert welcome_backend(c) == "b"
    c.logout()
    assert "TLS" in wait_for_line(dovecot_backends["b"], f"rip={source}")


def test_backend_refusing_the_replayed_login_is_an_authentication_failure(
    implicit_node: dict,
) -> None:
    c = imaplib.IMAP4("127.0.0.1", implicit_node["port"], timeout=30)
    with pytest.raises(imaplib.IMAP4.error) as e:
        c.login(BOB.address, "not-bobs-password")
    assert AUTH_FAILED in str(e.value)
    c.logout()
    log = implicit_node["node"].wait_for_log("refused the login")
    assert re.search(
        r"user bob@example\.com from 127\.0\.0\.1:\d+: "
        r"back-end 127\.[\d.]+\.2:\d+ refused the login",
        log,
    )
    assert "not-bobs-password" not in log


def test_backend_with_a_certificate_from_another_ca_is_refused(
    tmp_path: Path, slapd: object, wrong_ca: object, dovecot_backends: dict
) -> None:
    port = free_port()
    config = (
        ldap_map(slapd)
        + imap_section(dovecot_backends["a"].imap_port, ca_file=wrong_ca.cert_file)
        + listener(port)
    )
    node = run_node(tmp_path / "node", config, [port])
    try:
        c = imaplib.IMAP4("127.0.0.1", port, timeout=30)
        with pytest.raises(imaplib.IMAP4.error, match=r"\[UNAVAILABLE\]"):
            c.login(ALICE.address, ALICE.password)
        c.logout()
        log = node.wait_for_log("unavailable")
        assert re.search(r"back-end 127\.[\d.]+:\d+ unavailable: .*(TLS|certificate)", log), log[
            -2000:
        ]
    finally:
        node.stop()


# ------------------------------------------------------------- relaying


def big_message(size: int) -> bytes:
    rng = random.Random(20)
    header = (
        b"From: alice@example.com\r\nTo: u-ssha256@example.com\r\n"
        b"Subject: big\r\nMessage-ID: <big-" + os.urandom(6).hex().encode() + b"@test>\r\n\r\n"
    )
    body = base64.encodebytes(rng.randbytes(size * 3 // 4)).replace(b"\n", b"\r\n")
    return header + body[: size - len(header) - 2] + b"\r\n"


def test_20mb_message_appended_and_fetched_byte_identical(main_node: dict, pki: object) -> None:
    target = user("u-ssha256@example.com")
    message = big_message(20 * 1024 * 1024)
    message_id = re.search(rb"Message-ID: (<[^>]+>)", message).group(1).decode()
    c = imaplib.IMAP4("127.0.0.1", main_node["starttls"], timeout=120)
    c.starttls(client_context(pki))
    c.login(target.address, target.password)
    typ, data = c.append("INBOX", None, None, message)
    assert typ == "OK", data
    c.select("INBOX")
    typ, data = c.search(None, "HEADER", "Message-ID", message_id)
    (number,) = data[0].split()
    typ, data = c.fetch(number, "(BODY.PEEK[])")
    assert typ == "OK"
    fetched = data[0][1]
    assert len(fetched) == len(message) and fetched == message
    c.store(number, "+FLAGS", "\\Deleted")
    c.expunge()
    c.logout()


def test_idle_survives_silence_and_gets_exists_pushed(main_node: dict) -> None:
    target = user("u-crypt6@example.com")
    watcher = imaplib.IMAP4("127.0.0.1", main_node["starttls"], timeout=30)
    watcher.login(target.address, target.password)
    watcher.select("INBOX")
    watcher.send(b"i1 IDLE\r\n")
    assert watcher.readline().startswith(b"+")
    time.sleep(2)  # silence on the relay: nothing may time the session out

    other = imaplib.IMAP4("127.0.0.1", main_node["starttls"], timeout=30)
    other.login(target.address, target.password)
    typ, _ = other.append("INBOX", None, None, b"Subject: ping\r\n\r\nhello\r\n")
    assert typ == "OK"
    other.logout()

    watcher.sock.settimeout(20)
    while True:
        line = watcher.readline()
        assert line, "the relay closed during IDLE"
        if re.match(rb"\* \d+ EXISTS", line):
            break
    watcher.send(b"DONE\r\n")
    while not (line := watcher.readline()).startswith(b"i1 "):
        pass
    assert line.startswith(b"i1 OK")
    watcher.logout()


def test_client_address_reaches_the_backend_log(main_node: dict, dovecot_backends: dict) -> None:
    source = unique_source()
    c = SourceIMAP4("127.0.0.1", main_node["starttls"], source)
    c.login(BOB.address, BOB.password)
    c.logout()
    line = wait_for_line(dovecot_backends["b"], f"rip={source}")
    assert "user=<bob@example.com>" in line


# --------------------------------------------------------------- failures


def test_unknown_user_and_wrong_password_are_indistinguishable(main_node: dict) -> None:
    answers = []
    for address, password in (
        ("nobody@example.com", "whatever"),
        (ALICE.address, "wrong-password"),
    ):
        c = imaplib.IMAP4("127.0.0.1", main_node["starttls"], timeout=30)
        with pytest.raises(imaplib.IMAP4.error) as e:
            c.login(address, password)
        answers.append(str(e.value))
        c.logout()
    assert answers[0] == answers[1]
    assert AUTH_FAILED in answers[0]
    log = main_node["node"].log_text()
    assert "user nobody@example.com from 127.0.0.1" in log and "unknown user" in log
    assert re.search(r"user alice@example\.com from 127\.0\.0\.1:\d+: wrong password", log)
    assert "wrong-password" not in log


def test_max_auth_errors_ends_the_session(main_node: dict) -> None:
    r = Raw(main_node["starttls"])
    for n in (1, 2):
        r.send(b"a%d LOGIN alice@example.com nope\r\n" % n)
        assert r.until(b"a%d" % n)[-1] == b"a%d NO %s" % (n, AUTH_FAILED.encode())
    r.send(b"a3 LOGIN alice@example.com nope\r\n")
    assert r.line() == b"a3 NO " + AUTH_FAILED.encode()
    assert r.line() == b"* BYE Too many authentication failures"
    assert r.closed()


def test_directory_outage_gives_unavailable_and_recovers(
    tmp_path: Path, private_slapd: object, pki: object, dovecot_backends: dict
) -> None:
    port = free_port()
    config = ldap_map(private_slapd, cache_ttl=0, negative_ttl=0)
    config += imap_section(dovecot_backends["a"].imap_port, ca_file=pki.cert_file) + listener(port)
    node = run_node(tmp_path / "node", config, [port])
    try:
        c = imaplib.IMAP4("127.0.0.1", port, timeout=30)
        c.login(ALICE.address, ALICE.password)
        c.logout()
        private_slapd.stop()
        c = imaplib.IMAP4("127.0.0.1", port, timeout=30)
        with pytest.raises(imaplib.IMAP4.error, match=r"\[UNAVAILABLE\]"):
            c.login(ALICE.address, ALICE.password)
        c.logout()
        assert "directory unavailable" in node.log_text()
        private_slapd.start()
        deadline = time.monotonic() + 20
        while True:  # the connector reconnects on its own schedule
            c = imaplib.IMAP4("127.0.0.1", port, timeout=30)
            try:
                c.login(ALICE.address, ALICE.password)
                break
            except imaplib.IMAP4.error as e:
                assert "UNAVAILABLE" in str(e)
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
            finally:
                c.logout()
    finally:
        node.stop()


@pytest.fixture(scope="module")
def file_map_node(
    tmp_path_factory: pytest.TempPathFactory,
    pki: object,
    dovecot_backends: dict,
    backend_hosts: dict,
) -> Iterator[dict]:
    """A file map with a user whose back-end port is closed, and master-user login."""
    directory = tmp_path_factory.mktemp("imap-filemap")
    closed = free_port()
    lines = [
        f"{u.address} {backend_hosts[u.backend]} {stored_password(u)}" for u in (ALICE, BOB, UMLAUT)
    ]
    lines.append(f"ghost@example.com 127.0.0.1:{closed} {{PLAIN}}ghost-secret")
    lines.append(f"{NOHASH.address} {backend_hosts[NOHASH.backend]}")  # routing only
    (directory / "map.txt").write_text("\n".join(lines) + "\n")
    (directory / "master.pw").write_text(MASTER_PASSWORD + "\n")
    config = f"""
[[usermap]]
name = "main"
type = "file"
path = "{directory / "map.txt"}"
"""
    extra = (
        f'backend_master_user = "{MASTER_USER}"\n'
        f'backend_master_password_file = "{directory / "master.pw"}"'
    )
    port = free_port()
    config += imap_section(
        dovecot_backends["a"].imap_port, ca_file=pki.cert_file, extra=extra
    ) + listener(port)
    node = run_node(directory / "node", config, [port])
    try:
        yield {"node": node, "port": port}
    finally:
        node.stop()


def test_backend_down_gives_unavailable(file_map_node: dict) -> None:
    c = imaplib.IMAP4("127.0.0.1", file_map_node["port"], timeout=30)
    with pytest.raises(imaplib.IMAP4.error, match=r"\[UNAVAILABLE\]"):
        c.login("ghost@example.com", "ghost-secret")
    assert c.noop()[0] == "OK"  # the session goes on: the client may retry
    c.logout()
    assert re.search(r"back-end 127\.0\.0\.1:\d+ unreachable", file_map_node["node"].log_text())


def test_master_user_mode(file_map_node: dict, dovecot_backends: dict) -> None:
    source = unique_source()
    for u, label in ((ALICE, "a"), (UMLAUT, "a"), (BOB, "b")):
        c = SourceIMAP4("127.0.0.1", file_map_node["port"], source)
        plain = b"\0" + u.address.encode() + b"\0" + u.password.encode()
        c.authenticate("PLAIN", lambda _, plain=plain: plain)
        assert welcome_backend(c) == label
        c.logout()
    wait_for_line(dovecot_backends["a"], f"rip={source}")
    backend_log = dovecot_backends["a"].log_text()
    assert "Master user logging in as alice@example.com" in backend_log
    assert "Master user logging in as umlaut@example.com" in backend_log
    # the node still checks the user's own password: the master password is not a skeleton key
    c = imaplib.IMAP4("127.0.0.1", file_map_node["port"], timeout=30)
    with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
        c.login(ALICE.address, MASTER_PASSWORD)
    c.logout()
    # a map line without a hash only routes: in master-user mode nothing else would check
    c = imaplib.IMAP4("127.0.0.1", file_map_node["port"], timeout=30)
    with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
        c.login(NOHASH.address, "any password at all")
    c.logout()
    file_map_node["node"].wait_for_log("stores no password for this user")
    log = file_map_node["node"].log_text()
    assert MASTER_PASSWORD not in log
    assert "any password at all" not in log


def test_no_password_reaches_the_node_log(main_node: dict) -> None:
    for password in (ALICE.password, "not-alices-password"):
        c = imaplib.IMAP4("127.0.0.1", main_node["starttls"], timeout=30)
        try:
            c.login(ALICE.address, password)
        except imaplib.IMAP4.error:
            pass
        c.logout()
    log = main_node["node"].wait_for_log("wrong password")
    assert "not-alices-password" not in log
    for u in (ALICE, BOB, SPACEY, UMLAUT):
        assert u.password not in log
    assert "IMAP:" in log
