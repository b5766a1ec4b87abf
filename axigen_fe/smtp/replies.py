"""SMTP replies as values: what the node says itself, and what it passes on from a back-end.

One type for both directions keeps the rule "the client gets the back-end's own answer"
a one-liner (C{session.send(reply)}), and lets the node rewrite the few back-end codes
that would mean something else on the client's connection (C{421}: "I am closing").
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_ENHANCED = re.compile(rb"^([245])\.(\d{1,3})\.(\d{1,3})(?: |$)")


@dataclass(frozen=True)
class Reply:
    """A complete (possibly multi-line) reply: a code and the text of each line."""

    code: int
    lines: tuple[bytes, ...]

    def encode(self) -> bytes:
        """The reply on the wire: C{250-first}, ..., C{250 last}, CRLF after each line."""
        code = b"%03d" % self.code
        lines = self.lines or (b"",)
        last = len(lines) - 1
        out = []
        for i, text in enumerate(lines):
            out.append(code + (b" " if i == last else b"-") + text + b"\r\n")
        return b"".join(out)

    @property
    def positive(self) -> bool:
        return 200 <= self.code < 400

    @property
    def transient(self) -> bool:
        return 400 <= self.code < 500

    @property
    def permanent(self) -> bool:
        return 500 <= self.code < 600

    @property
    def enhanced(self) -> str | None:
        """The RFC 3463 status code of the first line, if it has one."""
        m = _ENHANCED.match(self.lines[0]) if self.lines else None
        return m.group(0).strip().decode("ascii") if m else None

    @property
    def text(self) -> str:
        """All lines as one string, for logs."""
        return " / ".join(line.decode("utf-8", "replace") for line in self.lines)


def reply(code: int, enhanced: str, text: str, *more: str) -> Reply:
    """A reply of the node's own, with its RFC 3463 code on the first line."""
    first = f"{enhanced} {text}" if enhanced else text
    return Reply(code, tuple(s.encode("utf-8") for s in (first, *more)))


def queue_id(final: Reply) -> str | None:
    """The back-end's queue id from a DATA reply (Postfix: C{queued as 4Xyz}), for logs."""
    m = re.search(rb"queued as ([A-Za-z0-9]+)", b" ".join(final.lines))
    if m:
        return m.group(1).decode("ascii")
    m = re.search(rb"\bid[= ]([A-Za-z0-9.\-]+)", b" ".join(final.lines), re.IGNORECASE)
    return m.group(1).decode("ascii") if m else None


# replies the proxies send themselves, in one place so both state machines word them alike
OK = reply(250, "2.0.0", "Ok")
SENDER_OK = reply(250, "2.1.0", "Ok")
RESET_OK = reply(250, "2.0.0", "Ok")
BYE = reply(221, "2.0.0", "Bye")
VRFY = reply(252, "2.5.0", "Cannot VRFY user, but will accept message and attempt delivery")
HELP = reply(
    214, "2.0.0", "See RFC 5321; commands: HELO EHLO MAIL RCPT DATA RSET NOOP QUIT VRFY HELP"
)
READY_FOR_TLS = reply(220, "2.0.0", "Ready to start TLS")
UNKNOWN_COMMAND = reply(500, "5.5.2", "Error: command not recognized")
LINE_TOO_LONG = reply(500, "5.5.6", "Error: line too long")
NOT_IMPLEMENTED = reply(502, "5.5.1", "Error: command not implemented")
TLS_NOT_AVAILABLE = reply(502, "5.5.1", "Error: STARTTLS not available")
HELO_FIRST = reply(503, "5.5.1", "Error: send HELO/EHLO first")
NESTED_MAIL = reply(503, "5.5.1", "Error: nested MAIL command")
NEED_MAIL = reply(503, "5.5.1", "Error: need MAIL command")
NEED_RCPT = reply(503, "5.5.1", "Error: need RCPT command")
NO_VALID_RECIPIENTS = reply(554, "5.5.1", "Error: no valid recipients")
DATA_GO_AHEAD = reply(354, "", "End data with <CR><LF>.<CR><LF>")
TOO_BIG = reply(552, "5.3.4", "Error: message file too big")
RELAY_DENIED = reply(550, "5.7.1", "Relaying denied")
UNKNOWN_USER = reply(550, "5.1.1", "Recipient address rejected: User unknown")
MAP_TEMPFAIL = reply(451, "4.4.3", "Recipient address lookup failed, try again later")
OTHER_BACKEND = reply(452, "4.5.3", "Too many recipients for this transaction; try again")
TOO_MANY_RECIPIENTS = reply(452, "4.5.3", "Error: too many recipients")
BACKEND_UNAVAILABLE = reply(451, "4.4.1", "Mailbox server unavailable, try again later")
BACKEND_LOST = reply(451, "4.4.2", "Connection to the mailbox server lost, try again later")
SMUGGLING = reply(
    550, "5.6.0", "Message rejected: a lone dot next to a bare CR or LF (use CRLF line endings)"
)
TOO_MANY_ERRORS = reply(421, "4.7.0", "Error: too many errors, closing connection")
TIMEOUT = reply(421, "4.4.2", "Error: timeout exceeded, closing connection")
AUTH_REQUIRED = reply(530, "5.7.0", "Authentication required")
AUTH_OK = reply(235, "2.7.0", "Authentication successful")
AUTH_FAILED = reply(535, "5.7.8", "Authentication credentials invalid")
AUTH_TEMPFAIL = reply(454, "4.7.0", "Temporary authentication failure")
AUTH_NEEDS_TLS = reply(538, "5.7.11", "Encryption required for requested authentication mechanism")
AUTH_MECHANISM = reply(504, "5.5.4", "Unrecognized authentication type")
AUTH_CANCELLED = reply(501, "5.0.0", "Authentication cancelled")
AUTH_BAD_BASE64 = reply(501, "5.5.2", "Cannot decode response")
AUTH_ALREADY = reply(503, "5.5.1", "Error: already authenticated")
AUTH_NOT_AVAILABLE = reply(502, "5.5.1", "Error: authentication not enabled on this port")
TOO_MANY_AUTH_ERRORS = reply(
    421, "4.7.0", "Error: too many failed authentications, closing connection"
)
