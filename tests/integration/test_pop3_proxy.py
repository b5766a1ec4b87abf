"""The POP3 proxy end to end: a real node (twistd), real Dovecot back-ends, real slapd,
and Python's poplib as the client.

Each node configuration is started once per module. Tests that make a back-end see a
failed login, or that look for the client's address in a back-end's log, connect from
a loopback source address of their own, so Dovecot's per-address auth penalty and log
lines never mix between tests.
"""

from __future__ import annotations

import base64
import imaplib
import os
import poplib
import random
import re
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.clients import SourcePOP3
from tests.integration.configs import ldap_usermap
from tests.integration.directory_data import (
    MASTER_PASSWORD,
    MASTER_USER,
    user,
)
from tests.integration.node import Node, start_node
from tests.integration.servers.dovecot import Dovecot
from tests.integration.servers.pki import IssuedCert, TestCA
from tests.integration.servers.ports import free_port, random_loopback_prefix
from tests.integration.servers.slapd import Slapd

pytestmark = pytest.mark.integration

AUTH_FAILED = b"-ERR [AUTH] Authentication failed."
ALICE = user("alice@example.com")
BOB = user("bob@example.com")
SPACEY = user("spacey@example.com")
UMLAUT = user("umlaut@example.com")


# ---------------------------------------------------------------------------- helpers


def source_address() -> str:
    """A loopback address of this test's own to connect from (127.0.0.0/8 is all local)."""
    return f"{random_loopback_prefix()}.{random.SystemRandom().randint(10, 250)}"


def client_context(ca: TestCA) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca.cert_file))


def auth_plain(pop: poplib.POP3, authcid: str, password: str, *, initial: bool = True) -> bytes:
    response = base64.b64encode(b"\0" + authcid.encode() + b"\0" + password.encode()).decode()
    if initial:
        return pop._shortcmd("AUTH PLAIN " + response)  # type: ignore[attr-defined,no-any-return]
    prompt = pop._shortcmd("AUTH PLAIN")  # type: ignore[attr-defined]
    assert prompt.startswith(b"+")
    return pop._shortcmd(response)  # type: ignore[attr-defined,no-any-return]


def welcome_backend(pop: poplib.POP3) -> str:
    """The X-Backend header of the seeded message.

    Other test modules deliver into the same shared mailboxes (SMTP, IMAP APPEND), so
    the seeded message is looked for by its header (TOP), not assumed to be number 1.
    """
    count, _ = pop.stat()
    for number in range(1, count + 1):
        _, lines, _ = pop.top(number, 0)
        for line in lines:
            if line.startswith(b"X-Backend:"):
                return line.split(b":", 1)[1].strip().decode()
    raise AssertionError(f"no message with an X-Backend header among {count}")


def wait_for(predicate, what: str, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def login_line(dovecot: Dovecot, address: str, rip: str) -> str:
    """The back-end's pop3-login line for C{address} coming from C{rip}, once it is written."""
    pattern = re.compile(
        r"pop3-login: Info: Login: user=<" + re.escape(address) + r">.*rip=" + re.escape(rip) + r","
    )
    found: list[str] = []

    def look() -> bool:
        found[:] = [line for line in dovecot.log_text().splitlines() if pattern.search(line)]
        return bool(found)

    wait_for(look, f"a Dovecot login line for {address} from {rip}")
    return found[-1]


# ---------------------------------------------------------------------------- node configurations


def ldap_section(directory: Slapd, cache_ttl: float = 60) -> str:
    return f"""
[node]
name = "fe-pop3-test"

{ldap_usermap(directory, cache_ttl=cache_ttl, negative_ttl=cache_ttl)}"""


def pop3_section(backend_port: int, **options: object) -> str:
    lines = [
        "[pop3]",
        'usermap = "main"',
        f"backend_port = {backend_port}",
        'greeting = "POP3 proxy ready"',
    ]
    for key, value in options.items():
        if isinstance(value, bool):
            lines.append(f"{key} = {'true' if value else 'false'}")
        elif isinstance(value, (int, float)):
            lines.append(f"{key} = {value}")
        else:
            lines.append(f'{key} = "{value}"')
    return "\n".join(lines) + "\n"


def listener(port: int, tls: str = "none", cert: IssuedCert | None = None, **options: bool) -> str:
    text = f'\n[[pop3.listener]]\nendpoint = "tcp:port={port}:interface=127.0.0.1"\ntls = "{tls}"\n'
    if cert is not None:
        text += f'cert_file = "{cert.cert_file}"\nkey_file = "{cert.key_file}"\n'
    for key, value in options.items():
        text += f"{key} = {'true' if value else 'false'}\n"
    return text


class Pop3Node:
    """A started node and the ports of its POP3 listeners."""

    def __init__(self, node: Node, **ports: int) -> None:
        self.node = node
        self.ports = ports

    def pop(self, listener: str = "plain", source: str | None = None) -> poplib.POP3:
        if source is not None:
            return SourcePOP3("127.0.0.1", self.ports[listener], source, timeout=15)
        return poplib.POP3("127.0.0.1", self.ports[listener], timeout=15)

    def log(self) -> str:
        return self.node.log_text()


def _start(tmp: Path, config: str, **ports: int) -> Pop3Node:
    node = start_node(tmp, config, wait=[("127.0.0.1", p) for p in ports.values()])
    return Pop3Node(node, **ports)


@pytest.fixture(scope="module")
def main_node(
    tmp_path_factory: pytest.TempPathFactory,
    slapd: Slapd,
    dovecot_backends: dict[str, Dovecot],
    node_cert: IssuedCert,
) -> Iterator[Pop3Node]:
    """LDAP-routed, plaintext back-end leg, client leg: STLS, implicit TLS, strict STLS."""
    ports = {"plain": free_port(), "pop3s": free_port(), "strict": free_port()}
    config = (
        ldap_section(slapd)
        + pop3_section(
            dovecot_backends["a"].pop3_port, max_auth_errors=3, forward_client_address=True
        )
        + listener(ports["plain"], "starttls", node_cert)
        + listener(ports["pop3s"], "implicit", node_cert)
        + listener(ports["strict"], "starttls", node_cert, loopback_plaintext=False)
    )
    n = _start(tmp_path_factory.mktemp("pop3-main"), config, **ports)
    yield n
    n.node.stop()


def backend_tls_node(
    tmp: Path, slapd: Slapd, backend: Dovecot, mode: str, ca: TestCA
) -> Iterator[Pop3Node]:
    """A node whose back-end leg is C{mode} ("starttls" or "implicit"), verified with C{ca}."""
    port = free_port()
    config = (
        ldap_section(slapd)
        + pop3_section(
            backend.pop3_port if mode == "starttls" else backend.pop3s_port,
            backend_tls=mode,
            backend_ca_file=str(ca.cert_file),
        )
        + listener(port)
    )
    n = _start(tmp, config, plain=port)
    yield n
    n.node.stop()


@pytest.fixture(scope="module")
def starttls_backend_node(
    tmp_path_factory: pytest.TempPathFactory,
    slapd: Slapd,
    dovecot_backends: dict[str, Dovecot],
    pki: TestCA,
) -> Iterator[Pop3Node]:
    tmp = tmp_path_factory.mktemp("pop3-be-starttls")
    yield from backend_tls_node(tmp, slapd, dovecot_backends["a"], "starttls", pki)


@pytest.fixture(scope="module")
def implicit_backend_node(
    tmp_path_factory: pytest.TempPathFactory,
    slapd: Slapd,
    dovecot_backends: dict[str, Dovecot],
    pki: TestCA,
) -> Iterator[Pop3Node]:
    tmp = tmp_path_factory.mktemp("pop3-be-implicit")
    yield from backend_tls_node(tmp, slapd, dovecot_backends["a"], "implicit", pki)


@pytest.fixture(scope="module", params=["starttls", "implicit"])
def wrong_ca_node(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    slapd: Slapd,
    dovecot_backends: dict[str, Dovecot],
    wrong_ca: TestCA,
) -> Iterator[Pop3Node]:
    mode = request.param
    tmp = tmp_path_factory.mktemp(f"pop3-wrong-ca-{mode}")
    yield from backend_tls_node(tmp, slapd, dovecot_backends["a"], mode, wrong_ca)


@pytest.fixture(scope="module")
def master_node(
    tmp_path_factory: pytest.TempPathFactory, slapd: Slapd, dovecot_backends: dict[str, Dovecot]
) -> Iterator[Pop3Node]:
    tmp = tmp_path_factory.mktemp("pop3-master")
    secret = tmp / "master.secret"
    secret.write_text(MASTER_PASSWORD + "\n")
    port = free_port()
    config = (
        ldap_section(slapd)
        + pop3_section(
            dovecot_backends["a"].pop3_port,
            backend_master_user=MASTER_USER,
            backend_master_password_file=str(secret),
        )
        + listener(port)
    )
    n = _start(tmp, config, plain=port)
    yield n
    n.node.stop()


@pytest.fixture(scope="module")
def file_node(
    tmp_path_factory: pytest.TempPathFactory, dovecot_backends: dict[str, Dovecot]
) -> Iterator[Pop3Node]:
    """A file map without passwords: the back-end alone checks them; one user's back-end is down."""
    tmp = tmp_path_factory.mktemp("pop3-file")
    dead_port = free_port()
    a = dovecot_backends["a"]
    (tmp / "usermap.txt").write_text(
        f"alice@example.com {a.host}\n"
        f"ghost@example.com {a.host}\n"
        f"down@example.com 127.0.0.1:{dead_port}\n"
    )
    port = free_port()
    config = (
        '[node]\nname = "fe-pop3-file"\n\n'
        '[[usermap]]\nname = "main"\ntype = "file"\npath = "usermap.txt"\n'
        "cache_ttl = 0\nnegative_cache_ttl = 0\n\n"
        + pop3_section(a.pop3_port, authenticate_on_proxy=False, backend_connect_timeout=5)
        + listener(port)
    )
    n = _start(tmp, config, plain=port)
    yield n
    n.node.stop()


# ---------------------------------------------------------------------------- routing and logins


def test_users_are_routed_to_their_own_backend(main_node: Pop3Node) -> None:
    for who, backend in ((ALICE, "a"), (BOB, "b")):
        pop = main_node.pop()
        assert pop.getwelcome() == b"+OK POP3 proxy ready"
        pop.user(who.address)
        assert pop.pass_(who.password).startswith(b"+OK")
        assert welcome_backend(pop) == backend
        pop.quit()
    log = main_node.log()
    assert re.search(r"login alice@example\.com from 127\.0\.0\.1:\d+ routed to [\d.]+:\d+", log)


def test_passwords_with_spaces_quotes_and_non_ascii(main_node: Pop3Node) -> None:
    for who, backend in ((SPACEY, "b"), (UMLAUT, "a")):
        pop = main_node.pop()
        pop.user(who.address)
        pop.pass_(who.password)  # poplib sends UTF-8
        assert welcome_backend(pop) == backend
        pop.quit()


def test_auth_plain_with_and_without_initial_response(main_node: Pop3Node) -> None:
    for initial in (True, False):
        pop = main_node.pop()
        assert auth_plain(pop, BOB.address, BOB.password, initial=initial).startswith(b"+OK")
        assert welcome_backend(pop) == "b"
        pop.quit()


def test_auth_login(main_node: Pop3Node) -> None:
    pop = main_node.pop()
    assert pop._shortcmd("AUTH LOGIN").startswith(b"+ ")  # type: ignore[attr-defined]
    assert pop._shortcmd(base64.b64encode(UMLAUT.address.encode()).decode()).startswith(b"+ ")  # type: ignore[attr-defined]
    answer = pop._shortcmd(base64.b64encode(UMLAUT.password.encode()).decode())  # type: ignore[attr-defined]
    assert answer.startswith(b"+OK")
    assert welcome_backend(pop) == "a"
    pop.quit()


def test_pipelined_login_and_commands(main_node: Pop3Node) -> None:
    with socket.create_connection(("127.0.0.1", main_node.ports["plain"]), timeout=15) as s:
        f = s.makefile("rb")
        assert f.readline().startswith(b"+OK")
        s.sendall(f"USER {ALICE.address}\r\nPASS {ALICE.password}\r\nSTAT\r\nQUIT\r\n".encode())
        answers = [f.readline() for _ in range(4)]
    assert answers[0] == b"+OK\r\n"
    assert answers[1].startswith(b"+OK")
    assert re.match(rb"\+OK \d+ \d+\r\n", answers[2])
    assert answers[3].startswith(b"+OK")


def test_capa(main_node: Pop3Node) -> None:
    pop = main_node.pop()
    capa = pop.capa()
    assert {
        "USER",
        "SASL",
        "STLS",
        "RESP-CODES",
        "AUTH-RESP-CODE",
        "PIPELINING",
        "IMPLEMENTATION",
    } <= set(capa)
    assert capa["SASL"] == ["PLAIN", "LOGIN"]
    pop.quit()


# ---------------------------------------------------------------------------- TLS on the client leg


def test_stls_on_the_client_leg(main_node: Pop3Node, pki: TestCA) -> None:
    pop = main_node.pop()
    pop.stls(client_context(pki))
    assert "STLS" not in pop.capa()
    pop.user(ALICE.address)
    pop.pass_(ALICE.password)
    assert welcome_backend(pop) == "a"
    pop.quit()


def test_implicit_tls_on_the_client_leg(main_node: Pop3Node, pki: TestCA) -> None:
    pop = poplib.POP3_SSL(
        "127.0.0.1", main_node.ports["pop3s"], context=client_context(pki), timeout=15
    )
    assert pop.getwelcome() == b"+OK POP3 proxy ready"
    assert "STLS" not in pop.capa()
    pop.user(BOB.address)
    pop.pass_(BOB.password)
    assert welcome_backend(pop) == "b"
    pop.quit()


def test_no_plaintext_login_before_stls_where_the_listener_forbids_it(
    main_node: Pop3Node, pki: TestCA
) -> None:
    pop = main_node.pop("strict")
    capa = pop.capa()
    assert "STLS" in capa and "USER" not in capa and "SASL" not in capa
    with pytest.raises(poplib.error_proto, match=r"\[AUTH\] Plaintext"):
        pop.user(ALICE.address)
    pop.stls(client_context(pki))
    capa = pop.capa()
    assert "USER" in capa and "SASL" in capa and "STLS" not in capa
    pop.user(ALICE.address)
    pop.pass_(ALICE.password)
    assert welcome_backend(pop) == "a"
    pop.quit()


def test_commands_injected_behind_stls_are_discarded(main_node: Pop3Node, pki: TestCA) -> None:
    with socket.create_connection(("127.0.0.1", main_node.ports["plain"]), timeout=15) as raw:
        assert raw.recv(1024).startswith(b"+OK")
        # one segment: STLS plus a plaintext USER the attacker wants obeyed after the handshake
        raw.sendall(f"STLS\r\nUSER {ALICE.address}\r\n".encode())
        answer = b""
        while not answer.endswith(b"\r\n"):
            answer += raw.recv(1)
        assert answer == b"+OK Begin TLS negotiation now.\r\n"
        tls = client_context(pki).wrap_socket(raw, server_hostname="127.0.0.1")
        f = tls.makefile("rwb")
        f.write(f"PASS {ALICE.password}\r\n".encode())
        f.flush()
        assert f.readline() == b"-ERR No user name given (USER first).\r\n"
        f.write(b"QUIT\r\n")
        f.flush()
        assert f.readline().startswith(b"+OK")
        tls.close()
    main_node.node.wait_for_log("discarded")


# ------------------------------------------------------------------ TLS on the back-end leg


def test_backend_starttls_with_verification(
    starttls_backend_node: Pop3Node, dovecot_backends: dict[str, Dovecot]
) -> None:
    source = source_address()
    pop = starttls_backend_node.pop(source=source)
    pop.user(ALICE.address)
    pop.pass_(ALICE.password)
    assert welcome_backend(pop) == "a"
    pop.quit()
    line = login_line(dovecot_backends["a"], ALICE.address, source)
    assert "TLS" in line


def test_backend_implicit_tls_with_verification(
    implicit_backend_node: Pop3Node, dovecot_backends: dict[str, Dovecot]
) -> None:
    source = source_address()
    pop = implicit_backend_node.pop(source=source)
    pop.user(ALICE.address)
    pop.pass_(ALICE.password)
    assert welcome_backend(pop) == "a"
    pop.quit()
    line = login_line(dovecot_backends["a"], ALICE.address, source)
    assert "TLS" in line


def test_backend_with_a_certificate_from_the_wrong_ca_is_refused(wrong_ca_node: Pop3Node) -> None:
    pop = wrong_ca_node.pop()
    pop.user(ALICE.address)
    with pytest.raises(poplib.error_proto, match=r"^b'-ERR \[SYS/TEMP\]"):
        pop.pass_(ALICE.password)
    pop.quit()
    log = wrong_ca_node.node.wait_for_log("TLS failure")
    assert "certificate verify failed" in log


# ---------------------------------------------------------------------------- large message


def test_20_mb_message_is_relayed_byte_identical(
    main_node: Pop3Node, dovecot_backends: dict[str, Dovecot]
) -> None:
    who = user("u-crypt6@example.com")
    backend = dovecot_backends[who.backend or "a"]
    marker = os.urandom(8).hex()
    body = base64.encodebytes(os.urandom(15 * 1024 * 1024)).replace(b"\n", b"\r\n")
    message = (
        (
            f"From: bench <bench@example.com>\r\nTo: <{who.address}>\r\nSubject: big {marker}\r\n"
            f"Message-ID: <{marker}@example.com>\r\n\r\n"
        ).encode()
        + body
        + b".leading dot line\r\n"
    )
    imap = imaplib.IMAP4(backend.host, backend.imap_port)
    imap.login(who.address, who.password)
    typ, _ = imap.append("INBOX", None, None, message)
    assert typ == "OK"
    imap.logout()

    def raw_retr(host: str, port: int) -> tuple[bytes, int]:
        with socket.create_connection((host, port), timeout=60) as s:
            f = s.makefile("rwb")
            f.readline()
            f.write(f"USER {who.address}\r\nPASS {who.password}\r\nLIST\r\n".encode())
            f.flush()
            assert f.readline().startswith(b"+OK") and f.readline().startswith(b"+OK")
            assert f.readline().startswith(b"+OK")
            number = None
            while (line := f.readline()) != b".\r\n":
                n, size = line.split()
                if int(size) >= len(message):
                    number = int(n)
            assert number is not None
            f.write(b"RETR %d\r\n" % number)
            f.flush()
            chunks = []
            while True:
                line = f.readline()
                chunks.append(line)
                if line == b".\r\n":
                    break
            f.write(b"QUIT\r\n")
            f.flush()
            return b"".join(chunks), number

    direct, _ = raw_retr(backend.host, backend.pop3_port)
    proxied, _ = raw_retr("127.0.0.1", main_node.ports["plain"])
    assert len(proxied) > 20 * 1024 * 1024
    assert proxied == direct
    # and what it carries is the message itself (dot-stuffing undone)
    lines = proxied.split(b"\r\n")[1:-2]
    assert (
        b"\r\n".join(line[1:] if line.startswith(b".") else line for line in lines) + b"\r\n"
        == message
    )


# ---------------------------------------------------------------------------- client address


def test_client_address_reaches_the_backend_log(
    main_node: Pop3Node, dovecot_backends: dict[str, Dovecot]
) -> None:
    source = source_address()
    pop = main_node.pop(source=source)
    pop.user(BOB.address)
    pop.pass_(BOB.password)
    pop.quit()
    assert "rip=" + source in login_line(dovecot_backends["b"], BOB.address, source)
    assert f"connect from {source}:" in main_node.log()


# ---------------------------------------------------------------------------- failures


def test_wrong_password_and_unknown_user_are_indistinguishable(main_node: Pop3Node) -> None:
    answers = []
    for address, password in (
        (ALICE.address, "not-her-password"),
        ("nobody-here@example.com", "whatever"),
    ):
        pop = main_node.pop()
        pop.user(address)
        with pytest.raises(poplib.error_proto) as caught:
            pop.pass_(password)
        answers.append(caught.value.args[0])
        pop.quit()
    assert answers[0] == answers[1] == AUTH_FAILED
    log = main_node.log()
    assert "login failed for alice@example.com from 127.0.0.1" in log and "bad password" in log
    assert "login failed for nobody-here@example.com" in log and "unknown user" in log
    assert "not-her-password" not in log


def test_max_auth_errors_closes_the_connection(main_node: Pop3Node) -> None:
    pop = main_node.pop()
    for attempt in range(3):
        pop.user(ALICE.address)
        with pytest.raises(poplib.error_proto) as caught:
            pop.pass_(f"wrong-{attempt}")
        expected = (
            AUTH_FAILED if attempt < 2 else b"-ERR [AUTH] Too many failures, closing connection."
        )
        assert caught.value.args[0] == expected
    assert pop.sock.recv(100) == b""  # closed by the node
    pop.close()


def test_backend_down_is_a_temporary_failure(file_node: Pop3Node) -> None:
    pop = file_node.pop()
    pop.user("down@example.com")
    with pytest.raises(poplib.error_proto, match=r"^b'-ERR \[SYS/TEMP\]"):
        pop.pass_("anything")
    # the session goes on: a user whose back-end is up logs in
    pop.user(ALICE.address)
    pop.pass_(ALICE.password)
    assert welcome_backend(pop) == "a"
    pop.quit()
    assert "unreachable" in file_node.log()


def test_backend_refusing_the_replayed_login_is_an_auth_failure(file_node: Pop3Node) -> None:
    # the node does not check passwords here (file map without hashes): the back-end does
    source = source_address()  # Dovecot's failure penalty lands on this address only
    answers = []
    for address in (ALICE.address, "ghost@example.com"):
        pop = file_node.pop(source=source)
        pop.user(address)
        with pytest.raises(poplib.error_proto) as caught:
            pop.pass_("wrong password")
        answers.append(caught.value.args[0])
        pop.quit()
    assert answers == [AUTH_FAILED, AUTH_FAILED]
    assert "refused the login" in file_node.log()


def test_ldap_down_is_a_temporary_failure_and_recovers(
    tmp_path: Path, private_slapd: Slapd, dovecot_backends: dict[str, Dovecot]
) -> None:
    port = free_port()
    config = (
        ldap_section(private_slapd, cache_ttl=0)
        + pop3_section(dovecot_backends["a"].pop3_port)
        + listener(port)
    )
    node = _start(tmp_path / "node", config, plain=port)
    try:
        pop = node.pop()
        pop.user(ALICE.address)
        pop.pass_(ALICE.password)
        pop.quit()

        private_slapd.stop()
        pop = node.pop()
        pop.user(ALICE.address)
        with pytest.raises(poplib.error_proto, match=r"^b'-ERR \[SYS/TEMP\]"):
            pop.pass_(ALICE.password)
        pop.quit()
        assert "directory unavailable" in node.log()

        private_slapd.start()
        deadline = time.monotonic() + 20
        while True:
            pop = node.pop()
            pop.user(ALICE.address)
            try:
                pop.pass_(ALICE.password)
                break
            except poplib.error_proto as e:
                assert b"[SYS/TEMP]" in e.args[0]
                assert time.monotonic() < deadline, "the node did not recover after slapd came back"
                pop.quit()
                time.sleep(0.2)
        assert welcome_backend(pop) == "a"
        pop.quit()
    finally:
        node.node.stop()


def test_master_user_mode(master_node: Pop3Node, dovecot_backends: dict[str, Dovecot]) -> None:
    who = user("u-plain@example.com")
    source = source_address()
    pop = master_node.pop(source=source)
    pop.user(who.address)
    pop.pass_(who.password)
    assert welcome_backend(pop) == "a"
    pop.quit()
    login_line(dovecot_backends["a"], who.address, source)
    assert f"Master user logging in as {who.address}" in dovecot_backends["a"].log_text()
    assert "master user" in master_node.log()
    # the node still checks the user's own password before using the master login
    pop = master_node.pop()
    pop.user(who.address)
    with pytest.raises(poplib.error_proto):
        pop.pass_("not-the-password")
    pop.quit()


# ---------------------------------------------------------------------------- logs


def test_session_log_lines(main_node: Pop3Node) -> None:
    pop = main_node.pop()
    port = pop.sock.getsockname()[1]
    pop.user(ALICE.address)
    pop.pass_(ALICE.password)
    pop.stat()
    pop.quit()
    # other tests share this node: wait for this session's own disconnect line
    log = main_node.node.wait_for_log(f"disconnect from 127.0.0.1:{port}:")
    assert re.search(rf"POP3:[0-9A-F]{{8}}: connect from 127\.0\.0\.1:{port}", log)
    assert re.search(
        rf"POP3:[0-9A-F]{{8}}: disconnect from 127\.0\.0\.1:{port}: user alice@example\.com, "
        r"state relay, \d+ bytes up, \d+ bytes down",
        log,
    )
    assert ALICE.password not in log
