#!/usr/bin/env python3
"""IMAP proxy benchmark: logins/s, CPU per login, FETCH relay, memory per idle session.

Run from the repository root as root (Dovecot and slapd are started here, as in the
integration tests)::

    /tmp/venv/bin/python bench/imap.py [--seconds 8] [--clients 16] [--sessions 1000,5000]

It starts, on loopback addresses of its own: a test CA, one Dovecot back-end seeded with
bench users (plus one holding a 20 MiB message) and tuned to hold thousands of logged-in
sessions, a slapd holding the same users (SSHA passwords, mailHost = the Dovecot
address), and axigen-fe nodes (twistd, as operators run them):

Logins (connect, greeting, LOGIN, SELECT INBOX, LOGOUT, close; C{--clients} at once):
  - direct Dovecot;
  - node, LDAP lookup per login: ldap-password map with its cache off, so each login is a
    live LDAP search plus a password check on the node (distinct users, round robin);
  - node, warm map cache (every user looked up once before the run);
  - nginx's mail proxy (C{proxy_buffer 64k}, C{auth_http} answered by nginx itself with a
    static route: no directory at all), when the Debian mail module is installed.
  CPU per login is the proxy process's utime+stime (/proc) over the window / logins.

Relay: one client FETCHes the 20 MiB message (BODY.PEEK[]) C{--fetch-rounds} times per
path, plaintext on both legs, and TLS on both legs (client -> implicit TLS listener, node
-> Dovecot's imaps port, verified) against direct IMAPS; MiB/s is the median.

Memory: fresh nodes (map cache off, so no cache entry is counted as session memory) get
C{--sessions} logged-in, idle sessions (LOGIN + SELECT, then silence); the node's RSS
growth divided by the number of sessions, with plaintext on both legs, TLS on the
client leg, and TLS on both legs.

Client, proxy, directory and Dovecot share the machine's cores: compare ratios within
one run, not absolute numbers between runs.
"""

from __future__ import annotations

import argparse
import asyncio
import imaplib
import os
import resource
import socket
import ssl
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

from _common import (  # noqa: E402
    cpu_seconds,
    machine,
    percentile,
    process_tree_cpu,
    remove_work_dirs,
    rss_kib,
    table,
)
from _logins import login_load  # noqa: E402
from _nginx import start_nginx_mail  # noqa: E402

from tests.integration.directory_data import PEOPLE_DN, PROXY_DN, PROXY_PASSWORD, User  # noqa: E402
from tests.integration.node import Node, start_node  # noqa: E402
from tests.integration.servers.dovecot import Dovecot, make_dovecots, make_root_dir  # noqa: E402
from tests.integration.servers.pki import IssuedCert, TestCA, make_ca  # noqa: E402
from tests.integration.servers.ports import free_port, random_loopback_prefix  # noqa: E402
from tests.integration.servers.slapd import Slapd, start_slapd  # noqa: E402

BIG_USER = User("imapbig", "imapbig@example.com", "big-secret", "SSHA", "a")
MIB = 1024 * 1024


class BenchDovecot(Dovecot):
    """The test Dovecot, allowed to hold thousands of logged-in IMAP sessions."""

    def _seed_mailboxes(self) -> None:
        """Like the fixture's, but linear in the number of users (thousands here)."""
        import pwd

        from tests.integration.servers.dovecot import MAIL_USER, welcome_message

        mail = pwd.getpwnam(MAIL_USER)
        self.mail_root.mkdir(exist_ok=True)
        os.chown(self.mail_root, mail.pw_uid, mail.pw_gid)
        for n, address in enumerate(sorted(self.users)):
            home = self.home(address)
            if not home.parent.exists():
                home.parent.mkdir(parents=True)
                os.chown(home.parent, mail.pw_uid, mail.pw_gid)
            maildir = self.maildir(address)
            paths = [home, maildir]
            for sub in ("cur", "new", "tmp"):
                (maildir / sub).mkdir(parents=True, exist_ok=True)
                paths.append(maildir / sub)
            msg = welcome_message(self.label, address)
            f = maildir / "new" / f"{int(time.time())}.M{n}P{os.getpid()}.bench,S={len(msg)}"
            f.write_bytes(msg)
            for p in [*paths, f]:
                os.chown(p, mail.pw_uid, mail.pw_gid)

    def _config(self) -> str:
        return (
            super()._config()
            + """
# bench: many idle logged-in sessions (one imap process serves several)
default_process_limit = 2000
default_client_limit = 20000
service imap {
  # service_count = 0: a process keeps serving sessions, so client_limit applies
  service_count = 0
  process_limit = 1000
  client_limit = 20
}
service anvil {
  client_limit = 20000
}
service auth {
  client_limit = 20000
}
"""
        )


# ----------------------------------------------------------------------------- logins


async def _tagged(reader: asyncio.StreamReader, tag: bytes) -> bytes:
    while True:
        line = await reader.readline()
        if not line:
            raise RuntimeError("connection closed")
        if line.startswith(tag + b" "):
            if not line.startswith(tag + b" OK"):
                raise RuntimeError(f"unexpected answer {line[:100]!r}")
            return line


async def open_session(
    host: str, port: int, u: User, tls: ssl.SSLContext | None = None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connect, read the greeting, LOGIN, SELECT INBOX; the session stays open."""
    reader, writer = await asyncio.open_connection(
        host, port, ssl=tls, server_hostname=host if tls else None
    )
    greeting = await reader.readline()
    if not greeting.startswith(b"* OK"):
        raise RuntimeError(f"greeting {greeting[:80]!r}")
    writer.write(f'a LOGIN "{u.address}" "{u.password}"\r\n'.encode())
    await _tagged(reader, b"a")
    writer.write(b"b SELECT INBOX\r\n")
    await _tagged(reader, b"b")
    return reader, writer


async def one_login(host: str, port: int, u: User) -> None:
    reader, writer = await open_session(host, port, u)
    try:
        writer.write(b"c LOGOUT\r\n")
        await _tagged(reader, b"c")
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except OSError:
            pass


# ----------------------------------------------------------------------------- relay


class LineSocket:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray()

    def line(self) -> bytes:
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                out = bytes(self.buf[: i + 2])
                del self.buf[: i + 2]
                return out
            chunk = self.sock.recv(65536)
            if not chunk:
                raise RuntimeError("connection closed")
            self.buf += chunk

    def tagged(self, tag: bytes) -> bytes:
        while not (line := self.line()).startswith(tag + b" "):
            pass
        if not line.startswith(tag + b" OK"):
            raise RuntimeError(line[:100])
        return line


def fetch_once(host: str, port: int, tls: ssl.SSLContext | None, size: int) -> float:
    """Seconds from sending FETCH to its tagged OK, for the big message."""
    raw = socket.create_connection((host, port), timeout=120)
    sock = tls.wrap_socket(raw, server_hostname=host) if tls else raw
    with sock:
        c = LineSocket(sock)
        c.line()
        sock.sendall(f'a LOGIN "{BIG_USER.address}" "{BIG_USER.password}"\r\n'.encode())
        c.tagged(b"a")
        sock.sendall(b"b SELECT INBOX\r\n")
        c.tagged(b"b")
        view = memoryview(bytearray(4 * MIB))
        start = time.perf_counter()
        sock.sendall(b"f FETCH 1 BODY.PEEK[]\r\n")
        header = c.line()
        literal = int(header[header.rindex(b"{") + 1 : header.rindex(b"}")])
        got = min(len(c.buf), literal)
        rest = bytes(c.buf[literal:])
        c.buf.clear()
        while got < literal:
            n = sock.recv_into(view)
            if n == 0:
                raise RuntimeError("closed during FETCH")
            take = min(n, literal - got)
            got += take
            if n > take:
                rest = bytes(view[take:n])
        c.buf += rest
        c.tagged(b"f")
        elapsed = time.perf_counter() - start
        if literal < size:
            raise RuntimeError(f"FETCH returned {literal} bytes, expected {size}")
        sock.sendall(b"z LOGOUT\r\n")
        return elapsed


@dataclass
class FetchRun:
    seconds: list[float]
    size: int
    proxy_cpu: float | None

    @property
    def mib_per_s(self) -> float:
        return self.size / MIB / statistics.median(self.seconds)

    @property
    def cpu_ms_per_mib(self) -> float | None:
        if self.proxy_cpu is None:
            return None
        return self.proxy_cpu / (self.size / MIB * len(self.seconds)) * 1e3


def fetch_load(
    host: str,
    port: int,
    tls: ssl.SSLContext | None,
    rounds: int,
    size: int,
    cpu: Callable[[], float] | None,
) -> FetchRun:
    fetch_once(host, port, tls, size)  # warm the page cache and the code paths
    cpu0 = cpu() if cpu else None
    times = [fetch_once(host, port, tls, size) for _ in range(rounds)]
    used = cpu() - cpu0 if cpu is not None and cpu0 is not None else None
    return FetchRun(times, size, used)


# ----------------------------------------------------------------------------- memory


async def hold_sessions(
    host: str, port: int, users: list[User], counts: list[int], tls: ssl.SSLContext | None, pid: int
) -> list[tuple[int, int, int]]:
    """Open idle logged-in sessions up to each count in C{counts}; RSS (KiB) at each step.

    Returns (sessions, rss before, rss after) per count; all sessions are closed at the end.
    """
    # warm the code paths (and TLS contexts) so that their one-time cost is not per session
    warm = [await open_session(host, port, users[i], tls) for i in range(20)]
    for _, w in warm:
        w.close()
    await asyncio.sleep(1.0)
    before = rss_kib(pid)
    held: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    out = []
    try:
        for target in counts:
            while len(held) < target:
                batch = min(100, target - len(held))
                start = len(held)
                held += await asyncio.gather(
                    *(
                        open_session(host, port, users[(start + i) % len(users)], tls)
                        for i in range(batch)
                    )
                )
            await asyncio.sleep(2.0)  # let buffers drain and the node settle
            out.append((target, before, rss_kib(pid)))
    finally:
        for _, w in held:
            w.close()
        await asyncio.sleep(1.0)
    return out


# ----------------------------------------------------------------------------- set-up


def bench_users(count: int) -> list[User]:
    return [
        User(f"ib{i}", f"ib{i}@example.com", f"ib-secret-{i}", "SSHA", "a") for i in range(count)
    ]


def big_message(size: int) -> bytes:
    import base64

    head = (
        b"From: bench <bench@example.com>\r\nTo: <imapbig@example.com>\r\nSubject: 20 MiB\r\n\r\n"
    )
    body = base64.encodebytes(os.urandom(size * 3 // 4)).replace(b"\n", b"\r\n")
    return head + body[: size - len(head)]


def node_config(
    directory: Slapd,
    backend: Dovecot,
    ca: TestCA,
    cert: IssuedCert,
    port: int,
    *,
    cache_ttl: float,
    client_tls: bool = False,
    backend_tls: bool = False,
    name: str = "bench-imap",
) -> str:
    backend_part = (
        f"backend_port = {backend.imaps_port}\n"
        f'backend_tls = "implicit"\nbackend_ca_file = "{ca.cert_file}"'
        if backend_tls
        else f'backend_port = {backend.imap_port}\nbackend_tls = "none"'
    )
    listener_tls = (
        f'tls = "implicit"\ncert_file = "{cert.cert_file}"\nkey_file = "{cert.key_file}"'
        if client_tls
        else 'tls = "none"'
    )
    return f"""
[node]
name = "{name}"

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

[imap]
usermap = "main"
{backend_part}
forward_client_address = true
authenticate_on_proxy = true

[[imap.listener]]
endpoint = "tcp:port={port}:interface=127.0.0.1:backlog=1024"
{listener_tls}
"""


def raise_fd_limit(wanted: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    new = min(hard, max(soft, wanted))
    resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
    return new


# ----------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="measured seconds per login run")
    parser.add_argument(
        "--warmup", type=float, default=1.5, help="unmeasured seconds before each run"
    )
    parser.add_argument(
        "--clients", type=int, default=16, help="concurrent clients in the login runs"
    )
    parser.add_argument("--users", type=int, default=1000, help="distinct users in the login runs")
    parser.add_argument(
        "--fetch-mib", type=int, default=20, help="size of the FETCHed message in MiB"
    )
    parser.add_argument("--fetch-rounds", type=int, default=5, help="FETCHes per path")
    parser.add_argument(
        "--sessions", default="1000,5000", help="idle session counts for the memory runs"
    )
    parser.add_argument(
        "--skip", default="", help="comma list of parts to skip: logins,fetch,memory,nginx"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp dirs (logs)")
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    counts = [int(c) for c in args.sessions.split(",") if c]
    fd_limit = raise_fd_limit(2 * max(counts, default=0) + 2000)  # children inherit it
    counts = [c for c in counts if 2 * c + 500 <= fd_limit]

    work = Path(tempfile.mkdtemp(prefix="axfe-bench-imap-"))
    mail_root = make_root_dir("axfe-bench-imap-mail-")
    prefix = random_loopback_prefix()
    host = f"{prefix}.1"
    users = bench_users(
        max(args.users, (max(counts) + 20) if counts and "memory" not in skip else 0)
    )
    ca = make_ca(work / "pki")
    node_cert = ca.issue("bench-node", ips=("127.0.0.1",))
    base = make_dovecots(
        {"a": host},
        {"a": {u.address: u for u in [*users, BIG_USER]}},
        {"a": ca.issue("bench-dovecot", ips=(host,))},
        ca.cert_file,
        mail_root,
    )["a"]
    dovecot = BenchDovecot(**{f: getattr(base, f) for f in base.__dataclass_fields__})
    directory: Slapd | None = None
    nodes: list[Node] = []
    nginx: subprocess.Popen[bytes] | None = None
    client_tls = ssl.create_default_context(cafile=str(ca.cert_file))

    def node(name: str, **kw: object) -> tuple[Node, int]:
        port = free_port()
        assert directory is not None
        n = start_node(
            work / name,
            node_config(directory, dovecot, ca, node_cert, port, name=name, **kw),
            [("127.0.0.1", port)],
        )  # type: ignore[arg-type]
        nodes.append(n)
        return n, port

    try:
        print(
            f"starting Dovecot on {host} with {len(users)} users, slapd, nodes "
            f"(fd limit {fd_limit}) ...",
            file=sys.stderr,
        )
        dovecot.start(timeout=120)
        directory = start_slapd(work / "slapd", ca, {"a": host}, users=[*users, BIG_USER])

        message = big_message(args.fetch_mib * MIB)
        imap = imaplib.IMAP4(dovecot.host, dovecot.imap_port)
        imap.login(BIG_USER.address, BIG_USER.password)
        imap.select("INBOX")
        imap.store("1:*", "+FLAGS", "\\Deleted")  # the big message becomes number 1
        imap.expunge()
        imap.append("INBOX", None, None, message)
        imap.logout()

        out: list[str] = []
        login_users = users[: args.users]
        nginx_port = free_port()
        if "nginx" not in skip:
            nginx = start_nginx_mail(
                work / "nginx", "imap", dovecot.host, dovecot.imap_port, nginx_port
            )

        if "logins" not in skip:
            cold, cold_port = node("node-cold", cache_ttl=0)
            warm, warm_port = node("node-warm", cache_ttl=3600)
            paths: list[tuple[str, str, int, Callable[[], float] | None]] = [
                ("direct Dovecot", dovecot.host, dovecot.imap_port, None),
                (
                    "node, LDAP lookup per login (cache off)",
                    "127.0.0.1",
                    cold_port,
                    lambda: cpu_seconds(cold.pid()),
                ),
                ("node, warm map cache", "127.0.0.1", warm_port, lambda: cpu_seconds(warm.pid())),
            ]
            if nginx is not None:
                paths.append(
                    (
                        "nginx mail proxy (static auth_http, proxy_buffer 64k)",
                        "127.0.0.1",
                        nginx_port,
                        process_tree_cpu(nginx.pid),
                    )
                )

            async def fill() -> None:
                for i in range(0, len(login_users), 32):
                    await asyncio.gather(
                        *(one_login("127.0.0.1", warm_port, u) for u in login_users[i : i + 32])
                    )

            print("filling the warm node's cache ...", file=sys.stderr)
            asyncio.run(fill())
            rows = []
            base_rate = None
            for name, h, p, cpu in paths:
                print(f"logins: {name} ...", file=sys.stderr)
                run = asyncio.run(
                    login_load(
                        one_login, h, p, login_users, args.clients, args.seconds, args.warmup, cpu
                    )
                )
                base_rate = base_rate or run.rate
                lat = [x * 1000 for x in run.latencies]
                us = run.cpu_us_per_login
                rows.append(
                    [
                        name,
                        run.rate,
                        f"{run.rate / base_rate:.2f}x",
                        "-" if us is None else f"{us:.0f}",
                        percentile(lat, 50),
                        percentile(lat, 99),
                        run.errors,
                    ]
                )
            out.append(
                table(
                    f"IMAP logins/s ({args.clients} concurrent clients; LOGIN, SELECT, LOGOUT; "
                    f"{len(login_users)} distinct users round robin)",
                    [
                        "path",
                        "logins/s",
                        "vs direct",
                        "proxy CPU us/login",
                        "p50 ms",
                        "p99 ms",
                        "errors",
                    ],
                    rows,
                )
            )
            print(out[-1], file=sys.stderr)

        if "fetch" not in skip:
            fetch_plain, fetch_plain_port = node("node-fetch-plain", cache_ttl=60)
            fetch_tls, fetch_tls_port = node(
                "node-fetch-tls", cache_ttl=60, client_tls=True, backend_tls=True
            )
            fpaths: list[
                tuple[str, str, int, ssl.SSLContext | None, Callable[[], float] | None]
            ] = [
                ("direct Dovecot, plaintext", dovecot.host, dovecot.imap_port, None, None),
                (
                    "node, plaintext both legs",
                    "127.0.0.1",
                    fetch_plain_port,
                    None,
                    lambda: cpu_seconds(fetch_plain.pid()),
                ),
            ]
            if nginx is not None:
                fpaths.append(
                    (
                        "nginx mail proxy, plaintext (proxy_buffer 64k)",
                        "127.0.0.1",
                        nginx_port,
                        None,
                        process_tree_cpu(nginx.pid),
                    )
                )
            fpaths += [
                (
                    "direct Dovecot, IMAPS",
                    dovecot.host,
                    dovecot.imaps_port,
                    ssl.create_default_context(cafile=str(ca.cert_file)),
                    None,
                ),
                (
                    "node, TLS both legs (verified)",
                    "127.0.0.1",
                    fetch_tls_port,
                    client_tls,
                    lambda: cpu_seconds(fetch_tls.pid()),
                ),
            ]
            rows = []
            base_plain = base_tls = None
            for name, h, p, tls, cpu in fpaths:
                print(f"FETCH {args.fetch_mib} MiB: {name} ...", file=sys.stderr)
                run = fetch_load(h, p, tls, args.fetch_rounds, len(message), cpu)
                if name.startswith("direct"):
                    if tls is None:
                        base_plain = run.mib_per_s
                    else:
                        base_tls = run.mib_per_s
                ref = base_tls if tls is not None else base_plain
                ms = run.cpu_ms_per_mib
                rows.append(
                    [
                        name,
                        run.mib_per_s,
                        f"{run.mib_per_s / ref:.2f}x" if ref else "-",
                        "-" if ms is None else f"{ms:.2f}",
                    ]
                )
            out.append(
                table(
                    f"FETCH BODY.PEEK[] of a {args.fetch_mib} MiB message (median of "
                    f"{args.fetch_rounds}; ratio vs direct with the same TLS)",
                    ["path", "MiB/s", "vs direct", "proxy CPU ms/MiB"],
                    rows,
                )
            )
            print(out[-1], file=sys.stderr)

        if "memory" not in skip and counts:
            rows = []
            for label, kw in (
                ("plaintext both legs", {}),
                ("TLS on the client leg", {"client_tls": True}),
                ("TLS on both legs", {"client_tls": True, "backend_tls": True}),
            ):
                n, port = node(f"node-mem-{len(rows)}", cache_ttl=0, **kw)
                tls = client_tls if kw.get("client_tls") else None
                print(f"memory: {label}, {counts} sessions ...", file=sys.stderr)
                for sessions, before, after in asyncio.run(
                    hold_sessions("127.0.0.1", port, users, counts, tls, n.pid())
                ):
                    rows.append(
                        [
                            label,
                            sessions,
                            f"{before / 1024:.1f}",
                            f"{after / 1024:.1f}",
                            f"{(after - before) / sessions:.1f}",
                        ]
                    )
                n.stop()
            out.append(
                table(
                    "Node memory per idle logged-in IMAP session "
                    "(RSS growth / sessions; LOGIN + SELECT, then idle)",
                    ["legs", "sessions", "RSS before MiB", "RSS after MiB", "KiB per session"],
                    rows,
                )
            )
            print(out[-1], file=sys.stderr)

        print(f"\nIMAP benchmark, {machine()}\n")
        print("\n".join(out))
    finally:
        if nginx is not None:
            nginx.terminate()
            nginx.wait(10)
        for n in nodes:
            n.stop()
        if directory is not None:
            directory.stop()
        dovecot.stop()
        remove_work_dirs(args.keep, work, mail_root)


if __name__ == "__main__":
    main()
