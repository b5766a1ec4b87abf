"""The back-end leg of a POP3 session: greeting, TLS, client address, login replay.

One connection, one explicit sequence, every answer checked::

    greeting -> [STLS -> TLS handshake] -> [CAPA] -> [XCLIENT ADDR= PORT=] -> login -> relay

- CAPA is asked once per back-end (host, port, TLS mode) and remembered for a while in a
  L{CapabilityCache}: capabilities change with a software upgrade, not per session, and
  every round trip saved is CPU and latency saved on each login.
- XCLIENT is sent when the back-end says it will honour it: Dovecot announces it in its
  greeting (C{+OK [XCLIENT] ...}) to peers in C{login_trusted_networks}; other servers may
  list it in CAPA. A refused XCLIENT is logged and the login goes on (the back-end then
  sees the node's address, as without forwarding).
- The login is C{AUTH PLAIN} when the back-end offers SASL PLAIN (one round trip, binary
  safe for any user name or password), else C{USER}/C{PASS}. In master-user mode PLAIN
  carries the user as authorization identity and the master user as authentication
  identity; without SASL PLAIN the Dovecot convention C{user*master} is used with USER.
- With PIPELINING, XCLIENT and the login go out in one write (RFC 2449 section 6.6).

The outcome is a L{LoginResult}: READY (the back-end's C{+OK} line is what the client
gets), REFUSED (the back-end said C{-ERR} to the login) or UNAVAILABLE (no connection,
TLS or protocol failure, timeout): the client-side protocol maps these to POP3 answers.
"""

from __future__ import annotations

import base64
import enum
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from OpenSSL import SSL
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IDelayedCall, IOpenSSLClientConnectionCreator, IReactorTime
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure

from axigen_fe.config.model import TLSMode
from axigen_fe.net.fastwrite import write_now
from axigen_fe.net.ttlcache import TTLCache

MAX_LINE = 8192
"""Longest back-end line accepted before login (greeting, CAPA lines, answers)."""

MAX_INITIAL_RESPONSE_LINE = 255
"""RFC 5034 section 4: a longer AUTH line must send the response after a C{+} prompt."""

CRLF = b"\r\n"


class LoginOutcome(enum.Enum):
    READY = "ready"
    REFUSED = "refused"
    UNAVAILABLE = "unavailable"


@dataclass(frozen=True)
class LoginResult:
    """How the back-end login ended.

    @ivar line: the back-end's answer to the login, without CRLF (READY and REFUSED).
    @ivar detail: why, for the log; never a password.
    @ivar forwarded: the back-end accepted the client's address (XCLIENT).
    """

    outcome: LoginOutcome
    line: bytes = b""
    detail: str = ""
    forwarded: bool = False


@dataclass(frozen=True)
class BackendLogin:
    """The credentials to present to the back-end.

    @ivar user: whose mailbox to open.
    @ivar password: the client's password, or the master password in master-user mode.
    @ivar master_user: the master user's name, or None to replay the client's login.
    """

    user: bytes
    password: bytes = field(repr=False)
    master_user: bytes | None = None

    def plain_response(self) -> bytes:
        """The SASL PLAIN message (RFC 4616): authzid NUL authcid NUL password, base64."""
        if self.master_user is not None:
            message = self.user + b"\0" + self.master_user + b"\0" + self.password
        else:
            message = b"\0" + self.user + b"\0" + self.password
        return base64.b64encode(message)

    def user_pass(self) -> tuple[bytes, bytes] | None:
        """USER and PASS arguments, or None when they cannot travel on a POP3 line."""
        user = self.user if self.master_user is None else self.user + b"*" + self.master_user
        for value in (user, self.password):
            if b"\r" in value or b"\n" in value or b"\0" in value:
                return None
        return user, self.password


@dataclass(frozen=True)
class Capabilities:
    """What matters to the proxy in a back-end's CAPA answer."""

    pipelining: bool = False
    sasl_plain: bool = False
    xclient: bool = False

    @classmethod
    def parse(cls, lines: list[bytes]) -> Capabilities:
        pipelining = sasl_plain = xclient = False
        for line in lines:
            words = line.upper().split()
            if not words:
                continue
            if words[0] == b"PIPELINING":
                pipelining = True
            elif words[0] == b"SASL":
                sasl_plain = b"PLAIN" in words[1:]
            elif words[0] == b"XCLIENT":
                xclient = True
        return cls(pipelining, sasl_plain, xclient)


CapabilityKey = tuple[str, int, TLSMode]


#: CAPA per (host, port, TLS mode); a login answer that suggests a stale entry drops it
CapabilityCache = TTLCache[CapabilityKey, Capabilities]


class _Phase(enum.Enum):
    """Where the back-end conversation is."""

    GREETING = "greeting"
    STLS = "STLS"
    CAPA = "CAPA"
    CAPA_LIST = "CAPA list"
    COMMANDS = "login commands"
    RELAY = "relay"
    DONE = "done"


class _Cmd(enum.Enum):
    """A login-phase command whose answer is awaited (several may be pipelined)."""

    XCLIENT = "XCLIENT"
    AUTH_PROMPT = "AUTH PLAIN prompt"
    AUTH = "AUTH PLAIN"
    USER = "USER"
    PASS = "PASS"


def describe_failure(reason: Failure) -> str:
    """A one-line, operator-readable reason for a lost or failed back-end connection."""
    value = reason.value
    if isinstance(value, SSL.Error):
        parts = []
        for item in value.args[0] if value.args and isinstance(value.args[0], list) else []:
            if isinstance(item, tuple) and item:
                parts.append(str(item[-1]))
        return "TLS failure: " + (", ".join(parts) or str(value))
    if isinstance(value, ConnectionDone):
        return "connection closed"
    if isinstance(value, ConnectionLost):
        return "connection lost"
    text = str(value).strip() or type(value).__name__
    return text.splitlines()[0] if text else type(value).__name__


def printable(data: bytes, limit: int = 160) -> str:
    """A back-end line as safe log text (no control characters, bounded length)."""
    text = data[:limit].decode("utf-8", "replace")
    return "".join(ch if ch.isprintable() else "?" for ch in text)


class Pop3BackendProtocol(Protocol):
    """Logs in to one back-end for one client, then passes bytes to the relay.

    C{result} fires once with a L{LoginResult}. After READY, the client side calls
    L{start_relay} with its callbacks; from then on every byte goes to C{on_data}.
    """

    def __init__(
        self,
        clock: IReactorTime,
        login: BackendLogin,
        *,
        host: str,
        port: int,
        tls_mode: TLSMode,
        tls_options: Callable[[], IOpenSSLClientConnectionCreator] | None,
        client_address: tuple[str, int] | None,
        capabilities: CapabilityCache,
        timeout: float,
    ) -> None:
        self.result: Deferred[LoginResult] = Deferred()
        self._clock = clock
        self._login = login
        self._tls_mode = tls_mode
        self._tls_options = tls_options
        self._client_address = client_address
        self._caps_cache = capabilities
        self._caps_key: CapabilityKey = (host, port, tls_mode)
        self._capa_lines: list[bytes] = []
        self._timeout = timeout
        self._timer: IDelayedCall | None = None
        self._buffer = bytearray()
        self._phase = _Phase.GREETING
        self._expect: deque[_Cmd] = deque()
        self._unsent: deque[tuple[_Cmd, bytes]] = deque()
        self._greeting_xclient = False
        self._forwarded = False
        self._note = ""
        self._on_data: Callable[[bytes], None] | None = None
        self._on_lost: Callable[[Failure], None] | None = None

    # ------------------------------------------------------------------ connection

    def connectionMade(self) -> None:
        self._timer = self._clock.callLater(self._timeout, self._timed_out)

    def dataReceived(self, data: bytes) -> None:
        if self._phase is _Phase.RELAY and self._on_data is not None:
            self._on_data(data)
            return
        if self._phase is _Phase.DONE:
            return
        self._buffer += data
        while self._phase not in (_Phase.RELAY, _Phase.DONE):
            end = self._buffer.find(b"\n")
            if end < 0:
                if len(self._buffer) > MAX_LINE:
                    self._fail(f"back-end line longer than {MAX_LINE} bytes during login")
                return
            line = bytes(self._buffer[:end]).rstrip(b"\r")
            del self._buffer[: end + 1]
            self._line(line)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._cancel_timer()
        phase = self._phase
        self._phase = _Phase.DONE
        if phase is _Phase.RELAY:
            if self._on_lost is not None:
                self._on_lost(reason)
            return
        if not self.result.called:
            waiting = phase.value
            if phase is _Phase.COMMANDS and self._expect:
                waiting = self._expect[0].value
            detail = f"{describe_failure(reason)} (waiting for {waiting})"
            self._finish(LoginResult(LoginOutcome.UNAVAILABLE, detail=detail))

    # ------------------------------------------------------------------ the client side's handles

    def start_relay(
        self, on_data: Callable[[bytes], None], on_lost: Callable[[Failure], None]
    ) -> bytes:
        """Switch to relaying; returns bytes the back-end sent after its login answer."""
        self._on_data = on_data
        self._on_lost = on_lost
        leftover = bytes(self._buffer)
        self._buffer = bytearray()
        return leftover

    def abort(self) -> None:
        """The client went away (or gave up): drop the back-end connection now."""
        self._cancel_timer()
        if self._phase is not _Phase.DONE:
            self._phase = _Phase.DONE
            if self.transport is not None:
                self.transport.abortConnection()  # type: ignore[attr-defined]

    # ------------------------------------------------------------------ the sequence

    def _write(self, data: bytes) -> None:
        assert self.transport is not None
        write_now(self.transport, data)

    def _line(self, line: bytes) -> None:
        phase = self._phase
        if phase is _Phase.CAPA_LIST:
            if line == b".":
                self._capabilities_known(Capabilities.parse(self._capa_lines))
            elif len(self._capa_lines) < 256:
                self._capa_lines.append(line)
        elif phase is _Phase.COMMANDS:
            self._answer(line)
        elif phase is _Phase.GREETING:
            if not line.startswith(b"+OK"):
                self._fail(f"back-end greeting is not +OK: {printable(line)}")
                return
            self._greeting_xclient = b"[XCLIENT]" in line.upper()
            if self._tls_mode is TLSMode.STARTTLS:
                self._phase = _Phase.STLS
                self._write(b"STLS" + CRLF)
            else:
                self._negotiate()
        elif phase is _Phase.STLS:
            if not line.startswith(b"+OK"):
                self._fail(f"back-end refused STLS: {printable(line)}")
                return
            if self._buffer:
                # bytes between +OK and the handshake would be trusted as if they were encrypted
                self._fail("back-end sent data after its STLS answer (injection?)")
                return
            assert self._tls_options is not None and self.transport is not None
            self.transport.startTLS(self._tls_options())  # type: ignore[attr-defined]
            self._negotiate()
        elif phase is _Phase.CAPA:
            if line.startswith(b"+OK"):
                self._phase = _Phase.CAPA_LIST
                self._capa_lines = []
            else:
                self._capabilities_known(Capabilities())

    def _negotiate(self) -> None:
        """After greeting (and TLS): learn the capabilities unless remembered, then log in."""
        caps = self._caps_cache.get(self._caps_key)
        if caps is None:
            self._phase = _Phase.CAPA
            self._write(b"CAPA" + CRLF)
            return
        self._capabilities_known(caps, store=False)

    def _capabilities_known(self, caps: Capabilities, store: bool = True) -> None:
        if store:
            self._caps_cache.put(self._caps_key, caps)
        commands: list[tuple[_Cmd, bytes]] = []
        if self._client_address is not None and (self._greeting_xclient or caps.xclient):
            host, port = self._client_address
            xclient = b"XCLIENT ADDR=%s PORT=%d" % (host.encode("ascii"), port)
            commands.append((_Cmd.XCLIENT, xclient + CRLF))
        if caps.sasl_plain:
            line = b"AUTH PLAIN " + self._login.plain_response() + CRLF
            if len(line) <= MAX_INITIAL_RESPONSE_LINE:
                commands.append((_Cmd.AUTH, line))
            else:
                commands.append((_Cmd.AUTH_PROMPT, b"AUTH PLAIN" + CRLF))
        else:
            user_pass = self._login.user_pass()
            if user_pass is None:
                self._finish(
                    LoginResult(
                        LoginOutcome.REFUSED,
                        b"-ERR [AUTH] Authentication failed.",
                        "credentials hold CR, LF or NUL and the back-end offers no SASL PLAIN",
                    )
                )
                self._close()
                return
            commands.append((_Cmd.USER, b"USER " + user_pass[0] + CRLF))
            commands.append((_Cmd.PASS, b"PASS " + user_pass[1] + CRLF))
        self._phase = _Phase.COMMANDS
        if caps.pipelining:
            self._expect.extend(cmd for cmd, _ in commands)
            self._write(b"".join(line for _, line in commands))
        else:
            self._unsent.extend(commands)
            self._send_next()

    def _send_next(self) -> None:
        cmd, line = self._unsent.popleft()
        self._expect.append(cmd)
        self._write(line)

    def _answer(self, line: bytes) -> None:
        if not self._expect:
            self._fail(f"unsolicited back-end line during login: {printable(line)}")
            return
        cmd = self._expect.popleft()
        ok = line.startswith(b"+OK")
        if cmd is _Cmd.XCLIENT:
            self._forwarded = ok
            if not ok:
                self._note = f"back-end refused XCLIENT: {printable(line)}"
        elif cmd is _Cmd.AUTH_PROMPT:
            if line.startswith(b"+ ") or line == b"+":
                self._expect.appendleft(_Cmd.AUTH)
                self._write(self._login.plain_response() + CRLF)
            else:
                self._login_answer(line)
        elif cmd is _Cmd.USER:
            if not ok:  # a pipelined PASS gets answered too; nobody waits for it any more
                self._login_answer(line)
        else:  # AUTH, PASS
            self._login_answer(line)
        if self._phase is _Phase.COMMANDS and not self._expect and self._unsent:
            self._send_next()

    def _login_answer(self, line: bytes) -> None:
        if line.startswith(b"+OK"):
            self._cancel_timer()
            self._phase = _Phase.RELAY
            self._expect.clear()
            self._finish(LoginResult(LoginOutcome.READY, line, self._note, self._forwarded))
        elif line.startswith(b"-ERR"):
            if b"[AUTH]" not in line.upper():
                self._caps_cache.forget(self._caps_key)
            detail = f"back-end said {printable(line)}"
            self._finish(LoginResult(LoginOutcome.REFUSED, line, detail, self._forwarded))
            self._close()
        else:
            self._caps_cache.forget(self._caps_key)
            self._fail(f"unexpected back-end answer to the login: {printable(line)}")

    # ------------------------------------------------------------------ endings

    def _timed_out(self) -> None:
        self._timer = None
        self._fail(f"no answer from the back-end within {self._timeout:g} s")

    def _fail(self, detail: str) -> None:
        self._finish(LoginResult(LoginOutcome.UNAVAILABLE, detail=detail))
        self._close(abort=True)

    def _close(self, abort: bool = False) -> None:
        self._cancel_timer()
        if self._phase is _Phase.DONE:
            return
        self._phase = _Phase.DONE
        if self.transport is None:
            return
        if abort:
            self.transport.abortConnection()  # type: ignore[attr-defined]
        else:
            write_now(self.transport, b"QUIT" + CRLF)
            self.transport.loseConnection()

    def _finish(self, result: LoginResult) -> None:
        if not self.result.called:
            self.result.callback(result)

    def _cancel_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
