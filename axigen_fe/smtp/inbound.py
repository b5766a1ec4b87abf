"""Inbound SMTP (MX traffic): route each recipient to the back-end that owns it.

One transaction goes to one back-end. The first accepted recipient picks it: the node
opens a back-end session (or reuses the one left from the previous transaction on
this connection), replays MAIL FROM and forwards the RCPT; the back-end's own reply is
what the client gets. A later recipient owned by another back-end gets
C{452 4.5.3}: the client delivers it in a new transaction (RFC 5321 4.5.3.1.10), so
no message is ever split or duplicated by the node.

The map is asked without a password (C{lookup(address, None)}); only addresses in
C{domains} are looked up at all, so the node is never an open relay.

DATA is streamed: the node answers the client's DATA with the back-end's C{354},
passes the body through as it arrives (L{DataScanner} finds the end), and answers
the end of data with the back-end's final reply only: no C{250} the back-end did not
give, a back-end C{4xx} stays C{4xx}, a back-end lost mid-message is C{451 4.4.2}.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from axigen_fe.smtp import replies
from axigen_fe.smtp.backend import BackendError, BackendGone, BackendSession, ClientFacts
from axigen_fe.smtp.datastream import DataScanner
from axigen_fe.smtp.parser import (
    CommandError,
    MailFrom,
    RcptTo,
    domain_served,
    parse_mail,
    parse_rcpt,
)
from axigen_fe.smtp.replies import Reply, reply
from axigen_fe.smtp.session import BACKEND_FULL, FINAL_REPLY_TIMEOUT, SessionEnv, SMTPSession
from axigen_fe.usermap.interface import Outcome


class InboundSession(SMTPSession):
    """MAIL / RCPT (routed) / DATA (streamed) for mail addressed to the cluster's domains."""

    def __init__(self, env: SessionEnv) -> None:
        super().__init__(env)
        self.mail: MailFrom | None = None
        self.accepted = 0
        self.backend: BackendSession | None = None
        self.bound = False  # MAIL FROM of the current transaction was accepted by self.backend
        self.messages = 0
        self._opened_note = ""  # "session opened" for the next RCPT log line
        self._closed_at_end: str | None = None
        # DATA state
        self.scanner: DataScanner | None = None
        self._data_problem: Reply | None = None
        self._early_final: Reply | None = None
        self._body_done = False

    # ------------------------------------------------------------ EHLO etc.

    def extensions(self) -> list[str]:
        ext = ["PIPELINING", f"SIZE {self.cfg.max_message_size}", "8BITMIME", "ENHANCEDSTATUSCODES"]
        if self.starttls_offered():
            ext.append("STARTTLS")
        return ext

    def summary(self) -> str:
        closed = f", back-end session {self._closed_at_end} closed" if self._closed_at_end else ""
        return f"{self.messages} messages{closed}"

    def reset_transaction(self, why: str) -> None:
        self._end_transaction()
        self._drop_backend(why)

    def on_close(self) -> None:
        if self.backend is not None:
            if self.scanner is not None and not self._body_done:
                self.backend.abort("client left during DATA")  # never let a partial message through
            # said in the disconnect line (one log line less per session: lines cost CPU)
            self._closed_at_end = self.backend.label
            self._drop_backend(None)

    def _end_transaction(self) -> None:
        self.mail = None
        self.accepted = 0
        self.bound = False
        if self.backend is not None:
            self.backend.in_transaction = False

    def _drop_backend(self, why: str | None) -> None:
        backend, self.backend = self.backend, None
        self.bound = False
        if backend is not None:
            if why is not None:
                self.log.info(
                    "back-end session {backend} closed: {why}", backend=backend.label, why=why
                )
            backend.quit()

    def _client_reply(self, r: Reply) -> Reply:
        """A back-end reply as the client may see it: its 421 would close *our* session."""
        if r.code == 421 or not (200 <= r.code < 600):
            self._drop_backend(f"back-end said {r.code} {r.text}")
            return replies.BACKEND_LOST
        return r

    # ------------------------------------------------------------ RSET / AUTH

    def smtp_RSET(self, arg: bytes) -> None:
        backend = self.backend
        bound = self.bound
        self._end_transaction()
        if not (bound and backend is not None and backend.alive):
            self.send(replies.RESET_OK)
            return

        async def rset() -> bool:
            try:
                return (await backend.rset()).positive
            except BackendGone:
                return False

        def done(ok: bool) -> None:
            if not ok:
                self._drop_backend("RSET failed")
            self.send(replies.RESET_OK)

        self.run("rset", Deferred.fromCoroutine(rset()), done)

    def smtp_AUTH(self, arg: bytes) -> None:
        self.error(replies.AUTH_NOT_AVAILABLE)

    # ------------------------------------------------------------ MAIL

    def smtp_MAIL(self, arg: bytes) -> None:
        if self.helo is None:
            self.error(replies.HELO_FIRST)
            return
        if self.mail is not None:
            self.error(replies.NESTED_MAIL)
            return
        try:
            mail = parse_mail(arg, self.esmtp)
        except CommandError as e:
            self.error(e.reply)
            return
        if mail.size is not None and mail.size > self.cfg.max_message_size:
            self.send(reply(552, "5.3.4", "Message size exceeds fixed maximum message size"))
            return
        self.mail = mail
        self.accepted = 0
        self.bound = False
        self.send(replies.SENDER_OK)

    # ------------------------------------------------------------ RCPT

    def smtp_RCPT(self, arg: bytes) -> None:
        if self.mail is None:
            self.error(replies.NEED_MAIL)
            return
        try:
            rcpt = parse_rcpt(arg)
        except CommandError as e:
            self.error(e.reply)
            return
        if self.accepted >= self.cfg.max_recipients:
            self.send(replies.TOO_MANY_RECIPIENTS)
            return
        address = rcpt.path.address
        if not rcpt.path.domain:  # RCPT TO:<postmaster> (RFC 5321 4.5.1)
            exact = [d for d in self.cfg.domains if not d.startswith("*.")]
            address = f"postmaster@{exact[0]}" if exact else "postmaster"
        elif not domain_served(rcpt.path.domain, self.cfg.domains):
            self._log_rcpt(address, "relay denied", "domain not served", None)
            self.error(replies.RELAY_DENIED)
            return
        work: Deferred[tuple[Reply, bool]] = Deferred.fromCoroutine(self._route(rcpt, address))

        def done(result: tuple[Reply, bool]) -> None:
            r, is_error = result
            if is_error:
                self.error(r)
            else:
                self.send(r)

        self.run("rcpt", work, done)

    def _log_rcpt(self, address: str, outcome: str, detail: str, backend: str | None) -> None:
        """One line per RCPT decision; a back-end session opened for it is said here too."""
        opened, self._opened_note = self._opened_note, ""
        self.log.info(
            "rcpt <{rcpt}> from <{sender}>: {outcome} ({detail}) back-end {backend}{opened}",
            rcpt=address,
            sender=self.mail.path.address if self.mail else "",
            outcome=outcome,
            detail=detail,
            backend=backend or "-",
            opened=opened,
        )

    async def _route(self, rcpt: RcptTo, address: str) -> tuple[Reply, bool]:
        """Map lookup, back-end choice, RCPT on the back-end: (reply for the client, is_error)."""
        result = await self.env.usermap.lookup(address, None)
        if result.outcome is Outcome.UNKNOWN_USER:
            self._log_rcpt(address, "unknown user", result.detail, None)
            return replies.UNKNOWN_USER, True
        if result.outcome is not Outcome.ROUTED or result.host is None:
            # TEMPFAIL, or a map that wants a password to route (never 5xx on doubt)
            self._log_rcpt(address, "map tempfail", result.detail or result.outcome.value, None)
            return replies.MAP_TEMPFAIL, False
        key = (result.host, result.port or self.cfg.backend_port)
        label = f"{key[0]}:{key[1]}"
        if self.bound:
            if self.backend is None or self.backend.key != key:
                current = self.backend.label if self.backend else "-"
                self._log_rcpt(
                    address, "deferred: other back-end", f"transaction is on {current}", label
                )
                return replies.OTHER_BACKEND, False
            try:
                r = await self.backend.rcpt(rcpt)
            except BackendGone as e:
                self.log.info("back-end session {backend} lost: {why}", backend=label, why=e.why)
                self._drop_backend("lost at RCPT")
                self._log_rcpt(address, "not accepted", "back-end lost", label)
                return replies.BACKEND_LOST, False
        else:
            refused, first = await self._bind(key, rcpt)
            if refused is not None or first is None:
                r = refused or replies.BACKEND_UNAVAILABLE
                self._log_rcpt(address, "not accepted", f"{r.code} {r.text}", label)
                return r, False
            r = first
        if r.positive:
            self.accepted += 1
        self._log_rcpt(
            address,
            "accepted" if r.positive else "rejected by back-end",
            f"{r.code} {r.text}",
            label,
        )
        return self._client_reply(r), False

    async def _bind(self, key: tuple[str, int], rcpt: RcptTo) -> tuple[Reply | None, Reply | None]:
        """Give the transaction its back-end: MAIL FROM there, with the first RCPT pipelined.

        Returns (reply for the client if MAIL could not be placed, the RCPT's reply).
        """
        assert self.mail is not None
        for attempt in (1, 2):
            if self.backend is not None and (self.backend.key != key or not self.backend.alive):
                self._drop_backend("transaction needs another back-end")
            reused = self.backend is not None
            if self.backend is None:
                try:
                    self.backend = await self.env.open_backend(
                        key[0], key[1], self._facts(), self.cfg.forward_client_address
                    )
                except BackendError as e:
                    self.log.warn(
                        "back-end {host}:{port} unavailable: {why}",
                        host=key[0],
                        port=key[1],
                        why=str(e),
                    )
                    return replies.BACKEND_UNAVAILABLE, None
                if self.closed:  # the client left while the back-end was being opened
                    self.backend.quit()
                    self.backend = None
                    return replies.BACKEND_UNAVAILABLE, None
                self._opened_note = (
                    f", session opened (client address via {self.backend.forwarded})"
                )
            backend = self.backend
            try:
                r, first = await backend.mail(self.mail, rcpt)
            except BackendGone as e:
                self._drop_backend(f"lost at MAIL ({e.why})")
                if reused and attempt == 1:
                    continue  # an idle session the back-end had closed: try a fresh one
                return replies.BACKEND_UNAVAILABLE, None
            if not r.positive:
                self.log.info(
                    "back-end {backend} refused MAIL FROM: {code} {text}",
                    backend=backend.label,
                    code=r.code,
                    text=r.text,
                )
                self._drop_backend("MAIL FROM refused")
                return (
                    self._client_reply(r) if r.code != 421 else replies.BACKEND_UNAVAILABLE
                ), None
            self.bound = True
            return None, first
        return replies.BACKEND_UNAVAILABLE, None

    def _facts(self) -> ClientFacts:
        return ClientFacts(self.peer_ip, self.peer_port, self.helo or "", self.esmtp)

    # ------------------------------------------------------------ DATA

    def smtp_DATA(self, arg: bytes) -> None:
        if arg:
            self.error(reply(501, "5.5.4", "Syntax: DATA"))
            return
        if self.mail is None:
            self.error(replies.NEED_MAIL)
            return
        if self.accepted == 0:
            self.send(replies.NO_VALID_RECIPIENTS)
            return
        backend = self.backend
        if backend is None or not backend.alive or not self.bound:
            self._end_transaction()
            self._drop_backend("lost before DATA")
            self.send(replies.BACKEND_LOST)
            return
        work: Deferred[Reply | Failure] = Deferred.fromCoroutine(self._data_command(backend))
        self.run("data", work, lambda r: self._data_go(backend, r))

    async def _data_command(self, backend: BackendSession) -> Reply | Failure:
        try:
            return await backend.proto.command(b"DATA")
        except BackendGone as e:
            return Failure(e)

    def _data_go(self, backend: BackendSession, r: Reply | Failure) -> None:
        if isinstance(r, Failure):
            self._drop_backend("lost at DATA")
            self._end_transaction()
            self.send(replies.BACKEND_LOST)
            return
        if r.code != 354:
            self.log.info(
                "back-end {backend} refused DATA: {code} {text}",
                backend=backend.label,
                code=r.code,
                text=r.text,
            )
            self._end_transaction()
            self._drop_backend("DATA refused")
            self.send(self._client_reply(r) if r.code != 421 else replies.BACKEND_LOST)
            return
        self.scanner = DataScanner()
        self._data_problem = None
        self._early_final = None
        self._body_done = False
        final = backend.proto.expect()
        final.addCallbacks(self._final_reply, self._final_failed)
        assert backend.proto.transport is not None
        backend.proto.transport.registerProducer(self.gate, True)  # type: ignore[attr-defined]
        self.setRawMode()  # type: ignore[no-untyped-call]
        self.send(r)

    def raw_received(self, data: bytes) -> None:
        scanner = self.scanner
        if scanner is None:  # not in DATA: nothing else uses raw mode here
            return
        step = scanner.feed(data)
        backend = self.backend
        if step.smuggling and self._data_problem is None:
            self.log.warn(
                "message rejected: lone dot next to a bare CR/LF (SMTP smuggling attempt?)"
            )
            self._fail_data(replies.SMUGGLING, "smuggling defence")
        elif not scanner.discarding and scanner.size > self.cfg.max_message_size:
            self.log.info(
                "message rejected: larger than {limit} octets", limit=self.cfg.max_message_size
            )
            self._fail_data(replies.TOO_BIG, "message too big")
        elif step.forward and not scanner.discarding and backend is not None:
            backend.proto.write(step.forward)
        if step.ended:
            self._body_ended(step.leftover)

    def _fail_data(self, r: Reply, why: str) -> None:
        assert self.scanner is not None
        self._data_problem = r
        self.scanner.discard()
        if self.backend is not None:
            self._unregister()
            self.backend.abort(why)  # the back-end must not see an end of data for this
            self._drop_backend(why)

    def _unregister(self) -> None:
        backend = self.backend
        if backend is not None and backend.proto.transport is not None:
            try:
                backend.proto.transport.unregisterProducer()  # type: ignore[attr-defined]
            except Exception:  # noqa: BLE001 - a transport already gone has no producer
                pass
        self.release(BACKEND_FULL)

    def _body_ended(self, leftover: bytes) -> None:
        self._body_done = True
        self.set_line_mode_later(leftover)
        self.hold("final")
        self._unregister()
        if self._data_problem is not None:
            self._deliver_final(self._data_problem)
        elif self._early_final is not None:
            self._deliver_final(self._early_final)
        elif self.backend is not None:
            self.backend.proto.arm(max(FINAL_REPLY_TIMEOUT, self.cfg.preauth_timeout))

    def _final_reply(self, r: Reply) -> None:
        if self._body_done:
            self._deliver_final(r)
        else:  # the back-end answered before the end of data: it won't take the rest
            self._early_final = r
            if self.scanner is not None:
                self.scanner.discard()
            self._unregister()

    def _final_failed(self, f: Failure) -> None:
        why = f.value.why if isinstance(f.value, BackendError) else f.getErrorMessage()
        if self._data_problem is None and self._early_final is None:
            self.log.warn("back-end session lost during DATA: {why}", why=why)
            self._data_problem = replies.BACKEND_LOST
            if self.scanner is not None:
                self.scanner.discard()
        self._unregister()
        self._drop_backend(f"lost during DATA ({why})")
        if self._body_done:
            self._deliver_final(self._data_problem or replies.BACKEND_LOST)

    def _deliver_final(self, r: Reply) -> None:
        if self.scanner is None:
            return  # delivered already
        size = self.scanner.size
        self.scanner = None
        backend = self.backend
        sender = self.mail.path.address if self.mail else ""
        if r.positive and backend is not None:
            self.messages += 1
            self.log.info(
                "message from <{sender}> accepted by {backend}: size={size} queue-id={qid}",
                sender=sender,
                backend=backend.label,
                size=size,
                qid=replies.queue_id(r) or "-",
            )
        else:
            self.log.info(
                "message from <{sender}> not accepted ({code} {text}), back-end {backend}",
                sender=sender,
                code=r.code,
                text=r.text,
                backend=backend.label if backend else "-",
            )
        out = self._client_reply(r) if backend is not None else r
        self._end_transaction()
        self.send(out)
        self.release("final")
