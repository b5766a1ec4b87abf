"""Shared fakes for the SMTP unit tests (no tests here): a scripted back-end MTA
connected through iosim, a connector that hands it out, and a client-side harness.

The fake back-end is a real protocol on the other end of an in-memory connection, so
the node's back-end client (greeting, EHLO, STARTTLS, XCLIENT, replies) runs for real.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import LogEvent, formatEvent, globalLogPublisher
from twisted.protocols.basic import LineReceiver
from twisted.test.iosim import FakeTransport, IOPump, connect

from axigen_fe.config.model import SMTPServiceConfig, TLSMode
from axigen_fe.net.listener import ListenerContext
from axigen_fe.ops.sessionlog import SessionIds
from axigen_fe.smtp.backend import CapabilityCache
from axigen_fe.smtp.inbound import InboundSession
from axigen_fe.smtp.session import SessionEnv, SMTPSession
from axigen_fe.smtp.submission import SubmissionSession
from axigen_fe.usermap.memory import MemoryUserMap

EHLO_CAPS = [
    b"PIPELINING",
    b"SIZE 10240000",
    b"8BITMIME",
    b"ENHANCEDSTATUSCODES",
    b"XCLIENT NAME ADDR PROTO HELO REVERSE_NAME PORT LOGIN DESTADDR DESTPORT",
]


@dataclass(frozen=True)
class FakeTLS:
    """Stands for the verifying client TLS options of one back-end host."""

    host: str
    ok: bool = True


class TLSRecorder(FakeTransport):
    """The node's side of a fake back-end connection: startTLS is recorded, not done.

    With C{ok=False} options the "handshake" fails the way a certificate that does not
    verify does: the connection drops.
    """

    tls_options: Any = None

    def startTLS(self, contextFactory: Any, beNormal: bool = True) -> None:
        self.tls_options = contextFactory
        if not contextFactory.ok:
            self.disconnectReason = ConnectionRefusedError("certificate verify failed")
            self.loseConnection()


class FakeMTA(LineReceiver):
    """A back-end MTA with scripted answers; records what it was told.

    @ivar messages: bodies received (raw, dot-stuffing and final ".CRLF" included).
    """

    def __init__(self, host: str, port: int, script: Script) -> None:
        self.host, self.port, self.script = host, port, script
        self.commands: list[bytes] = []
        self.messages: list[bytes] = []
        self._body: list[bytes] | None = None
        self._tail = b""
        self.tls = False

    def connectionMade(self) -> None:
        self.sendLine(self.script.greeting)

    def _reply(self, *lines: bytes) -> None:
        for i, line in enumerate(lines):
            code, text = line[:3], line[4:]
            sep = b" " if i == len(lines) - 1 else b"-"
            self.transport.write(code + sep + text + b"\r\n")

    def lineReceived(self, line: bytes) -> None:
        self.commands.append(line)
        verb = line.split(b" ", 1)[0].upper()
        s = self.script
        if verb in s.custom:
            self._reply(*s.custom[verb])
            if s.custom[verb] and s.custom[verb][0].startswith(b"421"):
                self.transport.loseConnection()
            return
        if verb == b"EHLO":
            caps = list(s.caps) + ([b"STARTTLS"] if s.starttls and not self.tls else [])
            self._reply(b"250 backend.test", *(b"250 " + c for c in caps))
        elif verb == b"HELO":
            self._reply(b"250 backend.test")
        elif verb == b"STARTTLS":
            self._reply(b"220 2.0.0 Ready to start TLS")
            self.tls = True  # the client's transport only records startTLS (see TLSRecorder)
        elif verb == b"XCLIENT":
            self._reply(b"220 backend.test ESMTP")
        elif verb == b"XFORWARD":
            self._reply(b"250 2.0.0 Ok")
        elif verb == b"MAIL":
            self._reply(b"250 2.1.0 Ok")
        elif verb == b"RCPT":
            addr = line.split(b"<", 1)[1].split(b">", 1)[0].decode()
            if addr in s.rcpt_replies:
                self._reply(*s.rcpt_replies[addr])
            else:
                self._reply(b"250 2.1.5 Ok")
        elif verb == b"DATA":
            self._reply(b"354 End data with <CR><LF>.<CR><LF>")
            self._body = []
            self._tail = b"\r\n"
            self.setRawMode()
        elif verb == b"RSET":
            self._reply(b"250 2.0.0 Ok")
        elif verb == b"QUIT":
            self._reply(b"221 2.0.0 Bye")
            self.transport.loseConnection()
        elif verb == b"NOOP":
            self._reply(b"250 2.0.0 Ok")
        else:
            self._reply(b"502 5.5.2 Error: command not recognized")

    def rawDataReceived(self, data: bytes) -> None:
        assert self._body is not None
        window = self._tail + data
        i = window.find(b"\r\n.\r\n")
        if i < 0:
            self._body.append(data)
            self._tail = window[-4:]
            return
        end = i + 5 - len(self._tail)
        self._body.append(data[:end])
        self.messages.append(b"".join(self._body))
        self._body = None
        self.setLineMode()
        self._reply(*self.script.final_reply)
        rest = data[end:]
        if rest:
            self.dataReceived(rest)


@dataclass
class Script:
    """How the fake back-ends answer (shared by all of them)."""

    greeting: bytes = b"220 backend.test ESMTP Postfix"
    caps: list[bytes] = field(default_factory=lambda: list(EHLO_CAPS))
    starttls: bool = False
    rcpt_replies: dict[str, tuple[bytes, ...]] = field(default_factory=dict)
    final_reply: tuple[bytes, ...] = (b"250 2.0.0 Ok: queued as ABC123",)
    custom: dict[bytes, tuple[bytes, ...]] = field(default_factory=dict)


class FakeConnector:
    """Stands for L{BackendConnector}: connects to L{FakeMTA}s through iosim pumps."""

    def __init__(self, script: Script | None = None, tls_mode: TLSMode = TLSMode.NONE) -> None:
        self.script = script or Script()
        self.tls_mode = tls_mode
        self.down: set[tuple[str, int]] = set()
        self.pending: list[Deferred[Any]] | None = None
        self.servers: list[FakeMTA] = []
        self.pumps: list[IOPump] = []
        self.tls_ok = True

    def tls_options(self, host: str) -> FakeTLS:
        return FakeTLS(host, self.tls_ok)

    def connect(self, host: str, port: int, proto: Any) -> Deferred[Any]:
        if (host, port) in self.down:
            return fail(ConnectionRefusedError(f"{host}:{port}"))
        server = FakeMTA(host, port, self.script)
        self.servers.append(server)
        st = FakeTransport(
            server, True, IPv4Address("TCP", host, port), IPv4Address("TCP", "127.0.0.1", 50000)
        )
        ct = TLSRecorder(
            proto, False, IPv4Address("TCP", "127.0.0.1", 50000), IPv4Address("TCP", host, port)
        )
        self.pumps.append(connect(server, st, proto, ct, greet=False))
        return succeed(proto)

    def flush(self) -> None:
        moved = True
        while moved:
            moved = False
            for pump in list(self.pumps):
                if pump.flush():
                    moved = True

    def server(self, host: str, port: int = 25) -> list[FakeMTA]:
        return [s for s in self.servers if (s.host, s.port) == (host, port)]


class TLSStringTransport(StringTransport):
    """Records startTLS instead of doing it."""

    tls_started_with: Any = None

    def startTLS(self, options: Any) -> None:
        self.tls_started_with = options


USERS = {
    "alice@example.com": ("10.0.0.1", "{PLAIN}alice-secret"),
    "carol@example.com": ("10.0.0.1", "{PLAIN}carol-secret"),
    "bob@example.com": ("10.0.0.2", "{PLAIN}bob-secret"),
    "dan@sub.example.org": ("10.0.0.2:2525", None),
    "postmaster@example.com": ("10.0.0.1", None),
}


def smtp_config(**kw: Any) -> SMTPServiceConfig:
    base: dict[str, Any] = dict(
        kind="smtp",
        usermap="main",
        backend_port=25,
        hostname="mx.example.com",
        domains=("example.com", "*.example.org"),
        max_message_size=100_000,
        max_recipients=5,
        max_errors=5,
        max_auth_errors=3,
        preauth_timeout=300.0,
        idle_timeout=1800.0,
    )
    base.update(kw)
    return SMTPServiceConfig(**base)


class Client:
    """One client session on a StringTransport, with the fake back-ends behind it."""

    def __init__(
        self,
        *,
        submission: bool = False,
        cfg: SMTPServiceConfig | None = None,
        listener_tls: TLSMode = TLSMode.NONE,
        loopback_plaintext: bool = True,
        peer: str = "192.0.2.7",
        script: Script | None = None,
        backend_tls: TLSMode = TLSMode.NONE,
        users: dict[str, tuple[str, str | None]] | None = None,
        cache_capabilities: bool = False,
    ) -> None:
        self.clock = Clock()
        if cfg is None:
            cfg = smtp_config(
                kind="submission" if submission else "smtp",
                require_auth=submission,
                backend_port=587 if submission else 25,
                backend_tls=backend_tls,
            )
        self.cfg = cfg
        self.map = MemoryUserMap(users if users is not None else dict(USERS), name="main")
        self.connector = FakeConnector(script, backend_tls)
        ctx = ListenerContext(
            "tcp:25",
            listener_tls,
            "server-tls-options" if listener_tls is not TLSMode.NONE else None,  # type: ignore[arg-type]
            False,
            loopback_plaintext,
        )
        cache = CapabilityCache(self.clock) if cache_capabilities else None
        self.env = SessionEnv(
            self.clock,
            cfg.kind,
            cfg,
            ctx,
            self.map,
            self.connector,  # type: ignore[arg-type]
            SessionIds("fe1", cfg.kind),
            cache,
        )
        cls = SubmissionSession if submission else InboundSession
        self.session: SMTPSession = cls(self.env)
        self.transport = TLSStringTransport(
            hostAddress=IPv4Address("TCP", "127.0.0.1", 25),
            peerAddress=IPv4Address("TCP", peer, 4321),
            lenient=True,
        )
        self.session.makeConnection(self.transport)
        self.greeting = self.read()

    def read(self) -> bytes:
        self.connector.flush()
        data = self.transport.value()
        self.transport.clear()
        return data

    def send(self, data: bytes) -> bytes:
        """Send C{data}, let the back-ends answer, return what the client got."""
        self.session.dataReceived(data)
        return self.read()

    def lines(self, data: bytes) -> list[bytes]:
        return self.send(data).splitlines()

    def codes(self, data: bytes) -> list[bytes]:
        """The final reply line of each reply (multi-line continuations dropped)."""
        return [line for line in self.send(data).splitlines() if line[3:4] != b"-"]

    def ehlo(self, name: bytes = b"client.example.net") -> bytes:
        return self.send(b"EHLO " + name + b"\r\n")

    @property
    def inbound(self) -> InboundSession:
        assert isinstance(self.session, InboundSession)
        return self.session

    def backends(self) -> list[FakeMTA]:
        return self.connector.servers


def plain(user: str, password: str, authzid: str = "") -> bytes:
    return base64.b64encode(f"{authzid}\0{user}\0{password}".encode())


@contextmanager
def captured_log() -> Iterator[list[str]]:
    """The formatted AXIGEN-style session lines emitted inside the block."""
    lines: list[str] = []

    def observer(event: LogEvent) -> None:
        if "session" in event and "service" in event:  # SessionLog events
            lines.append(formatEvent(event))

    globalLogPublisher.addObserver(observer)
    try:
        yield lines
    finally:
        globalLogPublisher.removeObserver(observer)
