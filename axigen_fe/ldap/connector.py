"""One LDAP directory as the user maps see it: search, and check a user's password by bind.

L{LDAPConnector} keeps a small pool of connections bound as the service account and
spreads searches over them (LDAP multiplexes: one connection carries several
operations at once). It tries the configured URIs in order, skips a URI that just
failed for a few seconds (so a dead primary does not cost every lookup a timeout),
gives every step (connect, StartTLS, TLS handshake, bind, search) its own timeout,
verifies the server's certificate whenever TLS is used, and reports every outage as
L{DirectoryUnavailable} - never as an empty result or a refused password, because a
map must turn an outage into a temporary failure, not into "unknown user" or "wrong
password".

A user's password is checked (L{LDAPConnector.check_bind}) on a fresh connection of
its own: binding a pooled connection as the user would change the identity its
searches run as.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Protocol, TypeVar, cast

from OpenSSL import SSL
from service_identity import VerificationError
from twisted.internet import error
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.defer import CancelledError, Deferred, DeferredList, maybeDeferred, succeed
from twisted.internet.endpoints import (
    HostnameEndpoint,
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
    wrapClientTLS,
)
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IHandshakeListener,
    IOpenSSLClientConnectionCreator,
    IReactorTCP,
    IReactorTime,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import Factory, connectionDone
from twisted.internet.protocol import Protocol as StreamProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from axigen_fe.config.model import LDAPConnectorConfig
from axigen_fe.ldap._ldaptor import (
    LDAPClient,
    LDAPClientConnectionLostException,
    pureldap,
    result_code_name,
)
from axigen_fe.ldap.escape import filter_text
from axigen_fe.ldap.tls import client_options, load_trust_root
from axigen_fe.ldap.uri import LDAPURI, parse_uri

__all__ = ["DirectoryClient", "DirectoryUnavailable", "LDAPConnector", "SearchEntry"]

T = TypeVar("T")

#: one search result: the entry's DN and its attributes (names lower-cased, as LDAP
#: attribute names are case-insensitive; values as the server sent them)
SearchEntry = tuple[str, dict[str, list[bytes]]]

# RFC 4511 result codes the connector treats specially
_SUCCESS = 0
_SIZE_LIMIT_EXCEEDED = 4
_NO_SUCH_OBJECT = 32
_INVALID_CREDENTIALS = 49
_BUSY = 51
_UNAVAILABLE = 52


class DirectoryClient(Protocol):
    """What the user maps need from a directory: L{LDAPConnector}, or a test twin."""

    def search(self, filter_obj: Any, attributes: list[str]) -> Deferred[list[SearchEntry]]: ...

    def check_bind(self, dn: str, password: bytes) -> Deferred[bool]: ...


class DirectoryUnavailable(Exception):
    """The directory cannot answer right now; a lookup must end in a temporary failure.

    Raised for: no URI reachable, a timeout, a TLS failure, the service account's bind
    refused, a server busy/unavailable/unwilling, or any other server error.

    @ivar reason: what happened and where, for logs (never a password).
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _StepFailed(Exception):
    """One step towards or on one server failed; the connector decides what follows.

    @ivar timed_out: no answer within the timeout (the connection is then unusable).
    @ivar dropped: the connection was lost under the operation (worth one retry).
    """

    def __init__(self, why: str, *, timed_out: bool = False, dropped: bool = False) -> None:
        super().__init__(why)
        self.why = why
        self.timed_out = timed_out
        self.dropped = dropped


def _tls_reason(e: SSL.Error) -> str:
    """C{[('SSL routines', '', 'certificate verify failed')]} -> the last reason text."""
    reasons = [
        str(item[2])
        for arg in e.args
        if isinstance(arg, list)
        for item in arg
        if isinstance(item, tuple) and len(item) == 3 and item[2]
    ]
    return reasons[-1] if reasons else str(e) or "TLS error"


def _describe(e: BaseException) -> tuple[str, bool]:
    """A short operator-readable reason, and whether it means "the connection dropped"."""
    if isinstance(e, error.ConnectionRefusedError):
        return "connection refused", False
    if isinstance(e, error.DNSLookupError):
        return "host name not found", False
    if isinstance(e, VerificationError):
        return "the certificate is not valid for this host name/address", False
    if isinstance(e, SSL.Error):
        return _tls_reason(e), False
    if isinstance(e, error.ConnectingCancelledError):
        return "connection attempt cancelled", False
    if isinstance(
        e,
        (
            error.ConnectionDone,
            error.ConnectionLost,
            error.ConnectionAborted,
            LDAPClientConnectionLostException,
        ),
    ):
        return "the server closed the connection", True
    if isinstance(e, error.ConnectError):
        return f"cannot connect: {e.osError or e}", False
    text = str(e).strip()
    return (f"{type(e).__name__}: {text}" if text else type(e).__name__), False


@implementer(IHandshakeListener)
class _LDAPConnection(LDAPClient):  # type: ignore[misc]
    """ldaptor's LDAPClient on one connection, plus what the pool needs to know:
    the URI, whether it is ready for searches, how busy it is, when TLS is up and
    when the connection is gone."""

    def __init__(self, uri: LDAPURI, on_lost: Callable[[_LDAPConnection, Failure], None]) -> None:
        super().__init__()
        self.uri = uri
        self.usable = False
        """Connected, secured and bound: the pool may hand it out."""
        self.outstanding = 0
        """Operations in flight (the pool picks the least busy connection)."""
        self.closing = False
        """We close it on purpose: its loss is not news for the log."""
        self.is_lost = False
        self._on_lost = on_lost
        self._handshake: Deferred[None] | None = None
        self._lost_waiters: list[Deferred[None]] = []
        self._close_timer: IDelayedCall | None = None

    # -- connection events ---------------------------------------------------------------------

    def expect_handshake(self) -> Deferred[None]:
        """A Deferred that fires when the TLS handshake completes (errbacks if it fails)."""
        self._handshake = Deferred()
        return self._handshake

    def handshakeCompleted(self) -> None:
        waiter, self._handshake = self._handshake, None
        if waiter is not None:
            waiter.callback(None)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.usable = False
        self.is_lost = True
        if self._close_timer is not None and self._close_timer.active():
            self._close_timer.cancel()
        self._on_lost(self, reason)  # leave the pool before the failed operations retry
        waiter, self._handshake = self._handshake, None
        super().connectionLost(reason)  # errbacks the operations still on the wire
        if waiter is not None:
            waiter.errback(reason)
        waiters, self._lost_waiters = self._lost_waiters, []
        for w in waiters:
            w.callback(None)

    def unsolicitedNotification(self, msg: Any) -> None:
        """RFC 4511 4.4.1 Notice of Disconnection: the server is about to close; stop
        handing this connection out now rather than when the next search fails."""
        self.usable = False
        self.transport.loseConnection()

    def when_lost(self) -> Deferred[None]:
        if self.is_lost:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._lost_waiters.append(d)
        return d

    # -- operations ----------------------------------------------------------------------------

    def request(self, op: Any) -> Deferred[Any]:
        """Send C{op}; a Deferred of its response (failing, never raising, if closed)."""
        return maybeDeferred(self.send, op)

    def search(self, request: Any) -> tuple[Deferred[Any], list[SearchEntry]]:
        """Send a search; the Deferred fires with the final C{LDAPSearchResultDone},
        the list fills with the entries as they arrive."""
        entries: list[SearchEntry] = []
        done: Deferred[Any] = Deferred()

        def on_response(msg: Any) -> bool:
            if isinstance(msg, pureldap.LDAPSearchResultEntry):
                entries.append(_entry(msg))
                return False
            if isinstance(msg, pureldap.LDAPSearchResultDone):
                if not done.called:
                    done.callback(msg)
                return True
            return False  # search references: referrals are never chased

        def on_wire_error(reason: Failure) -> None:
            if not done.called:
                done.errback(reason)

        maybeDeferred(self.send_multiResponse, request, on_response).addErrback(on_wire_error)
        return done, entries

    def close(self, clock: IReactorTime, grace: float) -> None:
        """Unbind and close; abort if the peer has not let go after C{grace} seconds."""
        self.closing = True
        self.usable = False
        if self.is_lost:
            return
        if self.connected:
            try:
                self.send_noResponse(pureldap.LDAPUnbindRequest())
            except Exception:
                pass  # closing anyway
        self.transport.loseConnection()
        if self._close_timer is None:
            self._close_timer = clock.callLater(grace, self.abort)

    def abort(self) -> None:
        self.closing = True
        self.usable = False
        if not self.is_lost:
            self.transport.abortConnection()


def _entry(msg: Any) -> SearchEntry:
    """ldaptor's LDAPSearchResultEntry -> (DN, {lower-case name: [values]}).

    The DN is decoded with C{surrogateescape} so that a bind as that DN sends back
    exactly the bytes the server sent, even if they are not valid UTF-8.
    """

    def text(value: Any) -> str:
        return value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else str(value)

    attributes: dict[str, list[bytes]] = {}
    for name, values in msg.attributes:
        key = text(name).lower()
        attributes.setdefault(key, []).extend(
            v if isinstance(v, bytes) else str(v).encode("utf-8") for v in values
        )
    return text(msg.objectName), attributes


class _OneShotFactory(Factory):
    """Hands the endpoint the one protocol instance we made (quietly: no "Starting
    factory" line per LDAP connection)."""

    noisy = False

    def __init__(self, protocol: StreamProtocol) -> None:
        self._protocol = protocol

    def buildProtocol(self, addr: IAddress | None) -> StreamProtocol:
        return self._protocol


class LDAPConnector:
    """Searches one directory (pooled, failover, timeouts, verified TLS) and checks
    users' passwords by bind.

    @param reactor: provides C{IReactorTCP}, C{IReactorTime} and, for C{ldaps://} /
        StartTLS, C{IReactorSSL}-capable TCP transports (any real reactor does); host
        names in URIs also need C{IReactorPluggableNameResolver}.
    @param config: the connector's settings.
    @param backoff: seconds a URI that just failed is tried only after the others.
    @raise ValueError: a URI, the CA file or the bind settings are unusable (the
        message names the connector and the fix).
    """

    log = Logger()

    OUTAGE_LOG_INTERVAL = 60.0
    """Seconds between two "no directory server reachable" errors in the log."""

    def __init__(
        self, reactor: IReactorTCP, config: LDAPConnectorConfig, *, backoff: float = 5.0
    ) -> None:
        self._reactor = reactor
        self._clock = cast(IReactorTime, reactor)
        self._config = config
        self._backoff = backoff
        self._pool_size = max(1, config.pool_size)
        self.name = config.name
        if not config.uris:
            raise ValueError(f"LDAP connector {config.name!r}: 'uris' is empty; list 1 to 5 URIs")
        try:
            self._uris = tuple(parse_uri(u) for u in config.uris)
        except ValueError as e:
            raise ValueError(f"LDAP connector {config.name!r}: {e}") from e
        if config.bind_dn is not None and not config.bind_password:
            raise ValueError(
                f"LDAP connector {config.name!r}: bind_dn is set but bind_password is empty; "
                "a simple bind with an empty password is anonymous (RFC 4513 5.1.2). "
                "Set bind_password, or remove bind_dn to search anonymously."
            )
        self._service_bind: tuple[str, bytes] | None = None
        if config.bind_dn is not None and config.bind_password is not None:
            self._service_bind = (config.bind_dn, config.bind_password.encode("utf-8"))
        uses_tls = config.start_tls or any(u.implicit_tls for u in self._uris)
        try:
            self._trust_root = load_trust_root(config.ca_file) if uses_tls else None
        except ValueError as e:
            raise ValueError(f"LDAP connector {config.name!r}: {e}") from e
        self._tls_options: dict[str, IOpenSSLClientConnectionCreator] = {}
        self._pool: list[_LDAPConnection] = []
        self._live: set[_LDAPConnection] = set()
        self._opening = 0
        self._waiters: list[Deferred[_LDAPConnection]] = []
        self._attempts: set[Deferred[Any]] = set()
        self._failed_at: dict[LDAPURI, float] = {}
        self._outage_logged_at = -math.inf
        self._outage_repeats = 0
        self._closed = False

    # -- public API ----------------------------------------------------------------------------

    def search(self, filter_obj: Any, attributes: list[str]) -> Deferred[list[SearchEntry]]:
        """Search the subtree under C{base_dn} with C{filter_obj} (see
        L{axigen_fe.ldap.escape.build_filter}) for C{attributes}.

        At most two entries come back (the size limit is 2: a map only needs to know
        whether none, one or several entries match).

        @raise DirectoryUnavailable: (as the Deferred's failure) on any outage.
        """
        return Deferred.fromCoroutine(self._search(filter_obj, list(attributes)))

    def check_bind(self, dn: str, password: bytes) -> Deferred[bool]:
        """Simple-bind as C{dn} with C{password} on a fresh connection of its own.

        True when the server accepts, False on invalidCredentials. An empty password
        is False without asking the server: an empty simple bind is an anonymous bind
        that "succeeds" for any DN (RFC 4513 5.1.2).

        @raise DirectoryUnavailable: (as the Deferred's failure) on any outage.
        """
        return Deferred.fromCoroutine(self._check_bind(dn, password))

    def close(self) -> Deferred[None]:
        """Stop: cancel connection attempts, unbind and close every connection.

        The Deferred fires when every connection is gone (no dirty reactor in tests,
        no half-open sockets at shutdown). Later calls fail with L{DirectoryUnavailable}.
        """
        self._closed = True
        for attempt in list(self._attempts):
            attempt.cancel()
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.errback(DirectoryUnavailable(f"LDAP connector {self.name} was closed"))
        self._pool.clear()
        connections = list(self._live)
        gone = [c.when_lost() for c in connections]
        for c in connections:
            c.close(self._clock, self._config.timeout)
        return DeferredList(gone).addCallback(lambda _: None)

    # -- searching -----------------------------------------------------------------------------

    async def _search(self, filter_obj: Any, attributes: list[str]) -> list[SearchEntry]:
        for attempt in (1, 2):
            conn = await self._acquire()
            try:
                return await self._search_on(conn, filter_obj, attributes)
            except _StepFailed as e:
                if e.dropped and attempt == 1 and not self._closed:
                    # typically a pooled connection the server closed while idle; the
                    # retry runs on another (or a new) connection
                    self.log.info(
                        "ldap connector {name}: connection to {uri} lost during a search "
                        "({why}); retrying once",
                        name=self.name,
                        uri=conn.uri.text,
                        why=e.why,
                    )
                    continue
                if e.timed_out:
                    conn.abort()
                raise DirectoryUnavailable(f"search on {conn.uri}: {e.why}") from None
        raise AssertionError("unreachable")

    async def _search_on(
        self, conn: _LDAPConnection, filter_obj: Any, attributes: list[str]
    ) -> list[SearchEntry]:
        request = pureldap.LDAPSearchRequest(
            baseObject=self._config.base_dn,
            scope=pureldap.LDAP_SCOPE_wholeSubtree,
            derefAliases=pureldap.LDAP_DEREF_neverDerefAliases,
            sizeLimit=2,
            timeLimit=max(1, math.ceil(self._config.timeout)),
            typesOnly=0,
            filter=filter_obj,
            attributes=attributes,
        )
        conn.outstanding += 1
        try:
            done, entries = conn.search(request)
            response = await self._within(done, "search")
        finally:
            conn.outstanding -= 1
        code = response.resultCode
        if code in (_SUCCESS, _SIZE_LIMIT_EXCEEDED):
            self.log.debug(
                "ldap connector {name}: {filter} on {uri}: {count} entries",
                name=self.name,
                filter=filter_text(filter_obj),
                uri=conn.uri.text,
                count=len(entries),
            )
            return entries
        why = f"{result_code_name(code)}"
        message = _text(response.errorMessage)
        if message:
            why += f" ({message})"
        if code == _NO_SUCH_OBJECT:
            raise DirectoryUnavailable(
                f"search on {conn.uri}: base DN {self._config.base_dn!r} does not exist "
                f"({why}); check base_dn"
            )
        if code in (_BUSY, _UNAVAILABLE):
            conn.close(self._clock, self._config.timeout)  # the next search reconnects
        raise DirectoryUnavailable(f"search on {conn.uri} failed: {why}")

    # -- password checks -----------------------------------------------------------------------

    async def _check_bind(self, dn: str, password: bytes) -> bool:
        if not password or not dn:
            return False
        conn = await self._connect_any(bind=None)
        try:
            request = pureldap.LDAPBindRequest(
                dn=dn.encode("utf-8", "surrogateescape"), auth=password
            )
            try:
                response = await self._within(conn.request(request), "bind")
            except _StepFailed as e:
                raise DirectoryUnavailable(f"bind as a user on {conn.uri}: {e.why}") from None
        finally:
            conn.close(self._clock, self._config.timeout)
        code = response.resultCode
        if code == _SUCCESS:
            return True
        if code == _INVALID_CREDENTIALS:
            return False
        message = _text(response.errorMessage)
        raise DirectoryUnavailable(
            f"bind as {dn!r} on {conn.uri} failed: {result_code_name(code)}"
            + (f" ({message})" if message else "")
        )

    # -- the pool ------------------------------------------------------------------------------

    async def _acquire(self) -> _LDAPConnection:
        """A bound connection from the pool, opening one when none is ready.

        While fewer than C{pool_size} connections exist and the least busy one is
        already carrying an operation, another is opened in the background; the
        current operation does not wait for it.
        """
        if self._closed:
            raise DirectoryUnavailable(f"LDAP connector {self.name} was closed")
        ready = [c for c in self._pool if c.usable]
        if ready:
            best = min(ready, key=lambda c: c.outstanding)
            # move it to the end: among equally busy connections, round-robin
            self._pool.remove(best)
            self._pool.append(best)
            if best.outstanding > 0 and len(ready) + self._opening < self._pool_size:
                self._grow()
            return best
        if self._opening == 0:
            self._grow()
        waiter: Deferred[_LDAPConnection] = Deferred(canceller=self._forget_waiter)
        self._waiters.append(waiter)
        return await waiter

    def _forget_waiter(self, waiter: Deferred[_LDAPConnection]) -> None:
        if waiter in self._waiters:
            self._waiters.remove(waiter)

    def _grow(self) -> None:
        """Open one more pooled connection; hand it to everyone waiting for one."""
        self._opening += 1
        attempt = Deferred.fromCoroutine(self._connect_any(bind=self._service_bind))

        def opened(conn: _LDAPConnection) -> None:
            self._opening -= 1
            if self._closed:
                conn.close(self._clock, self._config.timeout)
                return
            if conn.is_lost:  # gone between the bind and now: nobody may wait forever
                if self._opening == 0:
                    waiters, self._waiters = self._waiters, []
                    for waiter in waiters:
                        waiter.errback(
                            DirectoryUnavailable(f"{conn.uri} closed the connection at once")
                        )
                return
            conn.usable = True
            self._pool.append(conn)
            waiters, self._waiters = self._waiters, []
            for waiter in waiters:
                waiter.callback(conn)

        def failed(reason: Failure) -> None:
            self._opening -= 1
            if self._opening > 0:
                return  # another attempt is under way; the waiters wait for that one
            waiters, self._waiters = self._waiters, []
            if isinstance(reason.value, DirectoryUnavailable):
                for waiter in waiters:
                    waiter.errback(reason)
                return
            if not isinstance(reason.value, CancelledError):
                self.log.failure(
                    "ldap connector {name}: opening a connection", reason, name=self.name
                )
            for waiter in waiters:
                waiter.errback(DirectoryUnavailable(f"cannot open a connection: {reason.value}"))

        attempt.addCallbacks(opened, failed)

    def _lost(self, conn: _LDAPConnection, reason: Failure) -> None:
        self._live.discard(conn)
        if conn in self._pool:
            self._pool.remove(conn)
            if not conn.closing and not self._closed:
                self.log.info(
                    "ldap connector {name}: connection to {uri} closed ({why}); "
                    "the next operation reconnects",
                    name=self.name,
                    uri=conn.uri.text,
                    why=_describe(reason.value)[0] if reason.value else "unknown",
                )

    # -- connecting (with failover) ------------------------------------------------------------

    def _candidates(self) -> list[LDAPURI]:
        """URIs in configured order, those that failed within C{backoff} seconds last
        (they are still tried when nothing else answers)."""
        now = self._clock.seconds()
        fresh = [u for u in self._uris if now - self._failed_at.get(u, -math.inf) >= self._backoff]
        return fresh + [u for u in self._uris if u not in fresh]

    async def _connect_any(self, bind: tuple[str, bytes] | None) -> _LDAPConnection:
        """A connected, secured and (if C{bind}) bound connection to the first URI that
        works; tracked so that L{close} can cancel it."""
        attempt = Deferred.fromCoroutine(self._failover(bind))
        self._attempts.add(attempt)

        def untrack(result: T) -> T:
            self._attempts.discard(attempt)
            return result

        attempt.addBoth(untrack)
        try:
            return await attempt
        except CancelledError:
            if self._closed:
                raise DirectoryUnavailable(f"LDAP connector {self.name} was closed") from None
            raise

    async def _failover(self, bind: tuple[str, bytes] | None) -> _LDAPConnection:
        """Try the candidates in turn.

        Logging stays readable during an outage: a URI's failure is logged when it
        starts failing (not again while it is in back-off), its recovery once, and
        "nothing reachable" at most once per L{OUTAGE_LOG_INTERVAL} with a count.
        """
        if self._closed:
            raise DirectoryUnavailable(f"LDAP connector {self.name} was closed")
        candidates = self._candidates()
        failures: list[str] = []
        for index, uri in enumerate(candidates):
            try:
                conn = await self._open(uri, bind)
            except _StepFailed as e:
                now = self._clock.seconds()
                already_failing = now - self._failed_at.get(uri, -math.inf) < self._backoff
                self._failed_at[uri] = now
                failures.append(f"{uri}: {e.why}")
                if index + 1 < len(candidates) and not already_failing:
                    self.log.warn(
                        "ldap connector {name}: {uri} unreachable ({why}); trying {next}",
                        name=self.name,
                        uri=uri.text,
                        why=e.why,
                        next=candidates[index + 1].text,
                    )
                continue
            if self._failed_at.pop(uri, None) is not None:
                self.log.info(
                    "ldap connector {name}: {uri} answers again", name=self.name, uri=uri.text
                )
            self._outage_logged_at = -math.inf
            return conn
        summary = "; ".join(failures)
        now = self._clock.seconds()
        if now - self._outage_logged_at >= self.OUTAGE_LOG_INTERVAL:
            self.log.error(
                "ldap connector {name}: no directory server reachable ({failures}); "
                "lookups fail temporarily until one answers{repeats}",
                name=self.name,
                failures=summary,
                repeats=(
                    f" ({self._outage_repeats} more failed attempts since the last report)"
                    if self._outage_repeats
                    else ""
                ),
            )
            self._outage_logged_at = now
            self._outage_repeats = 0
        else:
            self._outage_repeats += 1
        raise DirectoryUnavailable(f"no directory server reachable: {summary}")

    async def _open(self, uri: LDAPURI, bind: tuple[str, bytes] | None) -> _LDAPConnection:
        """Connect to C{uri}, secure (ldaps / StartTLS), bind; raise L{_StepFailed}."""
        conn = _LDAPConnection(uri, self._lost)
        handshake = conn.expect_handshake() if uri.implicit_tls else None
        await self._within(self._endpoint(uri).connect(_OneShotFactory(conn)), "connect")
        self._live.add(conn)
        try:
            if handshake is not None:
                await self._within(handshake, "TLS handshake")
            elif self._config.start_tls:
                await self._start_tls(conn)
            if bind is not None:
                await self._bind_service(conn, *bind)
        except BaseException:
            conn.abort()
            raise
        return conn

    async def _start_tls(self, conn: _LDAPConnection) -> None:
        response = await self._within(conn.request(pureldap.LDAPStartTLSRequest()), "StartTLS")
        if response.resultCode != _SUCCESS:
            message = _text(response.errorMessage)
            raise _StepFailed(
                f"the server refused StartTLS: {result_code_name(response.resultCode)}"
                + (f" ({message})" if message else "")
            )
        handshake = conn.expect_handshake()
        conn.transport.startTLS(self._tls_for(conn.uri.host))
        await self._within(handshake, "TLS handshake")

    async def _bind_service(self, conn: _LDAPConnection, dn: str, password: bytes) -> None:
        request = pureldap.LDAPBindRequest(dn=dn, auth=password)
        response = await self._within(conn.request(request), "bind")
        code = response.resultCode
        if code == _SUCCESS:
            return
        message = _text(response.errorMessage)
        why = result_code_name(code) + (f" ({message})" if message else "")
        if code == _INVALID_CREDENTIALS:
            # the service account, not a user: an operator must fix the configuration
            self.log.error(
                "ldap connector {name}: {uri} refused the service account {dn}: {why}; "
                "check bind_dn and bind_password",
                name=self.name,
                uri=conn.uri.text,
                dn=dn,
                why=why,
            )
        raise _StepFailed(f"bind as {dn} refused: {why}")

    def _endpoint(self, uri: LDAPURI) -> IStreamClientEndpoint:
        timeout = max(1, math.ceil(self._config.timeout))
        endpoint: IStreamClientEndpoint
        if isIPAddress(uri.host):
            endpoint = TCP4ClientEndpoint(self._reactor, uri.host, uri.port, timeout=timeout)
        elif isIPv6Address(uri.host):
            endpoint = TCP6ClientEndpoint(self._reactor, uri.host, uri.port, timeout=timeout)
        else:
            endpoint = HostnameEndpoint(self._reactor, uri.host, uri.port, timeout=timeout)
        if uri.implicit_tls:
            endpoint = wrapClientTLS(self._tls_for(uri.host), endpoint)
        return endpoint

    def _tls_for(self, host: str) -> IOpenSSLClientConnectionCreator:
        options = self._tls_options.get(host)
        if options is None:
            if self._trust_root is None:  # start_tls is set, so this cannot happen
                raise AssertionError("TLS without a trust root")
            options = self._tls_options[host] = client_options(host, self._trust_root)
        return options

    async def _within(self, d: Deferred[T], step: str) -> T:
        """Await C{d} for at most C{timeout} seconds; failures become L{_StepFailed}.

        A cancellation from outside (L{close}, or a caller giving up) stays a
        L{CancelledError}, so it is never mistaken for a failing server.
        (C{Deferred.addTimeout} is not used: a cancelled connection attempt fails with
        C{ConnectingCancelledError}, which it does not turn into a timeout.)
        """
        timed_out = False

        def expire() -> None:
            nonlocal timed_out
            timed_out = True
            d.cancel()

        timer = self._clock.callLater(self._config.timeout, expire)
        try:
            return await d
        except Exception as e:
            if timed_out:
                raise _StepFailed(
                    f"no answer to {step} within {self._config.timeout:g}s", timed_out=True
                ) from None
            if isinstance(e, (CancelledError, error.ConnectingCancelledError)):
                raise CancelledError() from None
            why, dropped = _describe(e)
            if isinstance(e, (SSL.Error, VerificationError)) and "TLS" not in step:
                why = f"TLS: {why}"
            raise _StepFailed(f"{step}: {why}", dropped=dropped) from None
        finally:
            if timer.active():
                timer.cancel()


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace").strip()
    return str(value or "").strip()
