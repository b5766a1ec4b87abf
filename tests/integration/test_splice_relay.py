"""Splice mode end to end: a real node whose sessions are plaintext on both legs.

With C{backend_tls = "none"} and a plaintext listener, IMAP and POP3 sessions relay
through C{os.splice} once logged in (L{axigen_fe.net.splice}). Submission does not: its
relay reads the client's commands (L{axigen_fe.smtp.relayguard}); its tests here show it
still moves a large message intact and keeps its idle timeout. These tests show
what a client and the node's owner can see of that: bytes identical both ways, byte counts
still in the disconnect lines, pushed IMAP responses still pushed, idle timeouts still
right, and no fd left behind (the node's pipes are pooled spares, bounded).
"""

from __future__ import annotations

import base64
import imaplib
import os
import poplib
import re
import smtplib
import socket
import struct
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from email.utils import formatdate
from pathlib import Path

import pytest

from tests.integration.configs import ldap_usermap
from tests.integration.directory_data import user
from tests.integration.node import Node, start_node
from tests.integration.servers.ports import free_port

pytestmark = pytest.mark.integration

MIB = 1024 * 1024
#: more than Pipe.splice_after: a session that moved this much relays by splice
WARM_UP = b"Subject: warm-up\r\n\r\n" + (b"x" * 998 + b"\r\n") * 200
SPARE_PIPES = 16  # axigen_fe.net.splice.POOL.spare


def ldap_map(slapd: object) -> str:
    return f"""
[node]
name = "fe-splice-test"

{ldap_usermap(slapd, cache_ttl=60)}"""


def plaintext_service(kind: str, backend_port: int, idle_timeout: float, extra: str = "") -> str:
    """[kind] with a plaintext back-end leg, and one plaintext loopback listener."""
    return f"""
[{kind}]
usermap = "main"
backend_port = {backend_port}
backend_tls = "none"
backend_connect_timeout = 5
idle_timeout = {idle_timeout}
{extra}
"""


def plaintext_listener(kind: str, port: int) -> str:
    return f"""
[[{kind}.listener]]
endpoint = "tcp:port={port}:interface=127.0.0.1"
tls = "none"
loopback_plaintext = true
"""


def node_config(
    slapd: object, dovecot: object, postfix: object, ports: dict[str, int], idle: float
) -> str:
    return (
        ldap_map(slapd)
        + plaintext_service("imap", dovecot.imap_port, idle)
        + plaintext_listener("imap", ports["imap"])
        + plaintext_service("pop3", dovecot.pop3_port, idle)
        + plaintext_listener("pop3", ports["pop3"])
        + plaintext_service(
            "submission",
            postfix.submission_port,
            idle,
            'hostname = "submit.example.com"\nmax_message_size = 52428800\n',
        )
        + plaintext_listener("submission", ports["submission"])
    )


class SpliceNode:
    def __init__(self, node: Node, ports: dict[str, int]) -> None:
        self.node = node
        self.ports = ports

    def fds(self) -> Counter[str]:
        """The node's open fds by kind: 'socket', 'pipe', 'anon_inode', '/path'..."""
        kinds: Counter[str] = Counter()
        base = Path(f"/proc/{self.node.pid()}/fd")
        for fd in os.listdir(base):
            try:
                target = os.readlink(base / fd)
            except OSError:
                continue  # closed while listing
            kinds[target.split(":", 1)[0]] += 1
        return kinds

    def imap(self) -> imaplib.IMAP4:
        return imaplib.IMAP4("127.0.0.1", self.ports["imap"], timeout=60)


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.05)


def start(
    tmp: Path, slapd: object, dovecots: dict, postfixes: dict, idle: float
) -> Iterator[SpliceNode]:
    ports = {"imap": free_port(), "pop3": free_port(), "submission": free_port()}
    config = node_config(slapd, dovecots["a"], postfixes["a"], ports, idle)
    node = start_node(tmp, config, [("127.0.0.1", p) for p in ports.values()])
    try:
        yield SpliceNode(node, ports)
    finally:
        node.stop()


@pytest.fixture(scope="module")
def splice_node(
    tmp_path_factory: pytest.TempPathFactory,
    slapd: object,
    dovecot_backends: dict,
    postfix_backends: dict,
) -> Iterator[SpliceNode]:
    yield from start(
        tmp_path_factory.mktemp("splice"), slapd, dovecot_backends, postfix_backends, 1860
    )


@pytest.fixture(scope="module")
def idle_node(
    tmp_path_factory: pytest.TempPathFactory,
    slapd: object,
    dovecot_backends: dict,
    postfix_backends: dict,
) -> Iterator[SpliceNode]:
    """idle_timeout = 2 s on every service."""
    yield from start(
        tmp_path_factory.mktemp("splice-idle"), slapd, dovecot_backends, postfix_backends, 2
    )


def big_message(size: int, to: str) -> tuple[bytes, str]:
    marker = uuid.uuid4().hex
    header = (
        f"From: <bench@example.com>\r\nTo: <{to}>\r\nSubject: splice {marker}\r\n"
        f"Date: {formatdate()}\r\nMessage-ID: <{marker}@splice.test>\r\n\r\n"
    ).encode()
    body = base64.encodebytes(os.urandom(size * 3 // 4)).replace(b"\n", b"\r\n")
    body = body[: body.rindex(b"\r\n", 0, size - len(header)) + 2]  # whole lines only
    return header + body, marker


def disconnect_bytes(log: str, pattern: str) -> tuple[int, int]:
    found = re.findall(pattern, log)
    assert found, f"no disconnect line matching {pattern!r}"
    up, down = found[-1]
    return int(up), int(down)


# ----------------------------------------------------------------------------------- IMAP


def test_imap_20mb_append_and_fetch_byte_identical_and_counted(splice_node: SpliceNode) -> None:
    who = user("u-md5@example.com")
    message, marker = big_message(20 * MIB, who.address)
    pipes_before = splice_node.fds()["pipe"]
    c = splice_node.imap()
    c.login(who.address, who.password)
    typ, data = c.append("INBOX", None, None, message)  # up: client -> back-end
    assert typ == "OK", data
    c.select("INBOX")
    typ, data = c.search(None, "HEADER", "Message-ID", f"<{marker}@splice.test>")
    (number,) = data[0].split()
    typ, data = c.fetch(number, "(BODY.PEEK[])")  # down: back-end -> client
    assert typ == "OK"
    assert data[0][1] == message
    c.store(number, "+FLAGS", "\\Deleted")
    c.expunge()
    c.logout()
    log = splice_node.node.wait_for_log(f"disconnect: user {who.address}")
    up, down = disconnect_bytes(
        log, rf"disconnect: user {re.escape(who.address)}, (\d+) bytes from client, (\d+) bytes"
    )
    assert up > len(message) and down > len(message)
    # the pool keeps what it lent as spares: the relay did go through kernel pipes
    assert splice_node.fds()["pipe"] > pipes_before


def test_imap_idle_gets_pushes_while_spliced(splice_node: SpliceNode) -> None:
    who = user("u-crypt1@example.com")
    c = splice_node.imap()
    c.login(who.address, who.password)
    c.append("INBOX", None, None, WARM_UP)  # moves the session into splice mode
    c.select("INBOX")
    tag = c._new_tag()  # type: ignore[attr-defined]
    c.send(tag + b" IDLE\r\n")
    assert c.readline().startswith(b"+")
    time.sleep(2)  # silence while idling: nothing may close or stall the session
    other = splice_node.imap()
    other.login(who.address, who.password)
    other.append("INBOX", None, None, b"Subject: pushed\r\n\r\nhello\r\n")
    other.logout()
    c.sock.settimeout(30)
    while not re.match(rb"\* \d+ EXISTS", line := c.readline()):
        assert line.startswith(b"* "), line  # "* OK Still here" keepalives may come first
    c.send(b"DONE\r\n")
    while not (line := c.readline()).startswith(tag):
        pass
    assert b"OK" in line
    c.logout()


def test_imap_active_session_outlives_idle_timeout(idle_node: SpliceNode) -> None:
    """Traffic the kernel relays still counts as activity (idle_timeout 2 s, 5 s of NOOPs)."""
    who = user("u-sha@example.com")
    c = idle_node.imap()
    c.login(who.address, who.password)
    c.append("INBOX", None, None, WARM_UP)  # moves the session into splice mode
    for _ in range(10):
        time.sleep(0.5)
        assert c.noop()[0] == "OK"
    c.logout()


def test_imap_silent_session_is_closed_at_idle_timeout(idle_node: SpliceNode) -> None:
    who = user("u-sha@example.com")
    c = idle_node.imap()
    c.login(who.address, who.password)
    c.sock.settimeout(20)
    rest = b""
    while chunk := c.sock.recv(4096):  # nothing but the close comes
        rest += chunk
    assert rest == b""
    idle_node.node.wait_for_log("idle timeout: no traffic for 2s")


# ----------------------------------------------------------------------------------- POP3


def test_pop3_retr_20mb_byte_identical_and_counted(
    splice_node: SpliceNode, dovecot_backends: dict
) -> None:
    who = user("u-plain@example.com")
    message, marker = big_message(20 * MIB, who.address)
    imap = imaplib.IMAP4(dovecot_backends["a"].host, dovecot_backends["a"].imap_port)
    imap.login(who.address, who.password)
    imap.append("INBOX", None, None, message)
    imap.logout()
    p = poplib.POP3("127.0.0.1", splice_node.ports["pop3"], timeout=60)
    p.user(who.address)
    p.pass_(who.password)
    numbers = [int(line.split()[0]) for line in p.list()[1] if int(line.split()[1]) >= len(message)]
    found = False
    for n in numbers:
        _, lines, _ = p.retr(n)
        got = b"\r\n".join(lines) + b"\r\n"
        if marker.encode() in got[:2000]:
            assert got == message  # poplib undid the dot-stuffing; nothing else differs
            p.dele(n)
            found = True
    assert found
    p.quit()
    log = splice_node.node.wait_for_log(f"user {who.address}, state")
    up, down = disconnect_bytes(
        log, rf"user {re.escape(who.address)}, state \S+, (\d+) bytes up, (\d+) bytes down"
    )
    assert down > len(message) and up > 0


def test_pop3_active_session_outlives_idle_timeout(
    idle_node: SpliceNode, dovecot_backends: dict
) -> None:
    who = user("u-sha@example.com")
    imap = imaplib.IMAP4(dovecot_backends["a"].host, dovecot_backends["a"].imap_port)
    imap.login(who.address, who.password)
    imap.append("INBOX", None, None, WARM_UP)
    imap.logout()
    p = poplib.POP3("127.0.0.1", idle_node.ports["pop3"], timeout=10)
    p.user(who.address)
    p.pass_(who.password)
    for number, size in (line.split() for line in p.list()[1]):
        if int(size) >= len(WARM_UP):
            p.retr(int(number))  # moves the session into splice mode
            break
    for _ in range(10):
        time.sleep(0.5)
        p.noop()
    p.quit()


# ----------------------------------------------------------------------------- submission


def test_submission_10mb_message_relayed_intact(
    splice_node: SpliceNode, dovecot_backends: dict
) -> None:
    who = user("alice@example.com")
    message, marker = big_message(10 * MIB, who.address)
    c = smtplib.SMTP("127.0.0.1", splice_node.ports["submission"], timeout=60)
    c.ehlo("laptop.test")
    c.login(who.address, who.password)
    assert c.sendmail(who.address, [who.address], message) == {}
    c.quit()
    got = dovecot_backends["a"].wait_for_message(who.address, marker.encode(), timeout=60)
    body = message.split(b"\r\n\r\n", 1)[1]
    assert body.replace(b"\r\n", b"\n") in got.replace(b"\r\n", b"\n")


def test_submission_active_session_outlives_idle_timeout(idle_node: SpliceNode) -> None:
    who = user("alice@example.com")
    c = smtplib.SMTP("127.0.0.1", idle_node.ports["submission"], timeout=10)
    c.ehlo("laptop.test")
    c.login(who.address, who.password)
    c.sendmail(who.address, [who.address], WARM_UP)  # moves the session into splice mode
    for _ in range(10):
        time.sleep(0.5)
        assert c.noop()[0] == 250
    c.quit()


# ---------------------------------------------------------------------------------- fds


def test_no_fd_left_behind_after_many_sessions(splice_node: SpliceNode) -> None:
    """Sessions come and go, some cut mid-transfer: sockets return, pipes stay bounded."""
    who = user("u-md5@example.com")
    c = splice_node.imap()
    c.login(who.address, who.password)  # the directory connection is up from here on
    c.logout()
    time.sleep(0.5)
    before = splice_node.fds()
    for n in range(12):
        c = splice_node.imap()
        c.login(who.address, who.password)
        c.select("INBOX")
        if n % 3 == 0:  # cut off while the back-end is still sending
            c.send(b"x FETCH 1:* (BODY.PEEK[])\r\n")
            c.sock.recv(65536)
            c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST
            c.sock.close()
        else:
            c.logout()
    wait_until(lambda: splice_node.fds()["socket"] <= before["socket"], "sockets to close")
    after = splice_node.fds()
    assert after["pipe"] <= before["pipe"] + 2 * SPARE_PIPES
    assert {k: v for k, v in after.items() if k not in ("pipe", "socket")} == {
        k: v for k, v in before.items() if k not in ("pipe", "socket")
    }
