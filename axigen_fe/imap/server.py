"""The client-facing IMAP session: everything up to login, then a raw relay.

States (one session, in the order they happen)::

    greeting -> NOT_AUTHENTICATED <-> AUTHENTICATING (SASL exchange)
                      |    ^
                      v    | (failure: NO, back to NOT_AUTHENTICATED)
                  LOGGING_IN (user map lookup, back-end connect + login replay)
                      |
                      v
                  RELAYING (bytes both ways, nothing IMAP-aware) -> CLOSED

Before login the node speaks IMAP itself (CAPABILITY, NOOP, LOGOUT, STARTTLS, LOGIN,
AUTHENTICATE PLAIN/LOGIN, ID); anything else is answered with BAD and counted toward
C{max_errors}. After a successful back-end login the client gets the back-end's own
post-login capabilities in the tagged OK, and from then on the node only moves bytes
(L{axigen_fe.net.relay.Pipe}, flow-controlled both ways).

What the client is told is deliberately coarse: an unknown user and a wrong password
get the same answer after the same delay; a directory or back-end outage gets
C{[UNAVAILABLE]} (retry later) and never looks like a wrong password. The log says which.
"""

from __future__ import annotations

import base64
import binascii
import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IOpenSSLClientConnectionCreator,
    IReactorTime,
)
from twisted.internet.protocol import Protocol, ServerFactory, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from axigen_fe.config.model import MailboxServiceConfig, TLSMode
from axigen_fe.imap.backend import (
    BackendLogin,
    BackendRefused,
    BackendSession,
    BackendUnavailable,
    ClientAddress,
    Credentials,
    MasterUser,
    describe_failure,
)
from axigen_fe.imap.parser import Atom, BadCommand, Command, CommandReader, Continue
from axigen_fe.net.backend import BackendConnector
from axigen_fe.net.fastwrite import write_now
from axigen_fe.net.listener import ListenerContext
from axigen_fe.net.relay import Pipe
from axigen_fe.ops.sessionlog import SessionIds, SessionLog
from axigen_fe.usermap import results
from axigen_fe.usermap.interface import IUserMap, LookupResult, Outcome

#: seconds a failed login waits before its answer, counted from the command: unknown user,
#: wrong password and a refusing back-end then take the same time (no user enumeration)
AUTH_FAILURE_DELAY = 0.5

#: client bytes buffered while the login is in progress before the node stops reading
MAX_PIPELINED = 65536

_COMMANDS_AFTER_LOGIN = frozenset(
    "SELECT EXAMINE CREATE DELETE RENAME SUBSCRIBE UNSUBSCRIBE LIST LSUB NAMESPACE STATUS APPEND "
    "IDLE CHECK CLOSE UNSELECT EXPUNGE SEARCH FETCH STORE COPY MOVE UID ENABLE GETQUOTA "
    "GETQUOTAROOT SETQUOTA GETACL SETACL MYRIGHTS LISTRIGHTS GETMETADATA SETMETADATA".split()
)

_log = Logger(namespace="axigen_fe.imap")

_B64_USERNAME = base64.b64encode(b"Username:")
_B64_PASSWORD = base64.b64encode(b"Password:")


class State(enum.Enum):
    NOT_AUTHENTICATED = "not-authenticated"
    AUTHENTICATING = "authenticating"
    LOGGING_IN = "logging-in"
    RELAYING = "relaying"
    CLOSED = "closed"


@dataclass
class _SASL:
    """An AUTHENTICATE exchange in progress (the client owes us response lines)."""

    tag: bytes
    mechanism: str
    user: bytes | None = None


def format_peer(address: IAddress) -> tuple[str, int, str]:
    """(ip, port, "ip:port") for the log and the back-end's ID."""
    if isinstance(address, (IPv4Address, IPv6Address)):
        shown = (
            f"[{address.host}]:{address.port}"
            if ":" in address.host
            else f"{address.host}:{address.port}"
        )
        return address.host, address.port, shown
    return "127.0.0.1", 0, str(address)


class IMAPProxyFactory(ServerFactory):
    """Everything the sessions of one listener share: config, map, back-end connector."""

    noisy = False

    def __init__(
        self,
        clock: IReactorTime,
        config: MailboxServiceConfig,
        listener: ListenerContext,
        usermap: IUserMap,
        connector: BackendConnector,
        ids: SessionIds,
        master: MasterUser | None = None,
        auth_failure_delay: float = AUTH_FAILURE_DELAY,
    ) -> None:
        self.clock = clock
        self.config = config
        self.listener = listener
        self.usermap = usermap
        self.connector = connector
        self.ids = ids
        self.master = master
        self.auth_failure_delay = auth_failure_delay
        # the node must see the password when it is the only one who can check it
        self.check_password = bool(
            config.authenticate_on_proxy or usermap.checks_passwords_always or master is not None
        )

    def buildProtocol(self, addr: IAddress | None) -> IMAPProxy:
        return IMAPProxy(self)


class IMAPProxy(Protocol):
    """One client session (see the module docstring for its states)."""

    def __init__(self, factory: IMAPProxyFactory) -> None:
        self.shared = factory
        self.state = State.NOT_AUTHENTICATED
        self.tls_active = factory.listener.tls is TLSMode.IMPLICIT
        self.reader: CommandReader | None = CommandReader()
        self.errors = 0
        self.auth_errors = 0
        self.user: str | None = None
        self.log: SessionLog | None = None
        self.peer = ("", 0, "")
        self._sasl: _SASL | None = None
        self._preauth: IDelayedCall | None = None
        self._expired = False
        self._paused = False
        self._backend: BackendLogin | None = None
        self._connecting: Deferred[BackendLogin] | None = None
        self._backend_name = ""
        self.pipe: Pipe | None = None
        self._idle: IDelayedCall | None = None
        self._idle_seen = 0
        self._idle_since = 0.0
        self._closed_by = "client"
        self._close_reason = ""
        self._connected_at = 0.0

    @property
    def _tcp(self) -> Any:
        """The transport with everything it offers (ITLSTransport, IProducer, getPeer...)."""
        return self.transport

    # ------------------------------------------------------------- lifecycle

    def connectionMade(self) -> None:
        f = self.shared
        self.peer = format_peer(self._tcp.getPeer())
        self.log = SessionLog("imap", f.ids.next(), self.peer[2])
        self._connected_at = f.clock.seconds()
        self.log.info("connect from {peer} on {listener}", listener=f.listener.endpoint)
        self._preauth = f.clock.callLater(f.config.preauth_timeout, self._preauth_expired)
        greeting = f.config.greeting or "IMAP4rev1 proxy ready"
        self._send(
            b"* OK [CAPABILITY " + self.capabilities() + b"] " + greeting.encode("utf-8") + b"\r\n"
        )

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        previous = self.state
        self.state = State.CLOSED
        self._cancel_timers()
        assert self.log is not None
        if previous is State.RELAYING and self.pipe is not None:
            self.pipe.closed_by_client()
            self.log.info(
                "disconnect: user {user}, {up} bytes from client, {down} bytes to client, "
                "{seconds:.1f}s, closed by {by}",
                user=self.user,
                up=self.pipe.bytes_up,
                down=self.pipe.bytes_down,
                seconds=self.shared.clock.seconds() - self._connected_at,
                by=self._closed_by,
            )
            return
        if self._connecting is not None:
            self._connecting.cancel()
        if self._backend is not None:
            self._backend.abort()
        why = (
            self._close_reason
            or f"closed by client while {previous.value}: {reason.getErrorMessage()}"
        )
        self.log.info(
            "disconnect before login: {why} ({failed} failed logins, {bad} bad commands)",
            why=why,
            failed=self.auth_errors,
            bad=self.errors,
        )

    def _cancel_timers(self) -> None:
        for timer in (self._preauth, self._idle):
            if timer is not None and timer.active():
                timer.cancel()
        self._preauth = self._idle = None

    def _send(self, data: bytes) -> None:
        write_now(self.transport, data)

    def _close(self, why: str) -> None:
        """End the session from our side; C{why} goes into the disconnect line."""
        if self.state is not State.CLOSED:
            self._close_reason = why
            self.state = State.CLOSED
            self._cancel_timers()
            self._tcp.loseConnection()

    def _bye(self, text: str, why: str) -> None:
        self._send(b"* BYE " + text.encode() + b"\r\n")
        self._close(why)

    def _preauth_expired(self) -> None:
        self._preauth = None
        if self.state is State.LOGGING_IN:
            self._expired = True  # answered when the login in progress ends
            return
        seconds = self.shared.config.preauth_timeout
        self._bye("Autologout; idle for too long", f"preauth timeout: no login within {seconds:g}s")

    # -------------------------------------------------------- what we offer

    def plaintext_allowed(self) -> bool:
        peer: IAddress = self._tcp.getPeer()
        return self.shared.listener.plaintext_login_allowed(self.tls_active, peer)

    def capabilities(self) -> bytes:
        """Honest pre-login capabilities for this connection, right now."""
        caps = [b"IMAP4rev1", b"SASL-IR", b"LITERAL+", b"ID"]
        if self.shared.listener.offers_starttls and not self.tls_active:
            caps.append(b"STARTTLS")
        if self.plaintext_allowed():
            caps += [b"AUTH=PLAIN", b"AUTH=LOGIN"]
        else:
            caps.append(b"LOGINDISABLED")
        return b" ".join(caps)

    # ----------------------------------------------------------------- input

    def dataReceived(self, data: bytes) -> None:
        reader = self.reader
        if reader is None:  # closed, or relaying through an old reference
            return
        reader.feed(data)
        if self.state is not State.LOGGING_IN:
            self._process()
        if self.state is State.LOGGING_IN and reader.buffered > MAX_PIPELINED and not self._paused:
            # the client may pipeline after LOGIN, but not without bound while we log in
            self._paused = True
            self._tcp.pauseProducing()

    def _process(self) -> None:
        """Handle every complete command or SASL line buffered, while the state allows."""
        while self.reader is not None:
            if self.state is State.NOT_AUTHENTICATED:
                event = self.reader.next_command()
                if event is None:
                    return
                self._event(event)
            elif self.state is State.AUTHENTICATING:
                line = self.reader.next_line()
                if line is None:
                    return
                if isinstance(line, BadCommand):
                    self._bad(line)
                else:
                    self._sasl_line(line)
            else:
                return

    def _event(self, event: Command | Continue | BadCommand) -> None:
        if isinstance(event, Continue):
            self._send(b"+ Ready for literal data\r\n")
        elif isinstance(event, BadCommand):
            self._bad(event)
        else:
            self._command(event)

    def _bad(self, event: BadCommand) -> None:
        tag = event.tag if event.tag is not None else b"*"
        if event.fatal:
            if event.tag is not None:
                self._send(tag + b" BAD " + event.text.encode() + b"\r\n")
            self._bye(event.text, f"protocol error: {event.text}")
            return
        self._sasl = None
        if self.state is State.AUTHENTICATING:
            self.state = State.NOT_AUTHENTICATED
        self._error(tag, event.text)

    def _error(self, tag: bytes, text: str, status: bytes = b"BAD") -> None:
        """Answer a command that cannot be done; too many of them end the session."""
        self._send(tag + b" " + status + b" " + text.encode() + b"\r\n")
        self.errors += 1
        if self.errors >= self.shared.config.max_errors and self.state is not State.CLOSED:
            self._bye("Too many invalid IMAP commands.", "too many bad commands")

    # -------------------------------------------------------------- commands

    def _command(self, cmd: Command) -> None:
        handler = _HANDLERS.get(cmd.name)
        if handler is not None:
            handler(self, cmd)
        elif cmd.name in _COMMANDS_AFTER_LOGIN:
            self._error(cmd.tag, f"{cmd.name} is not allowed before login.")
        else:
            self._error(cmd.tag, "Unknown command.")

    def _no_args(self, cmd: Command) -> bool:
        if cmd.args:
            self._error(cmd.tag, f"{cmd.name} takes no arguments.")
            return False
        return True

    def _do_capability(self, cmd: Command) -> None:
        if self._no_args(cmd):
            self._send(
                b"* CAPABILITY "
                + self.capabilities()
                + b"\r\n"
                + cmd.tag
                + b" OK Capability completed.\r\n"
            )

    def _do_noop(self, cmd: Command) -> None:
        if self._no_args(cmd):
            self._send(cmd.tag + b" OK NOOP completed.\r\n")

    def _do_logout(self, cmd: Command) -> None:
        if self._no_args(cmd):
            self._send(b"* BYE Logging out\r\n" + cmd.tag + b" OK Logout completed.\r\n")
            self._close("logout")

    def _do_id(self, cmd: Command) -> None:
        valid = len(cmd.args) == 1 and (
            (isinstance(cmd.args[0], Atom) and cmd.args[0].upper() == b"NIL")
            or isinstance(cmd.args[0], list)
        )
        if not valid:
            self._error(cmd.tag, "ID needs a parameter list or NIL.")
            return
        self._send(b'* ID ("name" "axigen-fe")\r\n' + cmd.tag + b" OK ID completed.\r\n")

    def _do_starttls(self, cmd: Command) -> None:
        if not self._no_args(cmd):
            return
        listener = self.shared.listener
        if self.tls_active:
            self._error(cmd.tag, "TLS is already active.")
            return
        if not listener.offers_starttls or listener.server_tls is None:
            self._error(cmd.tag, "STARTTLS is not offered on this port.")
            return
        assert self.reader is not None and self.log is not None
        # CVE-2011-0411 class: nothing sent in the clear after STARTTLS may be acted on
        dropped = self.reader.discard()
        if dropped:
            self.log.warn("discarded {count} bytes pipelined after STARTTLS", count=dropped)
        self._send(cmd.tag + b" OK Begin TLS negotiation now.\r\n")
        self._tcp.startTLS(listener.server_tls)
        self.tls_active = True

    def _plaintext_refused(self, tag: bytes) -> bool:
        """Answer NO when no password may cross this connection yet (RFC 8314)."""
        if self.plaintext_allowed():
            return False
        self._error(
            tag,
            "[PRIVACYREQUIRED] Plaintext authentication is disabled; use STARTTLS first.",
            b"NO",
        )
        return True

    def _do_login(self, cmd: Command) -> None:
        if len(cmd.args) != 2 or any(isinstance(a, list) for a in cmd.args):
            self._error(cmd.tag, "LOGIN needs a user name and a password.")
            return
        if self._plaintext_refused(cmd.tag):
            return
        user, password = cmd.args
        assert isinstance(user, bytes) and isinstance(password, bytes)
        self._login(cmd.tag, user, password, "LOGIN")

    def _do_authenticate(self, cmd: Command) -> None:
        args = cmd.args
        if not 1 <= len(args) <= 2 or not all(isinstance(a, Atom) for a in args):
            self._error(cmd.tag, "AUTHENTICATE needs a mechanism name.")
            return
        mechanism = bytes(args[0]).upper().decode("ascii", "replace")  # type: ignore[arg-type]
        if mechanism not in ("PLAIN", "LOGIN"):
            self._error(cmd.tag, "Unsupported authentication mechanism.", b"NO")
            return
        if self._plaintext_refused(cmd.tag):
            return
        self._sasl = _SASL(cmd.tag, mechanism)
        self.state = State.AUTHENTICATING
        if len(args) == 2:  # SASL-IR (RFC 4959); "=" is an empty initial response
            initial = args[1]
            assert isinstance(initial, bytes)
            self._sasl_line(b"" if initial == b"=" else initial, initial=True)
        elif mechanism == "PLAIN":
            self._send(b"+ \r\n")
        else:
            self._send(b"+ " + _B64_USERNAME + b"\r\n")

    def _sasl_line(self, line: bytes, initial: bool = False) -> None:
        sasl = self._sasl
        assert sasl is not None
        if line == b"*" and not initial:
            self._sasl = None
            self.state = State.NOT_AUTHENTICATED
            self._error(sasl.tag, "Authentication canceled.")
            return
        try:
            data = base64.b64decode(line, validate=True)
        except (binascii.Error, ValueError):
            self._sasl = None
            self.state = State.NOT_AUTHENTICATED
            self._error(sasl.tag, "Invalid base64 data.")
            return
        if sasl.mechanism == "LOGIN":
            if sasl.user is None:
                sasl.user = data
                self._send(b"+ " + _B64_PASSWORD + b"\r\n")
                return
            self._sasl = None
            self._login(sasl.tag, sasl.user, data, "AUTHENTICATE LOGIN")
            return
        self._sasl = None
        fields = data.split(b"\0")
        if len(fields) != 3:
            self.state = State.NOT_AUTHENTICATED
            self._error(sasl.tag, "Invalid PLAIN response.")
            return
        authzid, authcid, password = fields
        if authzid and authzid != authcid:
            self.state = State.LOGGING_IN
            self._auth_failed(
                sasl.tag,
                authcid.decode("utf-8", "replace"),
                f"authorization as {authzid.decode('utf-8', 'replace')!r} is not supported",
                self.shared.clock.seconds(),
                code=b"AUTHORIZATIONFAILED",
                text=b"Authorization as another user is not supported.",
            )
            return
        self._login(sasl.tag, authcid, password, "AUTHENTICATE PLAIN")

    # ----------------------------------------------------------------- login

    def _login(self, tag: bytes, raw_user: bytes, password: bytes, method: str) -> None:
        """Look the user up, then log in to its back-end; the client waits meanwhile."""
        f = self.shared
        self.state = State.LOGGING_IN
        started = f.clock.seconds()
        try:
            user = raw_user.decode("utf-8")
        except UnicodeDecodeError:
            self._auth_failed(
                tag, raw_user.decode("utf-8", "replace"), "user name is not UTF-8", started
            )
            return
        if not user or len(user) > 320:
            self._auth_failed(tag, user[:320], "empty or oversized user name", started)
            return
        d = f.usermap.lookup(user, password if f.check_password else None)
        d.addCallback(self._looked_up, tag, user, password, method, started)
        d.addErrback(self._internal_error, tag, user)

    def _looked_up(
        self,
        result: LookupResult,
        tag: bytes,
        user: str,
        password: bytes,
        method: str,
        started: float,
    ) -> None:
        if self.state is not State.LOGGING_IN:
            return  # the client left meanwhile
        if self.shared.master is not None:  # the back-end will not check the password
            result = results.unless_password_checked(result)
        outcome = result.outcome
        if outcome is Outcome.UNKNOWN_USER:
            self._auth_failed(tag, user, f"unknown user ({result.detail})", started)
        elif outcome is Outcome.BAD_PASSWORD:
            self._auth_failed(tag, user, f"wrong password ({result.detail})", started)
        elif outcome is Outcome.TEMPFAIL or result.host is None:
            self._unavailable(
                tag,
                user,
                f"tempfail ({result.detail or 'directory unavailable'})",
                b"Directory temporarily unavailable",
            )
        else:
            self._connect(
                tag,
                user,
                password,
                method,
                result.host,
                result.port or self.shared.config.backend_port,
                started,
            )

    def _connect(
        self,
        tag: bytes,
        user: str,
        password: bytes,
        method: str,
        host: str,
        port: int,
        started: float,
    ) -> None:
        f = self.shared
        local = self._tcp.getHost()
        client = None
        if f.config.forward_client_address:
            local_ip, local_port, _ = format_peer(local)
            assert self.log is not None
            client = ClientAddress(
                self.peer[0], self.peer[1], local_ip, local_port, f.ids.qualified(self.log.session)
            )
        starttls = None
        if f.config.backend_tls is TLSMode.STARTTLS:
            connector = f.connector

            def starttls_options() -> IOpenSSLClientConnectionCreator:
                options: IOpenSSLClientConnectionCreator = connector.tls_options(host)
                return options

            starttls = starttls_options
        backend = self._backend = BackendLogin(
            f.clock,
            Credentials(user, password),
            master=f.master,
            client=client,
            starttls=starttls,
            timeout=f.config.backend_connect_timeout,
        )
        self._backend_name = f"{host}:{port}" if ":" not in host else f"[{host}]:{port}"
        connecting = self._connecting = f.connector.connect(host, port, backend)
        connecting.addCallbacks(self._connected, self._connect_failed, errbackArgs=(tag, user))
        backend.done.addCallbacks(
            self._backend_ready,
            self._backend_failed,
            callbackArgs=(tag, user, method, backend),
            errbackArgs=(tag, user, started),
        )

    def _connected(self, backend: BackendLogin) -> None:
        self._connecting = None

    def _connect_failed(self, failure: Failure, tag: bytes, user: str) -> None:
        self._connecting = None
        if self.state is not State.LOGGING_IN:
            return
        self._backend = None
        self._unavailable(
            tag,
            user,
            f"back-end {self._backend_name} unreachable: {describe_failure(failure)}",
            b"Back-end server unavailable",
        )

    def _backend_failed(self, failure: Failure, tag: bytes, user: str, started: float) -> None:
        self._backend = None
        if self.state is not State.LOGGING_IN:
            return
        error = failure.value
        if isinstance(error, BackendRefused):
            why = error.response
            self._auth_failed(
                tag, user, f"back-end {self._backend_name} refused the login: {why}", started
            )
        elif isinstance(error, BackendUnavailable):
            why = error.reason
            self._unavailable(
                tag,
                user,
                f"back-end {self._backend_name} unavailable: {why}",
                b"Back-end server unavailable",
            )
        else:
            self._internal_error(failure, tag, user)

    def _internal_error(self, failure: Failure, tag: bytes, user: str) -> None:
        assert self.log is not None
        _log.failure(
            "IMAP:{session}: internal error during the login of {user}",
            failure,
            session=self.log.session,
            user=user,
        )
        if self.state is State.LOGGING_IN:
            self._unavailable(
                tag, user, "internal error (see the traceback above)", b"Internal error"
            )

    def _auth_failed(
        self,
        tag: bytes,
        user: str,
        why: str,
        started: float,
        *,
        code: bytes = b"AUTHENTICATIONFAILED",
        text: bytes = b"Authentication failed.",
    ) -> None:
        """Answer NO after the fixed delay; the reason goes to the log only."""
        f = self.shared
        assert self.log is not None
        self.auth_errors += 1
        self.log.info(
            "login failed: user {user} from {peer}: {why} ({count} of {limit})",
            user=user,
            why=why,
            count=self.auth_errors,
            limit=f.config.max_auth_errors,
        )
        delay = max(0.0, started + f.auth_failure_delay - f.clock.seconds())
        f.clock.callLater(
            delay, self._answer_failure, tag + b" NO [" + code + b"] " + text + b"\r\n"
        )

    def _answer_failure(self, line: bytes) -> None:
        if self.state is not State.LOGGING_IN:
            return
        self._send(line)
        if self.auth_errors >= self.shared.config.max_auth_errors:
            self._bye("Too many authentication failures", "too many failed logins")
            return
        self._back_to_not_authenticated()

    def _unavailable(self, tag: bytes, user: str, why: str, text: bytes) -> None:
        assert self.log is not None
        self.log.warn("login failed: user {user} from {peer}: {why}", user=user, why=why)
        self._send(tag + b" NO [UNAVAILABLE] " + text + b"; try again later.\r\n")
        self._back_to_not_authenticated()

    def _back_to_not_authenticated(self) -> None:
        self.state = State.NOT_AUTHENTICATED
        if self._expired:
            self._preauth_expired()
            return
        if self._paused:
            self._paused = False
            self._tcp.resumeProducing()
        self._process()

    def _backend_ready(
        self, session: BackendSession, tag: bytes, user: str, method: str, backend: BackendLogin
    ) -> None:
        self._backend = None
        if self.state is not State.LOGGING_IN:
            backend.abort()
            return
        assert self.log is not None and self.reader is not None
        self.log.info(
            "login ok: user {user} from {peer} routed to {backend} "
            "({method}; back-end {backend_method})",
            user=user,
            backend=self._backend_name,
            method=method,
            backend_method=session.method,
        )
        self.state = State.RELAYING
        self.user = user
        if self._preauth is not None and self._preauth.active():
            self._preauth.cancel()
        self._preauth = None
        text = session.text or b"Logged in"
        self._send(tag + b" OK [CAPABILITY " + session.capabilities + b"] " + text + b"\r\n")
        pending = self.reader.take_buffer()
        self.reader = None
        pipe = self.pipe = Pipe(self._tcp, backend._tcp)
        backend.start_relay(pipe.to_client, self._backend_closed)
        # from now on client bytes go straight to the back-end: no IMAP code on the hot path
        self.dataReceived = pipe.to_backend  # type: ignore[method-assign]
        if session.leftover:
            pipe.to_client(session.leftover)
        if pending:
            pipe.to_backend(pending)
        if self._paused:
            self._paused = False
            self._tcp.resumeProducing()
        self._start_idle_timer()

    def _backend_closed(self) -> None:
        if self.pipe is not None and self.state is State.RELAYING:
            self._closed_by = "back-end"
            self.pipe.closed_by_backend()

    # ------------------------------------------------------------ relay idle

    def _start_idle_timer(self) -> None:
        timeout = self.shared.config.idle_timeout
        self._idle_since = self.shared.clock.seconds()
        self._idle_seen = 0
        self._idle = self.shared.clock.callLater(self._idle_interval(timeout), self._idle_check)

    @staticmethod
    def _idle_interval(timeout: float) -> float:
        # checking every timeout/8 costs one timer per session, not one reset per packet
        return min(timeout, max(1.0, timeout / 8))

    def _idle_check(self) -> None:
        """Close the relay after C{idle_timeout} seconds without a byte either way."""
        self._idle = None
        pipe = self.pipe
        if pipe is None or self.state is not State.RELAYING:
            return
        clock, timeout = self.shared.clock, self.shared.config.idle_timeout
        now = clock.seconds()
        seen = pipe.bytes_up + pipe.bytes_down
        if seen != self._idle_seen:
            self._idle_seen, self._idle_since = seen, now
        elif now - self._idle_since >= timeout:
            assert self.log is not None
            self.log.info(
                "idle timeout: no traffic for {seconds:g}s, closing user {user}",
                seconds=timeout,
                user=self.user,
            )
            self._closed_by = "idle timeout"
            pipe.close()
            return
        remaining = timeout - (now - self._idle_since)
        self._idle = clock.callLater(
            min(self._idle_interval(timeout), max(remaining, 0.001)), self._idle_check
        )


#: pre-auth commands and their handlers (everything else is BAD)
_HANDLERS: dict[str, Callable[[IMAPProxy, Command], None]] = {
    "CAPABILITY": IMAPProxy._do_capability,
    "NOOP": IMAPProxy._do_noop,
    "LOGOUT": IMAPProxy._do_logout,
    "STARTTLS": IMAPProxy._do_starttls,
    "LOGIN": IMAPProxy._do_login,
    "AUTHENTICATE": IMAPProxy._do_authenticate,
    "ID": IMAPProxy._do_id,
}
