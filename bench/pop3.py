#!/usr/bin/env python3
"""POP3 proxy benchmark: logins/s and RETR throughput, through the node vs straight to Dovecot.

Run from the repository root as root (Dovecot and slapd are started here, as in the
integration tests)::

    /tmp/venv/bin/python bench/pop3.py [--seconds 8] [--clients 16] [--users 400]

It starts, on loopback addresses of its own: a test CA, one Dovecot back-end seeded with
C{--users} bench users (plus one holding a 20 MiB message), a slapd holding the same
users (SSHA passwords, mailHost = the Dovecot address), and then, one after the other:

- "direct": the clients talk to Dovecot's POP3 port;
- "node, LDAP per login": an axigen-fe node (twistd) whose ldap-password map has its
  cache off, so every login is a live LDAP search plus a password check on the node;
- "node, warm cache": the same with the map's cache on and already filled;
- "nginx mail": nginx's mail proxy (C{proxy_buffer 64k}) with an C{auth_http} answered
  by nginx itself (a static route to the back-end, no directory), when the Debian
  nginx mail module is installed.

A login is: connect, greeting, USER, PASS, STAT, QUIT, close; C{--clients} run at once
(asyncio, in this process). CPU per login is the proxy's utime+stime from /proc over
the measured window, divided by the logins in it. RETR: one client fetches the 20 MiB
message C{--retr-rounds} times per path; MB/s is the median. Client, proxy and Dovecot
share the machine's cores: compare ratios within one run, not absolute numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import imaplib
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from _common import cpu_seconds, machine, percentile, process_tree_cpu, remove_work_dirs, table  # noqa: E402
from _logins import LoginRun, login_load  # noqa: E402
from _nginx import start_nginx_mail  # noqa: E402

from tests.integration.directory_data import PEOPLE_DN, PROXY_DN, PROXY_PASSWORD, User  # noqa: E402
from tests.integration.node import Node, start_node  # noqa: E402
from tests.integration.servers.dovecot import Dovecot, make_dovecots, make_root_dir  # noqa: E402
from tests.integration.servers.pki import make_ca  # noqa: E402
from tests.integration.servers.ports import free_port, random_loopback_prefix, wait_for_port  # noqa: E402
from tests.integration.servers.slapd import Slapd, start_slapd  # noqa: E402

BIG_USER = User("pop3big", "pop3big@example.com", "big-secret", "SSHA", "a")
MIB = 1024 * 1024


# ----------------------------------------------------------------------------- measuring


async def _expect_ok(reader: asyncio.StreamReader) -> None:
    line = await reader.readline()
    if not line.startswith(b"+OK"):
        raise RuntimeError(f"unexpected answer {line[:80]!r}")


async def one_login(host: str, port: int, u: User) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        await _expect_ok(reader)
        writer.write(f"USER {u.address}\r\n".encode())
        await _expect_ok(reader)
        writer.write(f"PASS {u.password}\r\n".encode())
        await _expect_ok(reader)
        writer.write(b"STAT\r\n")
        await _expect_ok(reader)
        writer.write(b"QUIT\r\n")
        await _expect_ok(reader)
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except OSError:
            pass


def _read_line(s: socket.socket) -> bytes:
    line = bytearray()
    while not line.endswith(b"\r\n"):
        c = s.recv(1)
        if not c:
            raise RuntimeError("connection closed")
        line += c
    return bytes(line)


def retr_once(host: str, port: int, u: User, size_hint: int) -> tuple[float, int]:
    """Seconds for RETR 1 (command sent -> final dot line received), and bytes received."""
    with socket.create_connection((host, port), timeout=120) as s:
        _read_line(s)
        for command in (f"USER {u.address}\r\n", f"PASS {u.password}\r\n"):
            s.sendall(command.encode())
            if not _read_line(s).startswith(b"+OK"):
                raise RuntimeError("login for RETR failed")
        view = memoryview(bytearray(4 * MIB))
        got = 0
        tail = b""
        start = time.perf_counter()
        s.sendall(b"RETR 1\r\n")
        while not tail.endswith(b"\r\n.\r\n"):
            n = s.recv_into(view)
            if n == 0:
                raise RuntimeError("connection closed during RETR")
            got += n
            tail = (tail + bytes(view[max(0, n - 5) : n]))[-5:]
        elapsed = time.perf_counter() - start
        s.sendall(b"QUIT\r\n")
        if got < size_hint:
            raise RuntimeError(f"RETR returned {got} bytes, expected at least {size_hint}")
        return elapsed, got


@dataclass
class RetrRun:
    seconds: list[float]
    size: int
    proxy_cpu: float | None

    @property
    def mb_per_s(self) -> float:
        return self.size / MIB / statistics.median(self.seconds)

    @property
    def cpu_ms_per_mib(self) -> float | None:
        if self.proxy_cpu is None:
            return None
        return self.proxy_cpu / (self.size / MIB * len(self.seconds)) * 1e3


def retr_load(
    host: str, port: int, rounds: int, size_hint: int, cpu: Callable[[], float] | None
) -> RetrRun:
    retr_once(host, port, BIG_USER, size_hint)  # warm page cache and connection paths
    cpu0 = cpu() if cpu else None
    times = []
    size = 0
    for _ in range(rounds):
        t, size = retr_once(host, port, BIG_USER, size_hint)
        times.append(t)
    used = cpu() - cpu0 if cpu is not None and cpu0 is not None else None
    return RetrRun(times, size, used)


# ----------------------------------------------------------------------------- set-up


def bench_users(count: int) -> list[User]:
    return [
        User(f"pb{i}", f"pb{i}@example.com", f"pb-secret-{i}", "SSHA", "a") for i in range(count)
    ]


def big_message(size: int) -> bytes:
    import base64

    body = base64.encodebytes(os.urandom(size * 3 // 4)).replace(b"\n", b"\r\n")
    head = (
        b"From: bench <bench@example.com>\r\nTo: <pop3big@example.com>\r\nSubject: 20 MiB\r\n\r\n"
    )
    return head + body


def node_config(directory: Slapd, backend: Dovecot, port: int, cache_ttl: float) -> str:
    return f"""
[node]
name = "bench-pop3"

[[ldap_connector]]
name = "dir"
uris = ["{directory.ldap_uri}"]
start_tls = true
ca_file = "{directory.ca_file}"
bind_dn = "{PROXY_DN}"
bind_password = "{PROXY_PASSWORD}"
base_dn = "{PEOPLE_DN}"

[[usermap]]
name = "main"
type = "ldap-password"
connector = "dir"
cache_ttl = {cache_ttl}
negative_cache_ttl = {cache_ttl}

[pop3]
usermap = "main"
backend_port = {backend.pop3_port}
backend_tls = "none"
forward_client_address = true
authenticate_on_proxy = true

[[pop3.listener]]
endpoint = "tcp:port={port}:interface=127.0.0.1"
tls = "none"
"""


def bare_relay(backend_host: str, backend_port: int, listen_port: int) -> None:
    """A minimal Twisted relay (no POP3 at all): the floor any Twisted proxy pays here.

    Accept, connect to the back-end, then L{axigen_fe.net.relay.Pipe} both ways; run as
    C{bench/pop3.py --bare-relay HOST PORT LISTEN} in a process of its own.
    """
    from twisted.internet import reactor
    from twisted.internet.endpoints import TCP4ClientEndpoint
    from twisted.internet.protocol import Factory, Protocol

    from axigen_fe.net.relay import Pipe

    class Back(Protocol):
        def __init__(self, front: Front) -> None:
            self.front = front

        def connectionMade(self) -> None:
            front = self.front
            front.pipe = Pipe(front.transport, self.transport)  # type: ignore[arg-type]
            if front.held:
                front.pipe.to_backend(front.held)

        def dataReceived(self, data: bytes) -> None:
            assert self.front.pipe is not None
            self.front.pipe.to_client(data)

        def connectionLost(self, reason: object = None) -> None:
            if self.front.pipe is not None:
                self.front.pipe.close()
            else:
                self.front.transport.loseConnection()  # type: ignore[union-attr]

    class OneShot(Factory):
        noisy = False

        def __init__(self, proto: Protocol) -> None:
            self.proto = proto

        def buildProtocol(self, addr: object) -> Protocol:
            return self.proto

    class Front(Protocol):
        pipe: Pipe | None = None
        held = b""

        def connectionMade(self) -> None:
            endpoint = TCP4ClientEndpoint(reactor, backend_host, backend_port)
            endpoint.connect(OneShot(Back(self))).addErrback(
                lambda _: self.transport.loseConnection()
            )

        def dataReceived(self, data: bytes) -> None:
            if self.pipe is not None:
                self.pipe.to_backend(data)
            else:
                self.held += data

        def connectionLost(self, reason: object = None) -> None:
            if self.pipe is not None:
                self.pipe.close()

    factory = Factory.forProtocol(Front)
    factory.noisy = False
    reactor.listenTCP(listen_port, factory, interface="127.0.0.1")  # type: ignore[attr-defined]
    reactor.run()  # type: ignore[attr-defined]


# ----------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="measured seconds per login run")
    parser.add_argument(
        "--warmup", type=float, default=1.5, help="unmeasured seconds before each run"
    )
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients")
    parser.add_argument("--users", type=int, default=400, help="distinct bench users (round robin)")
    parser.add_argument("--retr-mib", type=int, default=20, help="size of the RETR message in MiB")
    parser.add_argument("--retr-rounds", type=int, default=5, help="RETRs per path")
    parser.add_argument("--rounds", type=int, default=2, help="login runs per path (best kept)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs)")
    parser.add_argument(
        "--bare-relay", nargs=3, metavar=("HOST", "PORT", "LISTEN"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.bare_relay:
        bare_relay(args.bare_relay[0], int(args.bare_relay[1]), int(args.bare_relay[2]))
        return

    work = Path(tempfile.mkdtemp(prefix="axfe-bench-pop3-"))
    mail_root = make_root_dir("axfe-bench-pop3-mail-")
    prefix = random_loopback_prefix()
    host = f"{prefix}.1"
    users = bench_users(args.users)
    ca = make_ca(work / "pki")
    dovecot = make_dovecots(
        {"a": host},
        {"a": {u.address: u for u in [*users, BIG_USER]}},
        {"a": ca.issue("bench-dovecot", ips=(host,))},
        ca.cert_file,
        mail_root,
    )["a"]
    directory: Slapd | None = None
    nodes: list[Node] = []
    nginx: subprocess.Popen[bytes] | None = None
    bare: subprocess.Popen[bytes] | None = None
    try:
        print(
            f"starting Dovecot on {host} with {len(users)} users, slapd, nodes ...", file=sys.stderr
        )
        dovecot.start()
        directory = start_slapd(work / "slapd", ca, {"a": host}, users=[*users, BIG_USER])

        message = big_message(args.retr_mib * MIB)
        imap = imaplib.IMAP4(dovecot.host, dovecot.imap_port)
        imap.login(BIG_USER.address, BIG_USER.password)
        # the seeded welcome message is 1; make the big one 1 by deleting it first
        imap.select("INBOX")
        imap.store("1:*", "+FLAGS", "\\Deleted")
        imap.expunge()
        imap.append("INBOX", None, None, message)
        imap.logout()

        cold_port, warm_port, nginx_port = free_port(), free_port(), free_port()
        cold = start_node(
            work / "node-cold",
            node_config(directory, dovecot, cold_port, 0),
            [("127.0.0.1", cold_port)],
        )
        nodes.append(cold)
        warm = start_node(
            work / "node-warm",
            node_config(directory, dovecot, warm_port, 3600),
            [("127.0.0.1", warm_port)],
        )
        nodes.append(warm)
        nginx = start_nginx_mail(
            work / "nginx", "pop3", dovecot.host, dovecot.pop3_port, nginx_port
        )
        bare_port = free_port()
        bare = subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--bare-relay",
                dovecot.host,
                str(dovecot.pop3_port),
                str(bare_port),
            ]
        )
        wait_for_port("127.0.0.1", bare_port, timeout=15)
        bare_pid = bare.pid

        paths: list[tuple[str, str, int, Callable[[], float] | None]] = [
            ("direct Dovecot", dovecot.host, dovecot.pop3_port, None),
            (
                "node, LDAP lookup per login (cache off)",
                "127.0.0.1",
                cold_port,
                lambda: cpu_seconds(cold.pid()),
            ),
            ("node, warm map cache", "127.0.0.1", warm_port, lambda: cpu_seconds(warm.pid())),
        ]
        paths.append(
            (
                "bare Twisted relay (no POP3 logic, no map, no logs)",
                "127.0.0.1",
                bare_port,
                lambda: cpu_seconds(bare_pid),
            )
        )
        if nginx is not None:
            paths.append(
                (
                    "nginx mail proxy (auth_http static, proxy_buffer 64k)",
                    "127.0.0.1",
                    nginx_port,
                    process_tree_cpu(nginx.pid),
                )
            )

        # fill the warm node's cache with every user once
        async def fill() -> None:
            for i in range(0, len(users), 16):
                await asyncio.gather(
                    *(one_login("127.0.0.1", warm_port, u) for u in users[i : i + 16])
                )

        asyncio.run(fill())

        login_rows = []
        retr_rows = []
        base_rate = base_mbs = None
        best: dict[str, LoginRun] = {}
        for round_ in range(args.rounds):  # interleaved, so a busy moment hits every path alike
            for name, h, p, cpu in paths:
                print(f"logins, round {round_ + 1}: {name} ...", file=sys.stderr)
                run = asyncio.run(
                    login_load(one_login, h, p, users, args.clients, args.seconds, args.warmup, cpu)
                )
                if name not in best or run.rate > best[name].rate:
                    best[name] = run
        for name, _, _, _ in paths:
            run = best[name]
            if base_rate is None:
                base_rate = run.rate
            lat_ms = [x * 1000 for x in run.latencies]
            us = run.cpu_us_per_login
            login_rows.append(
                [
                    name,
                    run.rate,
                    f"{run.rate / base_rate:.2f}x",
                    "-" if us is None else f"{us:.0f}",
                    percentile(lat_ms, 50),
                    percentile(lat_ms, 99),
                    run.errors,
                ]
            )
        for name, h, p, cpu in paths:
            if "warm" in name or "bare" in name:
                continue  # the map plays no part in a RETR; the bare relay is the same Pipe
            print(f"RETR {args.retr_mib} MiB: {name} ...", file=sys.stderr)
            retr = retr_load(h, p, args.retr_rounds, len(message), cpu)
            if base_mbs is None:
                base_mbs = retr.mb_per_s
            ms = retr.cpu_ms_per_mib
            retr_rows.append(
                [
                    "node" if name.startswith("node") else name,
                    retr.mb_per_s,
                    f"{retr.mb_per_s / base_mbs:.2f}x",
                    "-" if ms is None else f"{ms:.2f}",
                ]
            )

        print(f"\nPOP3 benchmark, {machine()}\n")
        print(
            table(
                f"Logins/s ({args.clients} concurrent clients; USER, PASS, STAT, QUIT; "
                f"{len(users)} users round robin; best of {args.rounds} interleaved runs)",
                [
                    "path",
                    "logins/s",
                    "vs direct",
                    "proxy CPU us/login",
                    "p50 ms",
                    "p99 ms",
                    "errors",
                ],
                login_rows,
            )
        )
        print(
            table(
                f"RETR of a {args.retr_mib} MiB message (median of {args.retr_rounds})",
                ["path", "MiB/s", "vs direct", "proxy CPU ms/MiB"],
                retr_rows,
            )
        )
    finally:
        for proc in (nginx, bare):
            if proc is not None:
                proc.terminate()
                proc.wait(10)
        for n in nodes:
            n.stop()
        if directory is not None:
            directory.stop()
        dovecot.stop()
        remove_work_dirs(args.keep, work, mail_root)


if __name__ == "__main__":
    main()
