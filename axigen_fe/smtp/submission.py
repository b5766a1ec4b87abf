"""Submission (RFC 6409, 8314): AUTH on the node, then the user's own back-end relays.

Before AUTH the node speaks for itself: EHLO, STARTTLS, AUTH PLAIN / LOGIN (RFC 4954),
offered only where a password may cross (TLS, or a loopback peer when the listener
allows it: L{ListenerContext.plaintext_login_allowed}); MAIL/RCPT/DATA get
C{530 5.7.0}. The map checks the credentials (C{lookup(user, password)}); an unknown
user and a wrong password get the same C{535 5.7.8}, a directory outage C{454 4.7.0}.

After AUTH the node opens the user's back-end submission port (host from the map,
port from the map or C{backend_port}), says EHLO, STARTTLS per C{backend_tls}, then
C{XCLIENT LOGIN=<user> ADDR= PORT= NAME= HELO=} (Postfix: the session counts as
SASL-authenticated as that user, seen from the client's address) and EHLO again.
Only then does the client get C{235 2.7.0}, and from there on the session is relayed
(L{Pipe}) through a L{CommandGuard}: message content and ordinary commands pass as they
are, but C{XCLIENT}, C{XFORWARD} and C{STARTTLS} never reach the back-end, which would
otherwise let the user become someone else (Postfix honours XCLIENT from the node at any
time). The client has no reason to EHLO again (RFC 4954 4); if it does, the back-end
answers.
"""

from __future__ import annotations

import base64
import binascii
import enum

from twisted.internet.defer import Deferred

from axigen_fe.net.relay import Pipe
from axigen_fe.smtp import replies
from axigen_fe.smtp.backend import BackendError, BackendSession, ClientFacts
from axigen_fe.smtp.relayguard import CommandGuard
from axigen_fe.smtp.replies import Reply
from axigen_fe.smtp.session import SessionEnv, SMTPSession
from axigen_fe.usermap import results
from axigen_fe.usermap.interface import LookupResult, Outcome

#: the hold while the back-end's answer to DATA is awaited (see L{CommandGuard})
_DATA_ANSWER = "answer-to-data"
_USERNAME_PROMPT = Reply(334, (base64.b64encode(b"Username:"),))
_PASSWORD_PROMPT = Reply(334, (base64.b64encode(b"Password:"),))
_EMPTY_CHALLENGE = Reply(334, (b"",))
#: longer user names are not addresses; refuse them like wrong credentials
MAX_USER_LENGTH = 320


class State(enum.Enum):
    PREAUTH = "preauth"
    CHECKING = "checking"
    RELAYING = "relaying"


class _Refused(Exception):
    """Credentials that cannot be right (bad base64 aside): answered as 535."""


def _decode(line: bytes) -> bytes:
    """An AUTH response line; C{=} is the empty response (RFC 4954 4)."""
    if line == b"=":
        return b""
    return base64.b64decode(line, validate=True)


class SubmissionSession(SMTPSession):
    """AUTH, then relay to the user's back-end."""

    def __init__(self, env: SessionEnv) -> None:
        super().__init__(env)
        self.state = State.PREAUTH
        self.auth_errors = 0
        self.user: str | None = None
        self.backend: BackendSession | None = None
        self.pipe: Pipe | None = None
        self.guard = CommandGuard()
        self._login_user: bytes | None = None
        self._moved = 0  # pipe.bytes_up + bytes_down when the idle timer last fired

    def timeout(self) -> float:
        return self.cfg.idle_timeout if self.state is State.RELAYING else self.cfg.preauth_timeout

    def auth_offered(self) -> bool:
        assert self.transport is not None
        return self.env.listener.plaintext_login_allowed(self.tls_active, self.transport.getPeer())

    def extensions(self) -> list[str]:
        ext = ["PIPELINING", f"SIZE {self.cfg.max_message_size}", "8BITMIME", "ENHANCEDSTATUSCODES"]
        if self.starttls_offered():
            ext.append("STARTTLS")
        if self.auth_offered():
            ext.append("AUTH PLAIN LOGIN")
        return ext

    def summary(self) -> str:
        if self.pipe is not None:
            up, down = self.pipe.bytes_up, self.pipe.bytes_down
            return f"user {self.user}, relayed {up} octets up, {down} down"
        return f"user {self.user or '-'} (not relayed)"

    def on_close(self) -> None:
        if self.pipe is not None:
            self.pipe.closed_by_client()
        elif self.backend is not None:
            self.backend.quit()
            self.backend = None

    def on_timeout(self) -> None:
        if self.pipe is not None:  # mid-relay: no reply of ours may enter the back-end's stream
            moved = self.pipe.bytes_up + self.pipe.bytes_down
            if moved != self._moved:  # relayed by the kernel (splice): dataReceived never ran
                self._moved = moved
                self._timer = self.clock.callLater(self.timeout(), self._timed_out)
                return
            self.log.info("idle timeout after {seconds:g}s", seconds=self.timeout())
            self.close()
            return
        super().on_timeout()

    # ------------------------------------------------------------ not before AUTH

    def smtp_MAIL(self, arg: bytes) -> None:
        self.error(replies.AUTH_REQUIRED)

    smtp_RCPT = smtp_MAIL
    smtp_DATA = smtp_MAIL

    def smtp_RSET(self, arg: bytes) -> None:
        self.send(replies.RESET_OK)

    # ------------------------------------------------------------ AUTH

    def smtp_AUTH(self, arg: bytes) -> None:
        if self.helo is None or not self.esmtp:
            self.error(replies.reply(503, "5.5.1", "Error: send EHLO first"))
            return
        if not self.auth_offered():
            self.log.info(
                "AUTH refused: no TLS on a connection from {client}", client=self.peer_text
            )
            self.error(replies.AUTH_NEEDS_TLS)
            return
        mechanism, _, initial = arg.partition(b" ")
        mechanism = mechanism.upper()
        initial = initial.strip(b" ")
        if mechanism == b"PLAIN":
            if initial:
                self._plain(initial)
            else:
                self.send(_EMPTY_CHALLENGE)
                self._line_handler = self._plain
        elif mechanism == b"LOGIN":
            if initial:
                self._login_name(initial)
            else:
                self.send(_USERNAME_PROMPT)
                self._line_handler = self._login_name
        else:
            self.error(replies.AUTH_MECHANISM)

    def _cancelled(self, line: bytes) -> bool:
        if line.strip() == b"*":
            self.error(replies.AUTH_CANCELLED)
            return True
        return False

    def _plain(self, line: bytes) -> None:
        if self._cancelled(line):
            return
        try:
            fields = _decode(line.strip()).split(b"\0")
        except (binascii.Error, ValueError):
            self.error(replies.AUTH_BAD_BASE64)
            return
        if len(fields) != 3:
            self.error(replies.AUTH_BAD_BASE64)
            return
        authzid, authcid, password = fields
        if authzid and authzid != authcid:
            self._check(authcid, password, refuse="authorization identity differs from the login")
            return
        self._check(authcid, password)

    def _login_name(self, line: bytes) -> None:
        if self._cancelled(line):
            return
        try:
            self._login_user = _decode(line.strip())
        except (binascii.Error, ValueError):
            self.error(replies.AUTH_BAD_BASE64)
            return
        self.send(_PASSWORD_PROMPT)
        self._line_handler = self._login_password

    def _login_password(self, line: bytes) -> None:
        if self._cancelled(line):
            return
        try:
            password = _decode(line.strip())
        except (binascii.Error, ValueError):
            self.error(replies.AUTH_BAD_BASE64)
            return
        user, self._login_user = self._login_user or b"", None
        self._check(user, password)

    def _check(self, raw_user: bytes, password: bytes, refuse: str | None = None) -> None:
        """Ask the map; on success open the back-end, then 235 and relay."""
        try:
            user = raw_user.decode("utf-8")
        except UnicodeDecodeError:
            user, refuse = raw_user.decode("utf-8", "replace"), refuse or "user name is not UTF-8"
        if not user or len(user) > MAX_USER_LENGTH or "\0" in user:
            refuse = refuse or "implausible user name"
        if refuse is not None:
            self._auth_failed(user, refuse)
            return
        self.state = State.CHECKING
        work: Deferred[tuple[LookupResult, BackendSession | BackendError | None]] = (
            Deferred.fromCoroutine(self._authenticate(user, password))
        )
        self.run("auth", work, lambda result: self._auth_done(user, *result))

    async def _authenticate(
        self, user: str, password: bytes
    ) -> tuple[LookupResult, BackendSession | BackendError | None]:
        # the back-end takes XCLIENT LOGIN= on trust: the map's check is the only one
        result = results.unless_password_checked(await self.env.usermap.lookup(user, password))
        if result.outcome is not Outcome.ROUTED or result.host is None:
            return result, None
        port = result.port or self.cfg.backend_port
        facts = ClientFacts(self.peer_ip, self.peer_port, self.helo or "", self.esmtp, login=user)
        try:
            backend = await self.env.open_backend(
                result.host, port, facts, self.cfg.forward_client_address
            )
        except BackendError as e:
            return result, e
        if self.closed:  # the client left while the back-end was being opened
            backend.quit()
            return result, BackendError("client left")
        return result, backend

    def _auth_done(
        self, user: str, result: LookupResult, backend: BackendSession | BackendError | None
    ) -> None:
        if result.outcome in (Outcome.UNKNOWN_USER, Outcome.BAD_PASSWORD):
            self.state = State.PREAUTH
            self._auth_failed(user, f"{result.outcome.value}: {result.detail}")
            return
        if result.outcome is not Outcome.ROUTED or backend is None:
            self.state = State.PREAUTH
            self.log.warn(
                "AUTH for {user} deferred: directory {why}",
                user=user,
                why=result.detail or result.outcome.value,
            )
            self.send(replies.AUTH_TEMPFAIL)
            return
        if isinstance(backend, BackendError):
            self.state = State.PREAUTH
            self.log.warn(
                "AUTH for {user} deferred: back-end {host}:{port} unusable: {why}",
                user=user,
                host=result.host,
                port=result.port or self.cfg.backend_port,
                why=str(backend),
            )
            self.send(replies.AUTH_TEMPFAIL)
            return
        self.user = user
        self.backend = backend
        self.log.info(
            "AUTH ok for {user}: back-end session {backend} opened (client facts via {forwarded})",
            user=user,
            backend=backend.label,
            forwarded=backend.forwarded,
        )
        self._start_relay(backend)

    def _auth_failed(self, user: str, why: str) -> None:
        self.auth_errors += 1
        self.log.info("AUTH failed for {user}: {why}", user=user, why=why)
        self.send(replies.AUTH_FAILED)
        if self.auth_errors >= self.cfg.max_auth_errors:
            self.log.info("too many failed AUTH ({count}), closing", count=self.auth_errors)
            self.send(replies.TOO_MANY_AUTH_ERRORS)
            self.close()

    # ------------------------------------------------------------ relay

    def _start_relay(self, backend: BackendSession) -> None:
        assert self.transport is not None and backend.proto.transport is not None
        self.send(replies.AUTH_OK)
        self.state = State.RELAYING
        # every byte passes the guard: no splice for submission
        self.pipe = Pipe(self.transport, backend.proto.transport, splice=False)
        backend.proto.start_relay(self.pipe, self._from_backend)
        self.setRawMode()  # type: ignore[no-untyped-call]  # what the client pipelined after AUTH is read (raw) on release

    def raw_received(self, data: bytes) -> None:
        if self.pipe is None:
            return
        forward = self.guard.from_client(data)
        if forward.refused:
            self.log.warn(
                "refused {what} from user {user} after AUTH (it could change who the "
                "session is); the back-end answers it with an error",
                what=", ".join(forward.refused),
                user=self.user,
            )
        if forward.data:
            self.pipe.to_backend(forward.data)
        if forward.held:  # after DATA: nothing more until the back-end has answered it
            self._buffer = forward.held + self._buffer
            self.hold(_DATA_ANSWER)

    def _from_backend(self, data: bytes) -> None:
        assert self.pipe is not None
        self.pipe.to_client(data)
        if self.guard.from_backend(data):
            self.release(_DATA_ANSWER)
