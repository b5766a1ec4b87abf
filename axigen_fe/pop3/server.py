"""The client-facing side of the POP3 proxy: everything before the mailbox is opened.

A session moves through explicit states::

    PREAUTH --USER/PASS, AUTH--> BUSY (user map, back-end login) --+OK--> RELAY
       ^  \\--AUTH without response--> SASL (PLAIN / LOGIN user / LOGIN pass) --/
       |                                   |
       +------ -ERR [AUTH] / [SYS/TEMP] ---+            any state --close--> CLOSED

- Only CAPA, USER, PASS, AUTH, STLS, QUIT and NOOP exist before login (RFC 1939, 2449,
  2595, 5034); anything else is C{-ERR} and counts toward C{max_errors}. CAPA is honest:
  no USER/SASL while a password may not cross this connection in the clear, STLS only
  where the listener can and TLS is not active yet.
- Commands may be pipelined (RFC 2449 PIPELINING): while a login is in flight, input is
  held, not parsed; on success it goes to the back-end untouched, on failure it is parsed
  as the next commands.
- After C{STLS}, whatever the client sent behind the command in the clear is discarded,
  so it cannot be taken for a command from the encrypted session (CVE-2011-0411 class).
- Unknown user and wrong password get the same answer after the same minimum delay
  (L{Pop3ProxyFactory.failure_delay}); only the log tells them apart. Directory outages
  and back-end trouble are C{-ERR [SYS/TEMP]} (RFC 3206), never an authentication error.
"""

from __future__ import annotations

import base64
import binascii
import enum
from collections.abc import Callable
from typing import Any, TypeVar, cast
from typing import Protocol as TypingProtocol

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IOpenSSLClientConnectionCreator,
    IReactorTime,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.python.failure import Failure

from axigen_fe.config.model import MailboxServiceConfig, TLSMode
from axigen_fe.net.fastwrite import write_now
from axigen_fe.net.listener import ListenerContext
from axigen_fe.net.relay import Pipe
from axigen_fe.ops.sessionlog import SessionIds, SessionLog
from axigen_fe.pop3.backend import (
    BackendLogin,
    CapabilityCache,
    LoginOutcome,
    LoginResult,
    Pop3BackendProtocol,
    describe_failure,
    printable,
)
from axigen_fe.usermap import results
from axigen_fe.usermap.interface import IUserMap, LookupResult, Outcome

CRLF = b"\r\n"

MAX_LINE = 8192
"""Longest command line (a SASL response can be longer than RFC 2449's 255 octets)."""

MAX_HELD = 65536
"""Pipelined bytes held during a login before the client is no longer read."""

AUTH_FAILURE_DELAY = 0.5
"""Seconds from the credentials to a failure answer, whatever failed (see module doc)."""

AUTH_FAILED = b"-ERR [AUTH] Authentication failed."
TOO_MANY_AUTH_FAILURES = b"-ERR [AUTH] Too many failures, closing connection."
TEMPORARY_FAILURE = b"-ERR [SYS/TEMP] Temporary failure, please try again later."
PLAINTEXT_DISALLOWED = (
    b"-ERR [AUTH] Plaintext authentication disallowed on non-secure (SSL/TLS) connections."
)
TOO_MANY_ERRORS = b"-ERR Too many bad commands, closing connection."

#: back-end refusals that are not about the credentials: passed on as they are
_PASS_THROUGH_CODES = (b"[IN-USE]", b"[SYS/TEMP]", b"[SYS/PERM]", b"[LOGIN-DELAY]")

P = TypeVar("P", bound=Protocol)


class BackendConnectorLike(TypingProtocol):
    """What the session needs from L{axigen_fe.net.backend.BackendConnector}."""

    tls_mode: TLSMode

    def connect(self, host: str, port: int, protocol: P) -> Deferred[P]: ...

    def tls_options(self, host: str) -> IOpenSSLClientConnectionCreator: ...


class _Transport(TypingProtocol):
    """The transport calls a proxy session makes (TCP or TLS, both provide them)."""

    def write(self, data: bytes) -> None: ...
    def loseConnection(self) -> None: ...
    def abortConnection(self) -> None: ...
    def pauseProducing(self) -> None: ...
    def resumeProducing(self) -> None: ...
    def startTLS(self, options: Any) -> None: ...
    def getPeer(self) -> IAddress: ...


class State(enum.Enum):
    PREAUTH = "pre-auth"
    SASL_PLAIN = "AUTH PLAIN"
    SASL_LOGIN_USER = "AUTH LOGIN user"
    SASL_LOGIN_PASS = "AUTH LOGIN password"
    BUSY = "logging in"
    RELAY = "relay"
    CLOSED = "closed"


_READING = frozenset(
    {State.PREAUTH, State.SASL_PLAIN, State.SASL_LOGIN_USER, State.SASL_LOGIN_PASS}
)


def format_peer(peer: IAddress) -> str:
    if isinstance(peer, IPv4Address):
        return f"{peer.host}:{peer.port}"
    if isinstance(peer, IPv6Address):
        return f"[{peer.host}]:{peer.port}"
    return str(peer)


def _b64decode(data: bytes) -> bytes | None:
    """RFC 5034 base64: C{=} is the empty response; anything malformed is None."""
    if data == b"=":
        return b""
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        return None


class Pop3ProxyFactory(Factory):
    """Everything the sessions of one listener share: config, map, connector, caches."""

    noisy = False
    failure_delay = AUTH_FAILURE_DELAY

    def __init__(
        self,
        reactor: IReactorTime,
        config: MailboxServiceConfig,
        listener: ListenerContext,
        usermap: IUserMap,
        connector: BackendConnectorLike,
        capabilities: CapabilityCache,
        ids: SessionIds,
    ) -> None:
        self.reactor = reactor
        self.config = config
        self.listener = listener
        self.usermap = usermap
        self.connector = connector
        self.capabilities = capabilities
        self.ids = ids
        self.greeting = (
            b"+OK " + config.greeting.encode("utf-8").replace(b"\r", b"").replace(b"\n", b"") + CRLF
        )
        master = config.backend_master_user
        # with a master login the back-end checks nothing: the node must (as IMAP does)
        self.send_password_to_map = bool(
            config.authenticate_on_proxy or usermap.checks_passwords_always or master
        )
        self.master_user = master.encode("utf-8") if master else None
        self.master_password = (config.backend_master_password or "").encode("utf-8")

    def buildProtocol(self, addr: IAddress | None) -> Pop3ProxyServer:
        return Pop3ProxyServer(self)


class Pop3ProxyServer(Protocol):
    """One client session; see the module docstring for the states."""

    def __init__(self, factory: Pop3ProxyFactory) -> None:
        self.factory = factory
        self._clock = factory.reactor
        self.state = State.PREAUTH
        self._closed_in = State.CLOSED
        self._buffer = bytearray()
        self._processing = False
        self._paused = False
        self._tls = False
        self._plaintext_ok = False
        self._errors = 0
        self._auth_errors = 0
        self._pending_user: bytes | None = None
        self._sasl_user = b""
        self._user = ""
        self._route = ""
        self._attempt_started = 0.0
        self._started = 0.0
        self._last_activity = 0.0
        self._moved = 0  # pipe.bytes_up + bytes_down at the last idle check
        self._timer: IDelayedCall | None = None
        self._failure_call: IDelayedCall | None = None
        self._connecting: Deferred[Pop3BackendProtocol] | None = None
        self._backend: Pop3BackendProtocol | None = None
        self._pipe: Pipe | None = None
        self._client_address: tuple[str, int] | None = None
        self.log: SessionLog

    @property
    def _t(self) -> _Transport:
        return cast(_Transport, self.transport)

    # ------------------------------------------------------------------ connection events

    def connectionMade(self) -> None:
        f = self.factory
        peer = self._t.getPeer()
        if isinstance(peer, (IPv4Address, IPv6Address)):
            self._client_address = (peer.host, peer.port)
        self.log = SessionLog("pop3", f.ids.next(), format_peer(peer))
        self._tls = f.listener.tls is TLSMode.IMPLICIT
        self._plaintext_ok = f.listener.plaintext_login_allowed(self._tls, peer)
        self._started = self._clock.seconds()
        self._timer = self._clock.callLater(f.config.preauth_timeout, self._preauth_expired)
        self.log.info(
            "connect from {peer} on {endpoint} (tls: {tls})",
            endpoint=f.listener.endpoint,
            tls="implicit" if self._tls else "none",
        )
        write_now(self._t, f.greeting)

    def dataReceived(self, data: bytes) -> None:
        if self.state is State.RELAY:
            assert self._pipe is not None
            self._pipe.to_backend(data)
            return
        if self.state is State.CLOSED:
            return
        self._buffer += data
        if self.state is State.BUSY:
            if len(self._buffer) > MAX_HELD and not self._paused:
                self._paused = True
                self._t.pauseProducing()
            return
        self._process()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        previous = self.state if self.state is not State.CLOSED else self._closed_in
        self.state = State.CLOSED
        for call in (self._timer, self._failure_call):
            if call is not None and call.active():
                call.cancel()
        self._timer = self._failure_call = None
        if self._connecting is not None:
            connecting, self._connecting = self._connecting, None
            connecting.cancel()
        up = down = 0
        if self._pipe is not None:
            self._pipe.closed_by_client()
            up, down = self._pipe.bytes_up, self._pipe.bytes_down
        elif self._backend is not None:
            self._backend.abort()
        self._backend = None
        self._buffer = bytearray()
        why = "closed" if isinstance(reason.value, ConnectionDone) else describe_failure(reason)
        self.log.info(
            "disconnect from {peer}: user {user}, state {state}, {up} bytes up, {down} bytes down, "
            "{duration:.3f} s ({why})",
            user=self._user or "-",
            state=previous.value,
            up=up,
            down=down,
            duration=self._clock.seconds() - self._started,
            why=why,
        )

    # ------------------------------------------------------------------ line handling

    def _process(self) -> None:
        """Handle every complete line while the state reads commands (not re-entrant)."""
        if self._processing:
            return
        self._processing = True
        try:
            while self.state in _READING:
                end = self._buffer.find(b"\n")
                if end < 0:
                    if len(self._buffer) > MAX_LINE:
                        self.log.warn("line longer than {limit} bytes from {peer}", limit=MAX_LINE)
                        self._close(b"-ERR Line too long.")
                    return
                line = bytes(self._buffer[:end])
                del self._buffer[: end + 1]
                if line.endswith(b"\r"):
                    line = line[:-1]
                self._line(line)
        finally:
            self._processing = False

    def _line(self, line: bytes) -> None:
        state = self.state
        if state is State.PREAUTH:
            self._command(line)
        elif state is State.SASL_PLAIN:
            self._sasl_plain(line, continuation=True)
        elif state is State.SASL_LOGIN_USER:
            self._sasl_login_user(line, continuation=True)
        elif state is State.SASL_LOGIN_PASS:
            self._sasl_login_pass(line)

    def _reply(self, line: bytes) -> None:
        write_now(self._t, line + CRLF)

    def _bad(self, reply: bytes) -> None:
        """A command that cannot be served: counted toward C{max_errors}."""
        self._errors += 1
        if self._errors >= self.factory.config.max_errors:
            self.log.info("too many bad commands from {peer}, closing", count=self._errors)
            self._close(TOO_MANY_ERRORS)
        else:
            self._reply(reply)

    def _close(self, last: bytes | None = None) -> None:
        if last is not None:
            self._reply(last)
        if self.state is not State.CLOSED:
            self._closed_in = self.state
            self.state = State.CLOSED
            if self._backend is not None:
                self._backend.abort()
            self._t.loseConnection()

    # ------------------------------------------------------------------ commands

    def _command(self, line: bytes) -> None:
        name, _, arg = line.partition(b" ")
        cmd = name.upper()
        if cmd == b"USER":
            self._cmd_user(arg)
        elif cmd == b"PASS":
            self._cmd_pass(arg)
        elif cmd == b"AUTH":
            self._cmd_auth(arg)
        elif cmd == b"CAPA":
            self._cmd_capa()
        elif cmd == b"STLS":
            self._cmd_stls()
        elif cmd == b"QUIT":
            self._close(b"+OK Logging out.")
        elif cmd == b"NOOP":
            self._reply(b"+OK")
        elif not cmd:
            self._bad(b"-ERR Empty command.")
        else:
            self._bad(
                b"-ERR Unknown command."
                if cmd.isalnum() and len(cmd) <= 16
                else b"-ERR Bad command."
            )

    def _cmd_capa(self) -> None:
        lines = [b"+OK Capability list follows"]
        if self._plaintext_ok:
            lines += [b"USER", b"SASL PLAIN LOGIN"]
        if self.factory.listener.offers_starttls and not self._tls:
            lines.append(b"STLS")
        lines += [
            b"RESP-CODES",
            b"AUTH-RESP-CODE",
            b"PIPELINING",
            b"IMPLEMENTATION axigen-fe",
            b".",
        ]
        write_now(self._t, CRLF.join(lines) + CRLF)

    def _cmd_user(self, arg: bytes) -> None:
        if not self._plaintext_ok:
            self._bad(PLAINTEXT_DISALLOWED)
        elif not arg:
            self._bad(b"-ERR USER needs a user name.")
        else:
            self._pending_user = arg
            self._reply(b"+OK")

    def _cmd_pass(self, arg: bytes) -> None:
        user, self._pending_user = self._pending_user, None
        if user is None:
            self._bad(b"-ERR No user name given (USER first).")
        else:
            self._login(user, arg, "USER")

    def _cmd_auth(self, arg: bytes) -> None:
        if not arg:
            # RFC 1734 clients list the mechanisms with a bare AUTH
            mechanisms = b"PLAIN" + CRLF + b"LOGIN" + CRLF if self._plaintext_ok else b""
            write_now(self._t, b"+OK" + CRLF + mechanisms + b"." + CRLF)
            return
        mechanism, _, initial = arg.partition(b" ")
        mechanism = mechanism.upper()
        if mechanism not in (b"PLAIN", b"LOGIN"):
            self._bad(b"-ERR Unsupported authentication mechanism.")
        elif not self._plaintext_ok:
            self._bad(PLAINTEXT_DISALLOWED)
        elif mechanism == b"PLAIN":
            if initial:
                self._sasl_plain(initial, continuation=False)
            else:
                self.state = State.SASL_PLAIN
                self._reply(b"+ ")
        elif initial:
            self._sasl_login_user(initial, continuation=False)
        else:
            self.state = State.SASL_LOGIN_USER
            self._reply(b"+ VXNlcm5hbWU6")  # "Username:"

    def _sasl_cancelled(self, response: bytes, continuation: bool) -> bool:
        if continuation and response == b"*":
            self.state = State.PREAUTH
            self._reply(b"-ERR Authentication cancelled.")
            return True
        return False

    def _sasl_plain(self, response: bytes, continuation: bool) -> None:
        if self._sasl_cancelled(response, continuation):
            return
        self.state = State.PREAUTH
        message = _b64decode(response)
        if message is None:
            self._bad(b"-ERR Invalid base64 data.")
            return
        parts = message.split(b"\0")
        if len(parts) != 3 or not parts[1]:
            self._bad(b"-ERR Malformed SASL PLAIN message.")
            return
        authzid, authcid, password = parts
        if authzid and authzid != authcid:
            # acting as another user is the back-end's master-user business, never a client's
            self._attempt_started = self._clock.seconds()
            self.state = State.BUSY
            self._user = printable(authcid, 256)
            self._reject("authorization identity differs from the authentication identity", "")
            return
        self._login(authcid, password, "PLAIN")

    def _sasl_login_user(self, response: bytes, continuation: bool) -> None:
        if self._sasl_cancelled(response, continuation):
            return
        user = _b64decode(response)
        if user is None or not user:
            self.state = State.PREAUTH
            self._bad(b"-ERR Invalid base64 data.")
            return
        self._sasl_user = user
        self.state = State.SASL_LOGIN_PASS
        self._reply(b"+ UGFzc3dvcmQ6")  # "Password:"

    def _sasl_login_pass(self, response: bytes) -> None:
        user, self._sasl_user = self._sasl_user, b""
        if self._sasl_cancelled(response, True):
            return
        self.state = State.PREAUTH
        password = _b64decode(response)
        if password is None:
            self._bad(b"-ERR Invalid base64 data.")
            return
        self._login(user, password, "LOGIN")

    def _cmd_stls(self) -> None:
        listener = self.factory.listener
        if self._tls:
            self._bad(b"-ERR TLS is already active.")
            return
        if not listener.offers_starttls or listener.server_tls is None:
            self._bad(b"-ERR STLS is not available on this port.")
            return
        self._reply(b"+OK Begin TLS negotiation now.")
        if self._buffer:
            # RFC 2595 / CVE-2011-0411: plaintext sent behind STLS must not become a command
            self.log.warn(
                "discarded {count} bytes pipelined after STLS by {peer}", count=len(self._buffer)
            )
            self._buffer = bytearray()
        self._t.startTLS(listener.server_tls)
        self._tls = True
        self._pending_user = None
        self._plaintext_ok = listener.plaintext_login_allowed(True, self._t.getPeer())
        self.log.info("TLS started by {peer}")

    # ------------------------------------------------------------------ logging in

    def _login(self, user: bytes, password: bytes, mechanism: str) -> None:
        """Look the user up, then (if routed) log in on the back-end; input is held meanwhile."""
        f = self.factory
        self.state = State.BUSY
        self._attempt_started = self._clock.seconds()
        try:
            address = user.decode("utf-8")
        except UnicodeDecodeError:
            self._user = printable(user, 256)
            self._reject("unknown user", "user name is not UTF-8")
            return
        self._user = printable(user, 256)
        d = f.usermap.lookup(address, password if f.send_password_to_map else None)
        d.addCallback(self._looked_up, user, password, mechanism)
        d.addErrback(self._lookup_crashed)

    def _lookup_crashed(self, failure: Failure) -> None:
        # IUserMap.lookup promises never to errback; if a map breaks that promise anyway,
        # the client still gets an answer and the operator a log line.
        self.log.error(
            "user map failed for {user}: {error}", user=self._user, error=failure.getErrorMessage()
        )
        if self.state is State.BUSY:
            self._tempfail("user map error")

    def _looked_up(
        self, result: LookupResult, user: bytes, password: bytes, mechanism: str
    ) -> None:
        if self.state is not State.BUSY:
            return  # the client left meanwhile
        if self.factory.master_user is not None:  # the back-end will not check the password
            result = results.unless_password_checked(result)
        outcome = result.outcome
        if outcome is Outcome.ROUTED and result.host:
            self._connect(result, user, password, mechanism)
        elif outcome is Outcome.BAD_PASSWORD:
            self._reject("bad password", result.detail)
        elif outcome is Outcome.TEMPFAIL:
            self._tempfail(f"user map: {result.detail}")
        elif outcome is Outcome.ROUTED:
            self._tempfail(f"user map routed {self._user} to no host")
        else:
            self._reject("unknown user", result.detail)

    def _connect(self, route: LookupResult, user: bytes, password: bytes, mechanism: str) -> None:
        f = self.factory
        cfg = f.config
        host = route.host
        assert host is not None
        port = route.port or cfg.backend_port
        self._route = f"{host}:{port}" if ":" not in host else f"[{host}]:{port}"
        if f.master_user is not None:
            login = BackendLogin(user, f.master_password, f.master_user)
        else:
            login = BackendLogin(user, password)
        connector = f.connector
        tls_options: Callable[[], IOpenSSLClientConnectionCreator] | None = None
        if connector.tls_mode is TLSMode.STARTTLS:
            tls_options = lambda: connector.tls_options(host)  # noqa: E731
        backend = Pop3BackendProtocol(
            self._clock,
            login,
            host=host,
            port=port,
            tls_mode=connector.tls_mode,
            tls_options=tls_options,
            client_address=self._client_address if cfg.forward_client_address else None,
            capabilities=f.capabilities,
            timeout=cfg.backend_connect_timeout,
        )
        self._backend = backend
        backend.result.addCallback(self._backend_answered, mechanism)
        connecting = connector.connect(host, port, backend)
        if self.state is State.BUSY and not connecting.called:
            self._connecting = connecting
        connecting.addCallbacks(self._connected, self._connect_failed)

    def _connected(self, backend: Pop3BackendProtocol) -> None:
        self._connecting = None

    def _connect_failed(self, failure: Failure) -> None:
        self._connecting = None
        if isinstance(failure.value, CancelledError) or self.state is not State.BUSY:
            return
        self._backend = None
        self._tempfail(f"back-end {self._route} unreachable: {describe_failure(failure)}")

    def _backend_answered(self, result: LoginResult, mechanism: str) -> None:
        backend = self._backend
        if self.state is not State.BUSY or backend is None:
            if backend is not None:
                backend.abort()
            return
        if result.outcome is LoginOutcome.READY:
            self._relay(backend, result, mechanism)
            return
        self._backend = None
        if result.outcome is LoginOutcome.UNAVAILABLE:
            self._tempfail(f"back-end {self._route} unavailable: {result.detail}")
        elif any(code in result.line.upper() for code in _PASS_THROUGH_CODES):
            self.log.info(
                "login refused by back-end {backend} for {user} from {peer}: {detail}",
                backend=self._route,
                user=self._user,
                detail=result.detail,
            )
            self._reply(result.line)
            self._resume()
        else:
            self._reject(f"back-end {self._route} refused the login", result.detail)

    # ------------------------------------------------------------------ outcomes

    def _reject(self, kind: str, detail: str) -> None:
        """Bad credentials (of any kind): one answer for all, after the same minimum delay."""
        self._auth_errors += 1
        self.log.info(
            "login failed for {user} from {peer}: {kind}{detail}",
            user=self._user,
            kind=kind,
            detail=f" ({detail})" if detail else "",
        )
        wait = self._attempt_started + self.factory.failure_delay - self._clock.seconds()
        if wait > 0:
            self._failure_call = self._clock.callLater(wait, self._send_auth_failure)
        else:
            self._send_auth_failure()

    def _send_auth_failure(self) -> None:
        self._failure_call = None
        if self.state is not State.BUSY:
            return
        if self._auth_errors >= self.factory.config.max_auth_errors:
            self.log.info(
                "too many failed logins from {peer} ({count}), closing", count=self._auth_errors
            )
            self._close(TOO_MANY_AUTH_FAILURES)
            return
        self._reply(AUTH_FAILED)
        self._resume()

    def _tempfail(self, detail: str) -> None:
        self.log.warn(
            "login of {user} from {peer} failed temporarily: {detail}",
            user=self._user,
            detail=detail,
        )
        self._reply(TEMPORARY_FAILURE)
        self._resume()

    def _resume(self) -> None:
        """Back to reading commands, starting with whatever was pipelined meanwhile."""
        self.state = State.PREAUTH
        self._backend = None
        if self._paused:
            self._paused = False
            self._t.resumeProducing()
        self._process()

    def _relay(self, backend: Pop3BackendProtocol, result: LoginResult, mechanism: str) -> None:
        f = self.factory
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        assert backend.transport is not None
        self.state = State.RELAY
        pipe = self._pipe = Pipe(self.transport, backend.transport)  # type: ignore[arg-type]
        self.log.info(
            "login {user} from {peer} routed to {backend} "
            "(method {mechanism}{master}, client address {fwd})",
            user=self._user,
            backend=self._route,
            mechanism=mechanism,
            master=", master user" if f.master_user is not None else "",
            fwd="forwarded"
            if result.forwarded
            else f"not forwarded{': ' if result.detail else ''}" + result.detail,
        )
        pipe.to_client(result.line + CRLF)
        leftover = backend.start_relay(self._from_backend, self._backend_lost)
        if leftover:
            pipe.to_client(leftover)
        if self._buffer:
            held, self._buffer = bytes(self._buffer), bytearray()
            pipe.to_backend(held)
        if self._paused:
            self._paused = False
            self._t.resumeProducing()
        self._last_activity = self._clock.seconds()
        self._moved = pipe.bytes_up + pipe.bytes_down
        idle = f.config.idle_timeout
        self._timer = self._clock.callLater(min(idle, max(1.0, idle / 8)), self._idle_check)

    def _from_backend(self, data: bytes) -> None:
        assert self._pipe is not None
        self._pipe.to_client(data)

    def _backend_lost(self, reason: Failure) -> None:
        if self._pipe is not None:
            self._pipe.closed_by_backend()

    # ------------------------------------------------------------------ timers

    def _preauth_expired(self) -> None:
        self._timer = None
        if self.state in (State.RELAY, State.CLOSED):
            return
        self.log.info(
            "no login from {peer} within {timeout:g} s, closing",
            timeout=self.factory.config.preauth_timeout,
        )
        self._close(b"-ERR Disconnected for inactivity.")

    def _idle_check(self) -> None:
        self._timer = None
        if self.state is not State.RELAY or self._pipe is None:
            return
        idle = self.factory.config.idle_timeout
        now = self._clock.seconds()
        moved = self._pipe.bytes_up + self._pipe.bytes_down
        if moved != self._moved:
            # activity is read from the relay's byte counters, not stamped per packet:
            # spliced bytes never reach dataReceived, and a clock call per chunk costs
            # (the timeout may run up to one check interval, idle/8, late)
            self._last_activity = now
        self._moved = moved
        remaining = self._last_activity + idle - now
        if remaining > 0:
            # every idle/8 at most: spliced traffic shows only in the counters
            self._timer = self._clock.callLater(
                min(remaining, max(1.0, idle / 8)), self._idle_check
            )
            return
        self.log.info(
            "session of {user} from {peer} idle for {idle:g} s, closing", user=self._user, idle=idle
        )
        self._pipe.close()
