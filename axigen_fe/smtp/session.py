"""What the inbound and the submission proxy share: one client-facing SMTP session.

A L{LineReceiver} (not twisted.mail's ESMTP server: that one buffers whole messages and
knows nothing of back-ends) with an explicit life cycle:

    greeting -> commands (line mode) -> [DATA body (raw mode) | relaying (raw mode)] -> closed

Pipelining (RFC 2920): lines are handled strictly in order. A command whose answer
needs a user map lookup or the back-end I{holds} the session: line processing stops
until the answer is sent, so replies go out in command order. The client's socket is
paused only once L{HOLD_BUFFER} bytes wait behind a hold: pausing and resuming costs two
C{epoll_ctl} per command, and most holds (a lookup, one back-end reply) end before a
client has pipelined that much; one that pipelines more fills its own socket, not the
node's memory. When the back-end's write buffer is full during DATA (producer/consumer)
the socket is paused at once, so a 50 MB message never sits in the node.

Limits: command lines of 512 octets (RFC 5321 4.5.3.1.4; AUTH lines up to 12288,
RFC 4954), C{max_errors} protocol errors then C{421 4.7.0}, a silence timeout
(C{preauth_timeout}; C{idle_timeout} once relaying) then C{421 4.4.2}.
STARTTLS (RFC 3207): everything pipelined after the command is discarded and the
session starts over (CVE-2011-0411 class).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure
from zope.interface import implementer

from axigen_fe.config.model import SMTPServiceConfig, TLSMode
from axigen_fe.net.backend import BackendConnector
from axigen_fe.net.fastwrite import write_now
from axigen_fe.net.listener import ListenerContext
from axigen_fe.ops.sessionlog import SessionIds, SessionLog
from axigen_fe.smtp import replies
from axigen_fe.smtp.backend import BackendSession, CapabilityCache, ClientFacts, open_backend
from axigen_fe.smtp.parser import AUTH_LINE_LIMIT, COMMAND_LINE_LIMIT, Command, split_command
from axigen_fe.smtp.replies import Reply, reply
from axigen_fe.usermap.interface import IUserMap

#: RFC 5321 4.5.3.2.6: wait up to 10 minutes for the reply to the end of DATA
FINAL_REPLY_TIMEOUT = 600.0

#: bytes a held session buffers from the client before it stops reading the socket
HOLD_BUFFER = 65536

#: the hold reason while the back-end's write buffer is full (socket paused at once)
BACKEND_FULL = "backend-full"


@dataclass(frozen=True)
class SessionEnv:
    """What every session accepted on one listener shares (built once per listener)."""

    reactor: IReactorTime
    kind: str
    service: SMTPServiceConfig
    listener: ListenerContext
    usermap: IUserMap
    connector: BackendConnector
    ids: SessionIds
    capabilities: CapabilityCache | None = None
    """Back-end EHLO answers, shared by the service's listeners (None: always EHLO first)."""

    def open_backend(
        self, host: str, port: int, facts: ClientFacts, forward: bool
    ) -> Deferred[BackendSession]:
        return Deferred.fromCoroutine(
            open_backend(
                self.connector,
                self.reactor,
                host,
                port,
                my_name=self.service.hostname,
                facts=facts,
                forward=forward,
                reply_timeout=self.service.preauth_timeout,
                cache=self.capabilities,
            )
        )


@implementer(IPushProducer)
class _ReadGate:
    """Registered on the back-end transport during DATA: its full buffer pauses the client."""

    def __init__(self, session: SMTPSession) -> None:
        self._session = session

    def pauseProducing(self) -> None:
        self._session.hold(BACKEND_FULL)

    def resumeProducing(self) -> None:
        self._session.release(BACKEND_FULL)

    def stopProducing(self) -> None:
        self._session.release(BACKEND_FULL)


def peer_facts(peer: object) -> tuple[str | None, int | None, str]:
    """(ip, port, printable) for logs and XCLIENT; unix sockets have no IP."""
    if isinstance(peer, (IPv4Address, IPv6Address)):
        return peer.host, peer.port, f"{peer.host}:{peer.port}"
    return None, None, str(peer)


class SMTPSession(LineReceiver):
    """The common client-facing state machine; subclasses add MAIL/RCPT/DATA or AUTH."""

    MAX_LENGTH = AUTH_LINE_LIMIT
    service_name = "smtp"

    def __init__(self, env: SessionEnv) -> None:
        self.env = env
        self.cfg = env.service
        self.clock = env.reactor
        self.log = SessionLog(env.kind, "-", "-")
        self.peer_ip: str | None = None
        self.peer_port: int | None = None
        self.peer_text = "-"
        self.helo: str | None = None
        self.esmtp = False
        self.tls_active = False
        self.errors = 0
        self.closed = False
        self._down = False
        self._holds: set[str] = set()
        self._socket_paused = False
        self._timer: IDelayedCall | None = None
        self._kick = False
        self._skipping = False
        self._skip_cr = False
        self._line_handler: Callable[[bytes], None] | None = None
        self.gate = _ReadGate(self)

    # ------------------------------------------------------------ connection

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.peer_ip, self.peer_port, self.peer_text = peer_facts(self.transport.getPeer())
        self.log = SessionLog(self.env.kind, self.env.ids.next(), self.peer_text)
        self.tls_active = self.env.listener.tls is TLSMode.IMPLICIT
        self.log.info(
            "connect from {client} on {listener} (tls={tls})",
            client=self.peer_text,
            listener=self.env.listener.endpoint,
            tls="implicit" if self.tls_active else "no",
        )
        self.send(reply(220, "", f"{self.cfg.hostname} ESMTP ready"))
        self._timer = self.clock.callLater(self.timeout(), self._timed_out)

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.closed = True
        self._shut_down()
        self.log.info(
            "disconnect from {client}: {summary}, {errors} errors",
            client=self.peer_text,
            summary=self.summary(),
            errors=self.errors,
        )

    def _shut_down(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if not self._down:
            self._down = True
            self.on_close()

    def close(self) -> None:
        """Stop reading commands and close after what is written has been sent."""
        if self.closed:
            return
        self.closed = True
        self.paused = True
        self.clearLineBuffer()  # type: ignore[no-untyped-call]
        self._shut_down()
        if self.transport is not None:
            self.transport.loseConnection()

    # ------------------------------------------------------------ hooks

    def timeout(self) -> float:
        """Seconds of client silence allowed in the current state."""
        return self.cfg.preauth_timeout

    def extensions(self) -> list[str]:
        return []

    def reset_transaction(self, why: str) -> None:
        """Forget MAIL/RCPT state (EHLO, HELO, STARTTLS); subclasses drop back-ends here."""

    def on_close(self) -> None:
        """Release back-end connections; called once, whoever closes."""

    def summary(self) -> str:
        return ""

    def on_timeout(self) -> None:
        self.log.info("timeout after {seconds:g}s of silence", seconds=self.timeout())
        self.send(replies.TIMEOUT)
        self.close()

    # ------------------------------------------------------------ output

    def send(self, r: Reply) -> None:
        if self.transport is not None and not getattr(self.transport, "disconnecting", False):
            write_now(self.transport, r.encode())

    def error(self, r: Reply) -> None:
        """A protocol error: answer, count, and close after C{max_errors}."""
        self.send(r)
        self.errors += 1
        if self.errors >= self.cfg.max_errors and not self.closed:
            self.log.info("too many errors ({errors}), closing", errors=self.errors)
            self.send(replies.TOO_MANY_ERRORS)
            self.close()

    # ------------------------------------------------------------ flow control

    def hold(self, reason: str) -> None:
        """Stop handling input until L{release}(C{reason}).

        The socket goes on being read until L{HOLD_BUFFER} bytes wait, except for
        C{"backend-full"}: the back-end cannot take more, so stop reading now.
        """
        if not self._holds and not self.closed:
            self.paused = True
        self._holds.add(reason)
        if reason == BACKEND_FULL:
            self._pause_socket()

    def _pause_socket(self) -> None:
        if not self._socket_paused and not self.closed and self.transport is not None:
            self._socket_paused = True
            self.transport.pauseProducing()  # type: ignore[attr-defined]

    def release(self, reason: str) -> None:
        if reason not in self._holds:
            return
        self._holds.discard(reason)
        if not self._holds and not self.closed:
            self.paused = False
            if self._socket_paused:
                self._socket_paused = False
                if self.transport is not None:
                    self.transport.resumeProducing()  # type: ignore[attr-defined]
            self.dataReceived(b"")

    @property
    def busy(self) -> bool:
        return bool(self._holds)

    def run(self, reason: str, work: Deferred[Any], done: Callable[[Any], None]) -> None:
        """Hold the session while C{work} runs, then C{done(result)} and release.

        Any exception becomes a logged internal error and a C{451 4.3.0} to the client,
        never a traceback on the wire or a session stuck on hold.
        """
        self.hold(reason)

        def finish(result: Any) -> None:
            if isinstance(result, Failure):
                self.log.error("internal error: {why}", why=result.getTraceback())
                self.send(reply(451, "4.3.0", "Internal error, try again later"))
            elif not self.closed:
                try:
                    done(result)
                except Exception:  # noqa: BLE001 - a bug must not leave the session on hold
                    why = Failure().getTraceback()
                    self.log.error("internal error: {why}", why=why)
                    self.send(reply(451, "4.3.0", "Internal error, try again later"))
            self.release(reason)

        work.addBoth(finish)

    # ------------------------------------------------------------ input

    def dataReceived(self, data: bytes) -> None:
        if self.closed:
            return
        if self._timer is not None and self._timer.active():
            self._timer.reset(self.timeout())
        super().dataReceived(data)  # type: ignore[no-untyped-call]
        while self._kick and not self.paused and not self.closed:
            self._kick = False
            super().dataReceived(b"")  # type: ignore[no-untyped-call]
        if self._holds and len(self._buffer) > HOLD_BUFFER:
            self._pause_socket()

    def lineReceived(self, line: bytes) -> None:
        if self.closed:
            return
        handler = self._line_handler
        if handler is not None:
            self._line_handler = None
            handler(line)
            return
        if len(line) > COMMAND_LINE_LIMIT and line[:5].upper() != b"AUTH ":
            self.error(replies.LINE_TOO_LONG)
            return
        self.dispatch(split_command(line))

    def dispatch(self, cmd: Command) -> None:
        method = getattr(self, "smtp_" + cmd.verb, None) if cmd.verb else None
        if method is None:
            self.error(replies.UNKNOWN_COMMAND)
            return
        try:
            method(cmd.arg)
        except Exception:  # noqa: BLE001 - answer, log, go on: never a traceback to the client
            why = Failure().getTraceback()
            self.log.error("internal error in {verb}: {why}", verb=cmd.verb, why=why)
            self.send(reply(451, "4.3.0", "Internal error, try again later"))

    def lineLengthExceeded(self, line: bytes) -> None:
        """Over-long line: answer 500 5.5.6 and go on with the next line."""
        self.error(replies.LINE_TOO_LONG)
        if self.closed:
            return
        head, sep, rest = line.partition(b"\r\n")
        if sep:  # the long line ended in this buffer: the rest are further lines
            self._buffer = rest
            self._kick = True
        else:  # still inside the long line: skip to its end
            self._skipping = True
            self._skip_cr = head.endswith(b"\r")
            self.setRawMode()  # type: ignore[no-untyped-call]

    def rawDataReceived(self, data: bytes) -> None:
        if self._skipping:
            self._skip(data)
        else:
            self.raw_received(data)

    def _skip(self, data: bytes) -> None:
        if self._skip_cr and data.startswith(b"\n"):
            end = 1
        else:
            i = data.find(b"\r\n")
            if i < 0:
                self._skip_cr = data.endswith(b"\r")
                return
            end = i + 2
        self._skipping = False
        self.line_mode = 1
        self._buffer = data[end:] + self._buffer

    def raw_received(self, data: bytes) -> None:
        """Raw-mode input of a subclass (DATA body, relayed bytes)."""

    def set_line_mode_later(self, leftover: bytes) -> None:
        """Back to command lines; C{leftover} (pipelined after a body) is read next."""
        self.line_mode = 1
        self._buffer = leftover + self._buffer

    # ------------------------------------------------------------ commands

    def smtp_HELO(self, arg: bytes) -> None:
        self._greet(arg, esmtp=False)

    def smtp_EHLO(self, arg: bytes) -> None:
        self._greet(arg, esmtp=True)

    def _greet(self, arg: bytes, esmtp: bool) -> None:
        name = arg.split(b" ", 1)[0]
        if not name or any(b < 33 or b > 126 for b in name):
            self.error(reply(501, "5.5.4", f"Syntax: {'EHLO' if esmtp else 'HELO'} hostname"))
            return
        self.reset_transaction("new EHLO/HELO")
        self.helo = name.decode("ascii")
        self.esmtp = esmtp
        if esmtp:
            self.send(
                Reply(250, tuple(s.encode() for s in [self.cfg.hostname, *self.extensions()]))
            )
        else:
            self.send(reply(250, "", self.cfg.hostname))

    def starttls_offered(self) -> bool:
        return self.env.listener.offers_starttls and not self.tls_active

    def smtp_STARTTLS(self, arg: bytes) -> None:
        if self.tls_active:
            self.error(reply(554, "5.5.1", "Error: TLS already active"))
            return
        if not self.starttls_offered():
            self.error(replies.TLS_NOT_AVAILABLE)
            return
        if arg:
            self.error(reply(501, "5.5.4", "Syntax: STARTTLS"))
            return
        self.send(replies.READY_FOR_TLS)
        discarded = self.clearLineBuffer()  # type: ignore[no-untyped-call]  # RFC 3207 / CVE-2011-0411: nothing pipelined counts
        if discarded:
            self.log.warn("discarded {count} octets pipelined after STARTTLS", count=len(discarded))
        self.reset_transaction("STARTTLS")
        self.helo = None
        self.esmtp = False
        assert self.transport is not None and self.env.listener.server_tls is not None
        self.transport.startTLS(self.env.listener.server_tls)  # type: ignore[attr-defined]
        self.tls_active = True
        self.log.info("STARTTLS")

    def smtp_NOOP(self, arg: bytes) -> None:
        self.send(replies.OK)

    def smtp_HELP(self, arg: bytes) -> None:
        self.send(replies.HELP)

    def smtp_VRFY(self, arg: bytes) -> None:
        if not arg:
            self.error(reply(501, "5.5.4", "Syntax: VRFY address"))
            return
        self.send(replies.VRFY)

    def smtp_EXPN(self, arg: bytes) -> None:
        self.send(replies.NOT_IMPLEMENTED)

    def smtp_QUIT(self, arg: bytes) -> None:
        self.send(replies.BYE)
        self.close()

    def _timed_out(self) -> None:
        self._timer = None
        if self.closed:
            return
        if self.busy:  # waiting on the map or the back-end, not on the client
            self._timer = self.clock.callLater(self.timeout(), self._timed_out)
            return
        self.on_timeout()
