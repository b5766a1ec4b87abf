"""The load-balancer tier: a real HAProxy (TCP mode, PROXY protocol) in front of two nodes.

    client (127.77.x.y) --> HAProxy 127.0.0.1:P --send-proxy-v2--> node 1 | node 2
                                                   (roundrobin)      haproxy:tcp:... listeners
                        node --IMAP ID x-originating-ip / POP3 XCLIENT--> Dovecot a | b

What must hold: the nodes see (log, forward to the back-end) the client's own address
carried in the PROXY header, not HAProxy's; HAProxy spreads sessions over both nodes and
keeps serving when one stops; a PROXY listener never talks to a client that connects
without the header (nor greets it); the plaintext-login policy follows the client's
address in the header, not the balancer's.

Clients connect from a random 127.77.x.y address of their own, so the address a node
logs and forwards can only have come from the PROXY header. A test finds its Dovecot
login line as the next one past the log's length before the login (the Dovecots are per
xdist worker, and a worker runs one test at a time), then checks its C{rip=}.
The module's cluster (two nodes, one HAProxy) is shared; the failover test, which stops
a node, builds a cluster of its own. HAProxy health-checks each node with its PROXY
header and waits for the greeting (C{option tcp-check}), so a check is a real session.
"""

from __future__ import annotations

import imaplib
import os
import poplib
import random
import re
import socket
import ssl
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.clients import SourceIMAP4, SourcePOP3
from tests.integration.configs import ldap_usermap
from tests.integration.directory_data import User, user
from tests.integration.node import Node, start_node
from tests.integration.servers.dovecot import Dovecot
from tests.integration.servers.haproxy import HAProxy, start_haproxy
from tests.integration.servers.pki import IssuedCert, TestCA
from tests.integration.servers.ports import free_port
from tests.integration.servers.slapd import Slapd

pytestmark = pytest.mark.integration

ALICE = user("alice@example.com")
BOB = user("bob@example.com")
#: HAProxy's health check waits for these greetings (after sending its PROXY header)
GREETINGS = {"imap": "* OK", "imap_starttls": "* OK", "pop3": "+OK"}


# ------------------------------------------------------------------------------- clients


def client_source() -> str:
    """A loopback address of this test's own: 127.77.x.y (all of 127/8 is local on Linux)."""
    rng = random.SystemRandom()
    return f"127.77.{rng.randint(0, 255)}.{rng.randint(2, 254)}"


def imap_backend_of(c: imaplib.IMAP4) -> str:
    """The back-end a session landed on: the X-Backend header of the seeded message."""
    typ, data = c.select("INBOX", readonly=True)
    assert typ == "OK", data
    typ, found = c.search(None, "HEADER", "X-Backend", '""')
    assert typ == "OK" and found[0], found
    first = found[0].split()[0].decode()
    typ, fetched = c.fetch(first, "(BODY.PEEK[HEADER.FIELDS (X-BACKEND)])")
    assert typ == "OK" and isinstance(fetched[0], tuple), fetched
    m = re.search(rb"X-Backend: (\w+)", fetched[0][1])
    assert m, fetched
    return m.group(1).decode()


def pop3_backend_of(pop: poplib.POP3) -> str:
    count, _ = pop.stat()
    for number in range(1, count + 1):
        _, lines, _ = pop.top(number, 0)
        for line in lines:
            if line.startswith(b"X-Backend:"):
                return line.split(b":", 1)[1].strip().decode()
    raise AssertionError(f"no message with an X-Backend header among {count}")


def imap_login(port: int, source: str, who: User = ALICE) -> str:
    """Log in through HAProxy from C{source}; the back-end label the session reached."""
    c = SourceIMAP4("127.0.0.1", port, source)
    try:
        c.login(who.address, who.password)
        return imap_backend_of(c)
    finally:
        try:
            c.logout()
        except (imaplib.IMAP4.abort, OSError):
            pass


def wait_for_line(
    what: str, text_of: Callable[[], str], *needles: str, timeout: float = 15.0
) -> str:
    """Poll C{text_of()} until one line holds every needle; return that line."""
    deadline = time.monotonic() + timeout
    while True:
        text = text_of()
        for line in text.splitlines():
            if all(n in line for n in needles):
                return line
        if time.monotonic() > deadline:
            raise AssertionError(f"no line with {needles!r} in the {what} log:\n{text[-4000:]}")
        time.sleep(0.05)


def backend_login_line(dovecot: Dovecot, service: str, address: str, after: int) -> str:
    """Dovecot's first C{<service>-login: Info: Login:} line for C{address} past offset
    C{after} of its log (take C{len(dovecot.log_text())} before the login).

    The Dovecots are per xdist worker and the tests of a worker run one at a time, so
    the next login line for the user is this test's; its C{rip=} is then checked by the
    caller, which fails at once (and says what Dovecot saw) when the address is wrong.
    """
    return wait_for_line(
        f"dovecot {dovecot.label}",
        lambda: dovecot.log_text()[after:],
        f"{service}-login: Info: Login: user=<{address}>",
    )


def read_until_closed(port: int, send: bytes) -> bytes:
    """Connect straight to a node (no PROXY header), send C{send}, return all it answers.

    A PROXY listener must close at once on a first line that is no PROXY header; the
    socket timeout only bounds a broken node, no assertion depends on it.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=15) as s:
        s.sendall(send)
        received = b""
        while True:
            try:
                chunk = s.recv(4096)
            except ConnectionResetError:
                break
            if not chunk:
                break
            received += chunk
        return received


# -------------------------------------------------------------------------------- nodes


def ldap_map(slapd: Slapd) -> str:
    return f"""
{ldap_usermap(slapd, cache_ttl=60, negative_ttl=10)}"""


@dataclass(frozen=True)
class NodePorts:
    """A node's PROXY-protocol listeners: plain IMAP/POP3, and STARTTLS ones that keep
    the default C{loopback_plaintext} (passwords in the clear from loopback peers only)."""

    imap: int
    pop3: int
    imap_starttls: int
    pop3_starttls: int

    @classmethod
    def pick(cls) -> NodePorts:
        return cls(free_port(), free_port(), free_port(), free_port())


def node_config(
    name: str, ports: NodePorts, slapd: Slapd, dovecots: dict[str, Dovecot], cert: IssuedCert
) -> str:
    """Every node of the cluster has this configuration; only the name and ports differ."""

    def listener(kind: str, port: int, tls: str) -> str:
        text = (
            f"\n[[{kind}.listener]]\n"
            f'endpoint = "haproxy:tcp:port={port}:interface=127.0.0.1"\n'
            f'tls = "{tls}"\n'
        )
        if tls != "none":
            text += f'cert_file = "{cert.cert_file}"\nkey_file = "{cert.key_file}"\n'
        return text

    return (
        f'[node]\nname = "{name}"\n'
        + ldap_map(slapd)
        + f"""
[imap]
usermap = "main"
backend_port = {dovecots["a"].imap_port}
forward_client_address = true
backend_connect_timeout = 5
"""
        + listener("imap", ports.imap, "none")
        + listener("imap", ports.imap_starttls, "starttls")
        + f"""
[pop3]
usermap = "main"
backend_port = {dovecots["a"].pop3_port}
forward_client_address = true
backend_connect_timeout = 5
"""
        + listener("pop3", ports.pop3, "none")
        + listener("pop3", ports.pop3_starttls, "starttls")
    )


@dataclass
class Cluster:
    """Two nodes with the same configuration, and HAProxy in front of them."""

    nodes: list[Node]
    ports: list[NodePorts]
    haproxy: HAProxy

    @property
    def imap(self) -> int:
        return self.haproxy.port("imap")

    @property
    def imap_starttls(self) -> int:
        return self.haproxy.port("imap_starttls")

    @property
    def pop3(self) -> int:
        return self.haproxy.port("pop3")

    def stop(self) -> None:
        self.haproxy.stop()
        for node in self.nodes:
            node.stop()


def start_nodes(
    directory: Path, slapd: Slapd, dovecots: dict[str, Dovecot], cert: IssuedCert
) -> tuple[list[Node], list[NodePorts]]:
    nodes: list[Node] = []
    ports: list[NodePorts] = []
    try:
        for n in (1, 2):
            p = NodePorts.pick()
            config = node_config(f"fe-lb-{n}", p, slapd, dovecots, cert)
            waits = [
                ("127.0.0.1", port) for port in (p.imap, p.pop3, p.imap_starttls, p.pop3_starttls)
            ]
            nodes.append(start_node(directory / f"node{n}", config, waits))
            ports.append(p)
    except BaseException:
        for node in nodes:
            node.stop()
        raise
    return nodes, ports


def start_cluster(
    directory: Path,
    slapd: Slapd,
    dovecots: dict[str, Dovecot],
    cert: IssuedCert,
) -> Cluster:
    """Two nodes, and HAProxy (send-proxy-v2, roundrobin) in front of three of their
    listeners: IMAP, IMAP with STARTTLS, POP3."""
    nodes, ports = start_nodes(directory, slapd, dovecots, cert)
    try:
        haproxy = start_haproxy(
            directory / "haproxy",
            {
                "imap": tuple(("127.0.0.1", p.imap) for p in ports),
                "imap_starttls": tuple(("127.0.0.1", p.imap_starttls) for p in ports),
                "pop3": tuple(("127.0.0.1", p.pop3) for p in ports),
            },
            proxy_protocol="v2",
            expect=GREETINGS,
        )
    except BaseException:
        for node in nodes:
            node.stop()
        raise
    return Cluster(nodes, ports, haproxy)


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory,
    slapd: Slapd,
    dovecot_backends: dict[str, Dovecot],
    node_cert: IssuedCert,
) -> Iterator[Cluster]:
    """Two nodes behind HAProxy with C{send-proxy-v2}; shared by this module's tests,
    none of which stops any part of it."""
    c = start_cluster(tmp_path_factory.mktemp("lb"), slapd, dovecot_backends, node_cert)
    try:
        yield c
    finally:
        c.stop()


def logins_of(node: Node, address: str) -> int:
    return len(re.findall(rf"login ok: user {re.escape(address)} ", node.log_text()))


# -------------------------------------------------------------------------------- IMAP


def test_imap_through_haproxy_reaches_the_users_backend(cluster: Cluster) -> None:
    assert imap_login(cluster.imap, client_source(), ALICE) == "a"
    assert imap_login(cluster.imap, client_source(), BOB) == "b"


def test_imap_node_logs_the_clients_own_address(cluster: Cluster) -> None:
    """The session's lines name the address from the PROXY header, not HAProxy's."""
    source = client_source()
    assert imap_login(cluster.imap, source) == "a"
    logs = [node.log_text() for node in cluster.nodes]
    pattern = rf"login ok: user alice@example\.com from {re.escape(source)}:\d+ routed to "
    assert any(re.search(pattern, log) for log in logs), "\n".join(
        line for log in logs for line in log.splitlines() if "login ok" in line
    )
    connect = rf"IMAP:\w+: connect from {re.escape(source)}:\d+ on haproxy:tcp:"
    assert any(re.search(connect, log) for log in logs)


def test_imap_node_forwards_the_clients_own_address_to_dovecot(
    cluster: Cluster, dovecot_backends: dict[str, Dovecot]
) -> None:
    """IMAP ID x-originating-ip carries the PROXY header's source: Dovecot logs it as rip=."""
    source = client_source()
    offset = len(dovecot_backends["a"].log_text())
    assert imap_login(cluster.imap, source) == "a"
    line = backend_login_line(dovecot_backends["a"], "imap", ALICE.address, offset)
    assert f"rip={source}," in line, line


def test_roundrobin_spreads_sessions_over_both_nodes(cluster: Cluster) -> None:
    before = [logins_of(node, ALICE.address) for node in cluster.nodes]
    source = client_source()
    for _ in range(4):  # roundrobin over two healthy servers: two sessions each
        assert imap_login(cluster.imap, source) == "a"
    after = [logins_of(node, ALICE.address) for node in cluster.nodes]
    assert all(a > b for a, b in zip(after, before, strict=True)), (before, after)


def test_proxy_protocol_v1_works_as_well(
    cluster: Cluster, dovecot_backends: dict[str, Dovecot], tmp_path: Path
) -> None:
    """The same nodes behind a second HAProxy that sends the text header (send-proxy)."""
    v1 = start_haproxy(
        tmp_path / "haproxy-v1",
        {"imap": tuple(("127.0.0.1", p.imap) for p in cluster.ports)},
        proxy_protocol="v1",
        expect=GREETINGS,
    )
    try:
        source = client_source()
        offset = len(dovecot_backends["a"].log_text())
        assert imap_login(v1.port("imap"), source) == "a"
        line = backend_login_line(dovecot_backends["a"], "imap", ALICE.address, offset)
        assert f"rip={source}," in line, line
        logs = "".join(node.log_text() for node in cluster.nodes)
        assert re.search(rf"login ok: user alice@example\.com from {re.escape(source)}:", logs)
    finally:
        v1.stop()


def pipes_of(node: Node) -> int:
    """Kernel pipes the node holds open (the splice relay's, lent or spare)."""
    base = Path(f"/proc/{node.pid()}/fd")
    count = 0
    for fd in os.listdir(base):
        try:
            count += os.readlink(base / fd).startswith("pipe:")
        except OSError:
            continue  # closed while listing
    return count


def test_a_bulk_session_behind_haproxy_is_spliced(cluster: Cluster) -> None:
    """Behind the balancer the session runs on the socket's own transport: once it has
    moved more than Pipe.splice_after, bytes go through kernel pipes, byte-identical."""
    marker = uuid.uuid4().hex
    body = (b"y" * 998 + b"\r\n") * 600  # 600 KB: well past the 128 KiB switch
    message = f"Subject: lb splice {marker}\r\nMessage-ID: <{marker}@lb.test>\r\n\r\n".encode()
    message += body
    # the reactor's waker is a pipe too; the splice pool adds pipes on a node's first splice
    # (no other test of this module's cluster moves enough to splice)
    before = [pipes_of(node) for node in cluster.nodes]
    c = SourceIMAP4("127.0.0.1", cluster.imap, client_source())
    try:
        c.login(ALICE.address, ALICE.password)
        assert c.append("INBOX", None, None, message)[0] == "OK"
        c.select("INBOX")
        typ, found = c.search(None, "HEADER", "Message-ID", f"<{marker}@lb.test>")
        (number,) = found[0].split()
        typ, data = c.fetch(number, "(BODY.PEEK[])")
        assert typ == "OK" and data[0][1] == message
        after = [pipes_of(node) for node in cluster.nodes]
        assert any(a > b for a, b in zip(after, before, strict=True)), (before, after)
        c.store(number, "+FLAGS", "\\Deleted")
        c.expunge()
    finally:
        c.logout()


def test_starttls_through_haproxy(cluster: Cluster, pki: TestCA) -> None:
    """TLS starts on a PROXY-wrapped connection (the wrapper passes ITLSTransport on)."""
    c = SourceIMAP4("127.0.0.1", cluster.imap_starttls, client_source())
    try:
        c.starttls(ssl.create_default_context(cafile=str(pki.cert_file)))
        assert "LOGINDISABLED" not in c.capabilities
        c.login(ALICE.address, ALICE.password)
        assert imap_backend_of(c) == "a"
    finally:
        c.logout()


# -------------------------------------------------------------------------------- POP3


def test_pop3_through_haproxy_forwards_the_clients_own_address(
    cluster: Cluster, dovecot_backends: dict[str, Dovecot]
) -> None:
    source = client_source()
    offset = len(dovecot_backends["a"].log_text())
    pop = SourcePOP3("127.0.0.1", cluster.pop3, source)
    try:
        pop.user(ALICE.address)
        pop.pass_(ALICE.password)
        assert pop3_backend_of(pop) == "a"
    finally:
        pop.quit()
    # XCLIENT ADDR= carries the PROXY header's source: Dovecot logs it as rip=
    line = backend_login_line(dovecot_backends["a"], "pop3", ALICE.address, offset)
    assert f"rip={source}," in line, line
    logs = "".join(node.log_text() for node in cluster.nodes)
    assert re.search(
        rf"POP3:\w+: login alice@example\.com from {re.escape(source)}:\d+ routed", logs
    )


# ------------------------------------------------------------------ no header, no talk


@pytest.mark.parametrize("kind", ["imap", "pop3"])
def test_a_client_without_proxy_header_gets_no_greeting(cluster: Cluster, kind: str) -> None:
    """Straight to a node's PROXY listener, bypassing HAProxy: closed, nothing said.

    The client speaks first here (a server-first protocol's client would wait for a
    greeting that must never come): the node closes on a first line that is no header.
    """
    port = getattr(cluster.ports[0], kind)
    first = b"a CAPABILITY\r\n" if kind == "imap" else b"CAPA\r\n"
    assert read_until_closed(port, first) == b""


@pytest.mark.parametrize("kind", ["imap", "pop3"])
def test_plaintext_policy_follows_the_address_in_the_header(cluster: Cluster, kind: str) -> None:
    """A client that is remote per the PROXY header must not log in in the clear, even
    though the TCP peer (the balancer) is on loopback: C{loopback_plaintext} is about
    where the client is, and behind a balancer only the header knows that.

    The header is written by hand (a TEST-NET-2 source); nothing leaves 127.0.0.0/8.
    """
    port = getattr(cluster.ports[0], f"{kind}_starttls")
    header = f"PROXY TCP4 198.51.100.7 127.0.0.1 40000 {port}\r\n".encode()
    with socket.create_connection(("127.0.0.1", port), timeout=15) as s, s.makefile("rb") as f:
        s.sendall(header)
        greeting = f.readline()
        if kind == "imap":
            assert greeting.startswith(b"* OK [CAPABILITY "), greeting
            assert b"LOGINDISABLED" in greeting and b"AUTH=" not in greeting, greeting
            s.sendall(
                b"a LOGIN " + ALICE.address.encode() + b" " + ALICE.password.encode() + b"\r\n"
            )
            answer = f.readline()
            assert answer.startswith(b"a NO [PRIVACYREQUIRED]"), answer
        else:
            assert greeting.startswith(b"+OK"), greeting
            s.sendall(b"USER " + ALICE.address.encode() + b"\r\n")
            answer = f.readline()
            assert answer.startswith(b"-ERR"), answer


# ------------------------------------------------------------------------------ failover


@pytest.fixture
def own_cluster(
    tmp_path: Path,
    slapd: Slapd,
    dovecot_backends: dict[str, Dovecot],
    node_cert: IssuedCert,
) -> Iterator[Cluster]:
    """A cluster of the test's own, for a test that stops one of its nodes."""
    c = start_cluster(tmp_path, slapd, dovecot_backends, node_cert)
    try:
        yield c
    finally:
        c.stop()


def test_sessions_go_on_when_a_node_stops(own_cluster: Cluster) -> None:
    """Stop node 1: every new session lands on node 2. HAProxy redispatches a refused
    connection at once and its check marks node 1 down; no timing is asserted, only that
    ten logins in a row succeed before a generous deadline."""
    c = own_cluster
    source = client_source()
    assert imap_login(c.imap, source) == "a"
    c.nodes[0].stop()
    before = logins_of(c.nodes[1], ALICE.address)
    streak, deadline = 0, time.monotonic() + 60
    while streak < 10:
        try:
            assert imap_login(c.imap, source) == "a"
            streak += 1
        except (imaplib.IMAP4.error, imaplib.IMAP4.abort, OSError):
            streak = 0
            if time.monotonic() > deadline:
                raise
    assert logins_of(c.nodes[1], ALICE.address) >= before + 10
    c.haproxy.wait_for_log("be_imap/node1 is DOWN")
