"""The back-end leg: log in to the user's IMAP server on the client's behalf.

One L{BackendLogin} per routed login. It reads the greeting, upgrades to TLS when the
service says C{backend_tls = "starttls"} (verified, and nothing is sent until the
handshake completed), tells the back-end who the real client is (IMAP C{ID} with
C{x-originating-ip}, honoured by Dovecot for trusted proxies), replays the client's
credentials (or logs in as C{user*master}), and collects the capabilities the back-end
announces after login, so the client sees exactly what a direct connection would show.

Then the same protocol object becomes the back-end end of the relay (see
L{BackendLogin.start_relay}); nothing IMAP-aware runs on the relay path.

Outcomes, through L{BackendLogin.done}:
  - L{BackendSession}: logged in;
  - L{BackendRefused}: the back-end said NO/BAD to the replayed login (the client gets
    AUTHENTICATIONFAILED, like a wrong password on the node);
  - L{BackendUnavailable}: anything else (TLS failure, BYE greeting, no answer, lost
    connection) - the client gets UNAVAILABLE and may retry.
"""

from __future__ import annotations

import base64
import enum
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from OpenSSL import SSL
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IDelayedCall,
    IHandshakeListener,
    IOpenSSLClientConnectionCreator,
    IReactorTime,
)
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from zope.interface import implementer

from axigen_fe.net.fastwrite import write_now


@dataclass(frozen=True)
class Credentials:
    """What the client logged in with; C{user} exactly as typed (the back-end's business)."""

    user: str
    password: bytes = field(repr=False)


@dataclass(frozen=True)
class MasterUser:
    """Log in as C{user*master} with the master password instead of the user's password."""

    name: str
    password: bytes = field(repr=False)
    separator: str = "*"


@dataclass(frozen=True)
class ClientAddress:
    """Who the client is, for the back-end's logs and brute-force defence (IMAP ID)."""

    ip: str
    port: int
    local_ip: str
    local_port: int
    session: str


@dataclass(frozen=True)
class BackendSession:
    """A logged-in back-end session, ready to relay.

    @ivar capabilities: the back-end's post-login capability list (without C{CAPABILITY}).
    @ivar text: the human text of its tagged OK (C{Logged in}).
    @ivar method: how we logged in, for the log (C{LOGIN}, C{AUTHENTICATE PLAIN}).
    @ivar leftover: bytes the back-end sent after its OK, to pass on to the client.
    """

    capabilities: bytes
    text: bytes
    method: str
    leftover: bytes


class BackendUnavailable(Exception):
    """The back-end could not be used (down, TLS failure, BYE, silent); C{reason} says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class BackendRefused(Exception):
    """The back-end answered NO/BAD to the replayed login; C{response} is its text."""

    def __init__(self, response: str) -> None:
        super().__init__(response)
        self.response = response


class _State(enum.Enum):
    GREETING = "waiting for the greeting"
    STARTTLS = "waiting for the STARTTLS answer"
    HANDSHAKE = "in the TLS handshake"
    LOGIN = "waiting for the login answer"
    CAPABILITY = "waiting for the CAPABILITY answer"
    RELAY = "relaying"
    FAILED = "failed"


_CODE = re.compile(rb"^\[([^\]]*)\]\s?")
_LITERAL_AT_END = re.compile(rb"\{([0-9]{1,10})\+?\}\Z")
_MAX_RESPONSE = 65536
_NOT_THE_USERS_FAULT = frozenset({b"UNAVAILABLE", b"SERVERBUG", b"LIMIT", b"INUSE"})
_NOT_QUOTABLE = re.compile(rb"[^\x20-\x7e]")
_NOT_ID_SAFE = re.compile(rb"[^\x20-\x7e]|\\")

_TAG_ID = b"X1"
_TAG_STARTTLS = b"X2"
_TAG_LOGIN = b"X3"
_TAG_CAPABILITY = b"X4"


def quote(value: bytes) -> bytes | None:
    """An IMAP quoted string for printable ASCII, or None when a literal is needed."""
    if _NOT_QUOTABLE.search(value):
        return None
    return b'"' + value.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def caps_of(text: bytes) -> set[bytes]:
    return {c.upper() for c in text.split()}


@dataclass(frozen=True)
class LoginPlan:
    """The wire form of a login: parts to send, each but the last waiting for C{+}."""

    method: str
    parts: tuple[bytes, ...]


def plan_login(
    credentials: Credentials, master: MasterUser | None, caps: set[bytes] | None
) -> LoginPlan:
    """Choose how to present the credentials to a back-end with capabilities C{caps}.

    LOGIN with quoted strings when both are printable ASCII (cheapest, universal);
    AUTHENTICATE PLAIN otherwise (UTF-8 passwords: PLAIN carries any bytes), with the
    response inline when the back-end has SASL-IR; LOGIN with literals only when PLAIN
    is not offered. C{caps} is None when unknown (after STARTTLS): assume no extensions.
    Master-user mode logs in as C{user*master}, or with PLAIN's authorization identity.
    """
    known = caps if caps is not None else set()
    user = credentials.user.encode("utf-8")
    password = credentials.password
    authzid = b""
    if master is not None:
        master_name = master.name.encode("utf-8")
        if quote(user) is not None and quote(master_name) is not None:
            user = user + master.separator.encode("ascii") + master_name
        else:
            authzid, user = user, master_name
        password = master.password
    plain_ok = caps is None or b"AUTH=PLAIN" in known
    login_ok = b"LOGINDISABLED" not in known
    qu, qp = quote(user), quote(password)
    if login_ok and not authzid and qu is not None and qp is not None:
        return LoginPlan("LOGIN", (_TAG_LOGIN + b" LOGIN " + qu + b" " + qp + b"\r\n",))
    if authzid or plain_ok or not login_ok:
        response = base64.b64encode(authzid + b"\0" + user + b"\0" + password)
        if b"SASL-IR" in known:
            return LoginPlan(
                "AUTHENTICATE PLAIN", (_TAG_LOGIN + b" AUTHENTICATE PLAIN " + response + b"\r\n",)
            )
        return LoginPlan(
            "AUTHENTICATE PLAIN", (_TAG_LOGIN + b" AUTHENTICATE PLAIN\r\n", response + b"\r\n")
        )
    # LOGIN with literals: synchronizing (wait for "+" after each) unless LITERAL+
    plus = b"+" if b"LITERAL+" in known else b""
    parts: list[bytes] = []
    current = _TAG_LOGIN + b" LOGIN"
    for value, quoted in ((user, qu), (password, qp)):
        current += b" "
        if quoted is not None:
            current += quoted
            continue
        current += b"{%d%s}\r\n" % (len(value), plus)
        if not plus:
            parts.append(current)
            current = b""
        current += value
    parts.append(current + b"\r\n")
    return LoginPlan("LOGIN", tuple(parts))


def id_command(client: ClientAddress) -> bytes:
    """C{ID} with the client's address: Dovecot logs it as C{rip=} for trusted proxies.

    Addresses, ports and our session ids never need quoting; anything that could break
    the quoted strings (quotes, backslashes, 8-bit, controls) is dropped all the same.
    """
    ip, local_ip, session = (
        v.replace('"', "") for v in (client.ip, client.local_ip, client.session)
    )
    text = (
        f'"x-originating-ip" "{ip}" "x-originating-port" "{client.port:d}" '
        f'"x-connected-ip" "{local_ip}" "x-connected-port" "{client.local_port:d}" '
        f'"x-session-ext-id" "{session}"'
    ).encode("ascii", "replace")
    if _NOT_ID_SAFE.search(text):
        text = _NOT_ID_SAFE.sub(b"", text)
    return _TAG_ID + b" ID (" + text + b")\r\n"


def describe_failure(reason: Failure) -> str:
    """A short operator-facing reason for a lost back-end connection."""
    if isinstance(reason.value, SSL.Error):
        return f"TLS failed: {reason.getErrorMessage()}"
    value = reason.value
    if type(value).__module__.startswith("service_identity"):
        return f"TLS certificate does not match the host: {value}"
    return reason.getErrorMessage() or type(value).__name__


@implementer(IHandshakeListener)
class BackendLogin(Protocol):
    """Client of one back-end, first for the login, then as one end of the relay.

    @param starttls: gives the verifying TLS options when C{backend_tls = "starttls"},
        else None.
    @param timeout: seconds the whole back-end login may take (greeting to capabilities).
    """

    def __init__(
        self,
        clock: IReactorTime,
        credentials: Credentials,
        *,
        master: MasterUser | None = None,
        client: ClientAddress | None = None,
        starttls: Callable[[], IOpenSSLClientConnectionCreator] | None = None,
        timeout: float = 10.0,
    ) -> None:
        self._clock = clock
        self._credentials: Credentials | None = credentials
        self._master = master
        self._client = client
        self._starttls = starttls
        self._timeout = timeout
        self._timer: IDelayedCall | None = None
        self._buffer = bytearray()
        self._state = _State.GREETING
        self._caps: set[bytes] | None = None
        self._post_caps: bytes | None = None
        self._login_text = b""
        self._plan: LoginPlan | None = None
        self._next_part = 1
        self._method = "LOGIN"
        self.done: Deferred[BackendSession] = Deferred()
        self.on_lost: Callable[[], None] | None = None

    @property
    def _tcp(self) -> Any:
        """The transport with everything it offers (ITLSTransport, abortConnection...)."""
        return self.transport

    # ------------------------------------------------------------- lifecycle

    def connectionMade(self) -> None:
        # one deadline for the whole login (greeting, TLS, ID, login, capabilities):
        # cheaper than a timer reset per response, and what the client waits for anyway
        self._timer = self._clock.callLater(self._timeout, self._timed_out)

    def _disarm(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _timed_out(self) -> None:
        self._timer = None
        self._fail(
            BackendUnavailable(
                f"login not done within {self._timeout:g}s, stuck {self._state.value}"
            )
        )

    def abort(self) -> None:
        """The client went away: drop the back-end connection without waiting."""
        self._disarm()
        if self._state is not _State.RELAY:
            self._state = _State.FAILED
        if self.transport is not None:
            self._tcp.abortConnection()

    def _fail(self, error: Exception) -> None:
        if self._state in (_State.FAILED, _State.RELAY):
            return
        self._state = _State.FAILED
        self._credentials = None
        self._disarm()
        if self.transport is not None:
            self._tcp.abortConnection()
        self.done.errback(error)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._disarm()
        if self._state is _State.RELAY:
            if self.on_lost is not None:
                self.on_lost()
            return
        if self._state is not _State.FAILED:
            self._fail(
                BackendUnavailable(
                    f"connection lost while {self._state.value}: {describe_failure(reason)}"
                )
            )

    # ----------------------------------------------------------------- input

    def dataReceived(self, data: bytes) -> None:
        self._buffer += data
        while self._state not in (_State.RELAY, _State.FAILED, _State.HANDSHAKE):
            line = self._response()
            if line is None:
                if len(self._buffer) > _MAX_RESPONSE:
                    self._fail(BackendUnavailable("response line too long"))
                return
            self._handle(line)

    def _response(self) -> bytes | None:
        """One logical response line; literal contents are folded in (we only skim them)."""
        pos = 0
        while True:
            end = self._buffer.find(b"\n", pos)
            if end < 0:
                return None
            m = _LITERAL_AT_END.search(
                self._buffer, pos, end - 1 if self._buffer[end - 1 : end] == b"\r" else end
            )
            if m is None:
                line = bytes(self._buffer[:end]).rstrip(b"\r")
                del self._buffer[: end + 1]
                return line
            pos = end + 1 + int(m.group(1))
            if pos > len(self._buffer):
                return None

    def _handle(self, line: bytes) -> None:
        tag, _, rest = line.partition(b" ")
        status, _, text = rest.partition(b" ")
        status = status.upper()
        state = self._state
        if state is _State.GREETING:
            self._greeting(tag, status, text)
        elif tag == b"+":
            self._continuation()
        elif tag == b"*":
            if status == b"CAPABILITY":
                self._post_caps = text
            elif status == b"BYE":
                self._fail(
                    BackendUnavailable(f"back-end said BYE: {text.decode('utf-8', 'replace')}")
                )
        elif state is _State.STARTTLS and tag == _TAG_STARTTLS:
            self._starttls_answer(status, text)
        elif state is _State.LOGIN and tag == _TAG_LOGIN:
            self._login_answer(status, text)
        elif state is _State.CAPABILITY and tag == _TAG_CAPABILITY:
            if status == b"OK" and self._post_caps is not None:
                self._finish()
            else:
                self._fail(BackendUnavailable("CAPABILITY after login failed"))
        # the ID answer (tagged X1) and other untagged data need nothing from us

    def _greeting(self, tag: bytes, status: bytes, text: bytes) -> None:
        if tag != b"*" or status != b"OK":
            shown = (status + b" " + text).decode("utf-8", "replace")
            self._fail(BackendUnavailable(f"unexpected greeting: {shown}"))
            return
        m = _CODE.match(text)
        if m is not None and m.group(1).upper().startswith(b"CAPABILITY "):
            self._caps = caps_of(m.group(1)[11:])
        if self._starttls is not None:
            if self._caps is not None and b"STARTTLS" not in self._caps:
                self._fail(
                    BackendUnavailable(
                        'back-end does not offer STARTTLS (backend_tls = "starttls")'
                    )
                )
                return
            self._state = _State.STARTTLS
            write_now(self.transport, _TAG_STARTTLS + b" STARTTLS\r\n")
            return
        self._send_login()

    def _starttls_answer(self, status: bytes, text: bytes) -> None:
        if status != b"OK":
            self._fail(
                BackendUnavailable(f"back-end refused STARTTLS: {text.decode('utf-8', 'replace')}")
            )
            return
        assert self._starttls is not None
        self._state = _State.HANDSHAKE
        self._caps = None  # RFC 9051 6.2.1: forget what was announced in the clear
        self._buffer.clear()  # nothing sent before the handshake may be trusted
        self._tcp.startTLS(self._starttls())

    def handshakeCompleted(self) -> None:
        """TLS is up and the certificate verified: only now may credentials go out."""
        if self._state is not _State.HANDSHAKE or self._tcp.disconnecting:
            return
        self._send_login()
        if self._buffer:
            self.dataReceived(b"")

    def _send_login(self) -> None:
        assert self._credentials is not None
        self._state = _State.LOGIN
        plan = self._plan = plan_login(self._credentials, self._master, self._caps)
        self._credentials = None
        out = id_command(self._client) if self._client is not None else b""
        write_now(self.transport, out + plan.parts[0])

    def _continuation(self) -> None:
        plan = self._plan
        if self._state is not _State.LOGIN or plan is None or self._next_part >= len(plan.parts):
            # a challenge we have no answer for: cancel, the tagged NO follows
            write_now(self.transport, b"*\r\n")
            return
        write_now(self.transport, plan.parts[self._next_part])
        self._next_part += 1

    def _login_answer(self, status: bytes, text: bytes) -> None:
        if self._plan is not None:
            self._method = self._plan.method
        self._plan = None
        m = _CODE.match(text)
        if status != b"OK":
            shown = (status + b" " + text).decode("utf-8", "replace")
            code = m.group(1).split()[0].upper() if m is not None and m.group(1) else b""
            # RFC 5530: the back-end's own trouble is not the user's wrong password
            if code in _NOT_THE_USERS_FAULT:
                self._fail(BackendUnavailable(f"back-end could not log the user in: {shown}"))
            else:
                self._fail(BackendRefused(shown))
            return
        if m is not None and m.group(1).upper().startswith(b"CAPABILITY "):
            self._post_caps = m.group(1)[11:]
            text = text[m.end() :]
        self._login_text = text
        if self._post_caps is None:
            self._state = _State.CAPABILITY
            write_now(self.transport, _TAG_CAPABILITY + b" CAPABILITY\r\n")
            return
        self._finish()

    def _finish(self) -> None:
        assert self._post_caps is not None
        self._disarm()
        self._state = _State.RELAY
        leftover = bytes(self._buffer)
        self._buffer = bytearray()
        session = BackendSession(self._post_caps, self._login_text, self._method, leftover)
        self.done.callback(session)

    # ----------------------------------------------------------------- relay

    def start_relay(self, to_client: Callable[[bytes], None], on_lost: Callable[[], None]) -> None:
        """From now on every byte from the back-end goes to C{to_client} untouched."""
        self.on_lost = on_lost
        # an instance attribute beats the class method: no IMAP code left on the hot path
        self.dataReceived = to_client  # type: ignore[method-assign,assignment]
