"""The SMTP client towards a back-end MTA: greeting, EHLO, STARTTLS, XCLIENT, commands.

L{BackendSMTP} is the wire protocol: it sends one command at a time and turns the
back-end's (multi-line) replies into L{Reply} values, first in first out, each
awaited with a timeout. L{open_backend} is the opening dance both proxies need:

    220 greeting -> EHLO node -> [STARTTLS -> EHLO node] -> [XCLIENT ... -> 220 -> EHLO client]

STARTTLS comes before XCLIENT so that the forwarded client facts, and for submission
the login name, never cross the network in the clear. XCLIENT follows Postfix's
semantics (U{https://www.postfix.org/XCLIENT_README.html}): only attributes the
server lists are sent, values are xtext, the server answers with a new 220 greeting
and the session starts over, so the node says EHLO again, with the client's name.
Without XCLIENT, XFORWARD (one line before each MAIL) carries the same facts.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure

from axigen_fe.config.model import TLSMode
from axigen_fe.net.backend import BackendConnector
from axigen_fe.net.fastwrite import write_now
from axigen_fe.net.relay import Pipe
from axigen_fe.net.ttlcache import TTLCache
from axigen_fe.smtp.parser import MailFrom, RcptTo, xtext
from axigen_fe.smtp.replies import Reply


class BackendError(Exception):
    """The back-end session cannot be used; C{reply} is what the back-end said, if anything."""

    def __init__(self, why: str, reply: Reply | None = None) -> None:
        super().__init__(why if reply is None else f"{why}: {reply.code} {reply.text}")
        self.why = why
        self.reply = reply


class BackendGone(BackendError):
    """The connection closed, failed or timed out while a reply was awaited."""


def _nowhere(data: bytes) -> None:
    """Stands for the relay's sender before L{BackendSMTP.start_relay}."""


class BackendSMTP(LineReceiver):
    """One connection to a back-end MTA, speaking SMTP as a client.

    C{greeting} fires with the server's first reply. After L{start_relay} the
    protocol stops parsing and hands every byte to the L{Pipe} (submission).
    """

    MAX_LENGTH = 4096
    #: a reply of more lines than this is not an SMTP server talking
    MAX_REPLY_LINES = 200

    def __init__(self, clock: IReactorTime, reply_timeout: float) -> None:
        self._clock = clock
        self.reply_timeout = reply_timeout
        self._waiters: deque[Deferred[Reply]] = deque()
        self._lines: list[bytes] = []
        self._timer: IDelayedCall | None = None
        self._why_lost: str | None = None
        self.lost = False
        self.relay: Pipe | None = None
        self._to_client: Callable[[bytes], None] = _nowhere
        self.on_lost: list[Callable[[str], None]] = []
        self.greeting: Deferred[Reply] = Deferred()
        self._waiters.append(self.greeting)

    # ---------------------------------------------------------------- connection

    def connectionMade(self) -> None:
        self.arm()

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.lost = True
        self.disarm()
        detail = reason.getErrorMessage() if reason is not None else "closed"
        why = self._why_lost or f"connection lost ({detail})"
        self._why_lost = why
        waiters, self._waiters = self._waiters, deque()
        for d in waiters:
            if not d.called:
                d.errback(BackendGone(why))
        if self.relay is not None:
            self.relay.closed_by_backend()
        for callback in self.on_lost:
            callback(why)
        self.on_lost = []

    def abort(self, why: str) -> None:
        """Drop the connection now (a half-sent message is discarded by the back-end)."""
        if self._why_lost is None:
            self._why_lost = why
        if self.transport is not None and not self.lost:
            self.lost = True  # not one more octet: connectionLost fails the waiters
            self.transport.abortConnection()  # type: ignore[attr-defined]

    # ---------------------------------------------------------------- replies

    def lineReceived(self, line: bytes) -> None:
        sep = line[3:4]
        if len(line) < 3 or not line[:3].isdigit() or sep not in (b"", b" ", b"-"):
            self.abort(f"not an SMTP reply: {line[:80]!r}")
            return
        self._lines.append(line[4:])
        if sep == b"-":
            if len(self._lines) > self.MAX_REPLY_LINES:
                self.abort("reply with too many lines")
            return
        reply = Reply(int(line[:3]), tuple(self._lines))
        self._lines = []
        if not self._waiters:
            if reply.code == 421:  # the back-end says goodbye on its own (its timeout, shutdown)
                self.abort(f"back-end closed the session: {reply.text}")
            return  # anything else unsolicited is ignored
        d = self._waiters.popleft()
        if self._waiters:
            self.arm()
        else:
            self.disarm()
        d.callback(reply)

    def lineLengthExceeded(self, line: bytes) -> None:
        self.abort("reply line too long")

    # ---------------------------------------------------------------- commands

    def command(self, line: bytes) -> Deferred[Reply]:
        """Send one command line; the Deferred fires with its reply or fails (L{BackendGone})."""
        if self.lost or self.transport is None:
            return fail(BackendGone(self._why_lost or "not connected"))
        write_now(self.transport, line + b"\r\n")
        d: Deferred[Reply] = Deferred()
        self._waiters.append(d)
        self.arm()
        return d

    def expect(self) -> Deferred[Reply]:
        """A reply to come without a command (DATA's final reply); no timer until L{arm}."""
        if self.lost:
            return fail(BackendGone(self._why_lost or "not connected"))
        d: Deferred[Reply] = Deferred()
        self._waiters.append(d)
        return d

    def write(self, data: bytes) -> None:
        """Raw octets (a message body): no reply is expected for them."""
        if not self.lost and self.transport is not None:
            write_now(self.transport, data)

    def arm(self, timeout: float | None = None) -> None:
        """(Re)start the reply timer: no reply within the timeout -> abort the connection."""
        delay = self.reply_timeout if timeout is None else timeout
        if self._timer is not None and self._timer.active():
            self._timer.reset(delay)
        else:
            self._timer = self._clock.callLater(delay, self._timed_out)

    def disarm(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _timed_out(self) -> None:
        self._timer = None
        self.abort(f"no reply from the back-end within {self.reply_timeout:g}s")

    # ---------------------------------------------------------------- relay

    def start_relay(self, pipe: Pipe, to_client: Callable[[bytes], None] | None = None) -> None:
        """Stop speaking SMTP: from now on every byte goes to the client through C{pipe}
        (by way of C{to_client} when the owner watches the replies)."""
        self.disarm()
        self.relay = pipe
        self._to_client = to_client or pipe.to_client
        self.setRawMode()  # type: ignore[no-untyped-call]
        pending = self.clearLineBuffer()  # type: ignore[no-untyped-call]
        if pending:
            self._to_client(pending)

    def rawDataReceived(self, data: bytes) -> None:
        if self.relay is not None:
            self._to_client(data)


Capabilities = dict[str, tuple[str, ...]]


#: EHLO per (host, port). With XCLIENT known to be offered, a new session sends XCLIENT
#: right after the greeting instead of EHLO first: one round trip less for every message
#: of MX traffic. An XCLIENT refusal forgets the entry.
CapabilityCache = TTLCache[tuple[str, int], Capabilities]


@dataclass(frozen=True)
class ClientFacts:
    """What the back-end should learn about the real client (XCLIENT / XFORWARD)."""

    addr: str | None
    """The client's IP address (None for a unix socket: sent as C{[UNAVAILABLE]})."""
    port: int | None
    helo: str
    esmtp: bool = True
    login: str | None = None
    """The authenticated user (submission): XCLIENT C{LOGIN=} makes the back-end relay for it."""


def _addr_value(addr: str | None) -> str:
    if addr is None:
        return "[UNAVAILABLE]"
    return f"IPV6:{addr}" if ":" in addr else addr


def xclient_command(offered: set[str], facts: ClientFacts, forward: bool) -> bytes:
    """The XCLIENT line: client address, port, name, HELO, protocol, login (as offered)."""
    attrs: list[tuple[str, str]] = []
    if forward:
        attrs.append(("ADDR", _addr_value(facts.addr)))
        if facts.port is not None:
            attrs.append(("PORT", str(facts.port)))
        attrs.append(("NAME", "[UNAVAILABLE]"))  # the node does no reverse DNS
        attrs.append(("PROTO", "ESMTP" if facts.esmtp else "SMTP"))
        attrs.append(("HELO", facts.helo or "[UNAVAILABLE]"))
    if facts.login is not None:
        attrs.append(("LOGIN", facts.login))
    parts = [b"XCLIENT"] + [k.encode() + b"=" + xtext(v) for k, v in attrs if k in offered]
    return b" ".join(parts)


def xforward_command(offered: set[str], facts: ClientFacts) -> bytes:
    attrs = [
        ("NAME", "[UNAVAILABLE]"),
        ("ADDR", _addr_value(facts.addr)),
        ("PROTO", "ESMTP" if facts.esmtp else "SMTP"),
        ("HELO", facts.helo or "[UNAVAILABLE]"),
        ("SOURCE", "REMOTE"),
    ]
    if facts.port is not None:
        attrs.insert(2, ("PORT", str(facts.port)))
    return b" ".join(
        [b"XFORWARD"] + [k.encode() + b"=" + xtext(v) for k, v in attrs if k in offered]
    )


def parse_ehlo(reply: Reply) -> dict[str, tuple[str, ...]]:
    """EHLO reply -> {KEYWORD: (params...)}; the first line is the server's name."""
    caps: dict[str, tuple[str, ...]] = {}
    for line in reply.lines[1:]:
        words = line.decode("ascii", "replace").split()
        if words:
            caps[words[0].upper()] = tuple(w.upper() for w in words[1:])
    return caps


@dataclass
class BackendSession:
    """An open, greeted back-end session ready for MAIL (or for relaying, after AUTH)."""

    host: str
    port: int
    proto: BackendSMTP
    capabilities: dict[str, tuple[str, ...]]
    forwarded: str
    """How the client's address reached the back-end: C{XCLIENT}, C{XFORWARD} or C{none}."""
    xforward: bytes | None = None
    in_transaction: bool = field(default=False)

    @property
    def label(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def key(self) -> tuple[str, int]:
        return (self.host, self.port)

    @property
    def alive(self) -> bool:
        return not self.proto.lost

    def _mail_line(self, mail: MailFrom) -> bytes:
        if mail.size is not None and "SIZE" not in self.capabilities:
            params = tuple(p for p in mail.params if p[0] != "SIZE")
            return MailFrom(mail.path, params, None, mail.body).backend_command()
        return mail.backend_command()

    async def mail(self, mail: MailFrom, rcpt: RcptTo | None = None) -> tuple[Reply, Reply | None]:
        """XFORWARD (if that is how the client's facts travel), MAIL FROM, and the first RCPT.

        With PIPELINING the three go out in one packet (RFC 2920); the RCPT reply is
        None when MAIL was refused. L{BackendGone} if the connection fails meanwhile.
        """
        sent: list[Deferred[Reply]] = []
        if self.xforward is not None:
            sent.append(self.proto.command(self.xforward))
        sent.append(self.proto.command(self._mail_line(mail)))
        pipelined = rcpt is not None and "PIPELINING" in self.capabilities
        if pipelined:
            assert rcpt is not None
            sent.append(self.proto.command(rcpt.backend_command()))
        replies = await _all(sent)
        mail_reply = replies[1] if self.xforward is not None else replies[0]
        self.in_transaction = mail_reply.positive
        if not mail_reply.positive:
            return mail_reply, None
        if pipelined:
            return mail_reply, replies[-1]
        if rcpt is not None:
            return mail_reply, await self.rcpt(rcpt)
        return mail_reply, None

    async def rcpt(self, rcpt: RcptTo) -> Reply:
        return await self.proto.command(rcpt.backend_command())

    async def rset(self) -> Reply:
        self.in_transaction = False
        return await self.proto.command(b"RSET")

    def quit(self) -> None:
        """Say goodbye politely and close (nothing waits for the 221)."""
        if self.alive:
            self.proto.command(b"QUIT").addErrback(lambda _: None)
            self.proto.lost = True  # no further commands on this session
            if self.proto.transport is not None:
                self.proto.transport.loseConnection()

    def abort(self, why: str) -> None:
        self.proto.abort(why)


async def _all(sent: list[Deferred[Reply]]) -> list[Reply]:
    """The replies to pipelined commands, in order; every one is awaited (no stray failure)."""
    out: list[Reply] = []
    error: BackendGone | None = None
    for d in sent:
        try:
            out.append(await d)
        except BackendGone as e:
            error = error or e
    if error is not None:
        raise error
    return out


async def _ehlo(proto: BackendSMTP, name: str) -> dict[str, tuple[str, ...]]:
    r = await proto.command(b"EHLO " + name.encode("ascii", "replace"))
    if r.code != 250:
        raise BackendError("EHLO refused", r)
    return parse_ehlo(r)


async def open_backend(
    connector: BackendConnector,
    clock: IReactorTime,
    host: str,
    port: int,
    *,
    my_name: str,
    facts: ClientFacts,
    forward: bool,
    reply_timeout: float,
    cache: CapabilityCache | None = None,
) -> BackendSession:
    """Connect and greet; raise L{BackendError} with the reason when the back-end won't do.

    With C{facts.login} (submission) XCLIENT is required: without it the back-end
    would not relay for the user, so failing here beats a 5xx at RCPT later.
    """
    proto = BackendSMTP(clock, reply_timeout)
    key = (host, port)
    try:
        await connector.connect(host, port, proto)
    except Exception as e:  # noqa: BLE001 - refused, timeout, DNS, TLS: all mean "unreachable"
        raise BackendError(f"cannot connect to {host}:{port}: {e}") from e
    try:
        greeting = await proto.greeting
        if greeting.code != 220:
            raise BackendError("greeting refused", greeting)
        wants_xclient = forward or facts.login is not None
        caps = cache.get(key) if cache is not None else None
        fast = (
            caps is not None
            and wants_xclient
            and connector.tls_mode is not TLSMode.STARTTLS
            and "XCLIENT" in caps
            and (facts.login is None or "LOGIN" in caps["XCLIENT"])
        )
        if not fast:
            caps = await _ehlo(proto, my_name)
            if connector.tls_mode is TLSMode.STARTTLS:
                if "STARTTLS" not in caps:
                    raise BackendError("back-end does not offer STARTTLS (backend_tls = starttls)")
                r = await proto.command(b"STARTTLS")
                if r.code != 220:
                    raise BackendError("STARTTLS refused", r)
                proto.clearLineBuffer()  # type: ignore[no-untyped-call]  # nothing sent before the handshake may count
                proto.transport.startTLS(connector.tls_options(host))  # type: ignore[union-attr]
                caps = await _ehlo(proto, my_name)
            if cache is not None:
                cache.put(key, caps)
        assert caps is not None
        forwarded, xforward = "none", None
        if wants_xclient and "XCLIENT" in caps:
            offered = set(caps["XCLIENT"])
            if facts.login is not None and "LOGIN" not in offered:
                raise BackendError("back-end XCLIENT lacks LOGIN (needs smtpd_sasl_auth_enable)")
            r = await proto.command(xclient_command(offered, facts, forward))
            if r.code != 220:
                if cache is not None:
                    cache.forget(key)
                raise BackendError("XCLIENT refused (smtpd_authorized_xclient_hosts?)", r)
            caps = await _ehlo(proto, facts.helo or my_name)
            forwarded = "XCLIENT"
        elif facts.login is not None:
            raise BackendError("back-end does not offer XCLIENT (smtpd_authorized_xclient_hosts?)")
        elif forward and "XFORWARD" in caps:
            xforward = xforward_command(set(caps["XFORWARD"]), facts)
            forwarded = "XFORWARD"
        return BackendSession(host, port, proto, caps, forwarded, xforward)
    except BaseException:
        proto.abort("opening failed")
        raise
