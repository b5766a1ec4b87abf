"""SMTP command lines -> values: verbs, MAIL FROM / RCPT TO paths and ESMTP parameters.

Pure functions, no I/O: every way a client can get a line wrong becomes a
L{CommandError} carrying the exact reply to send (RFC 5321 section 4.1, RFC 1870
C{SIZE=}, RFC 6152 C{BODY=}), so the state machines never guess a wording.

Only what the node advertises is accepted: no SMTPUTF8 (non-ASCII addresses get
C{553 5.6.7}), no DSN (C{RCPT} parameters get C{555 5.5.4}), no BINARYMIME.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from axigen_fe.smtp.replies import Reply, reply

#: RFC 5321 4.5.3.1.4: a command line is at most 512 octets with its CRLF
COMMAND_LINE_LIMIT = 510
#: RFC 4954 4: an AUTH command (or response line) may be up to 12288 octets
AUTH_LINE_LIMIT = 12288

_VERB = re.compile(rb"^[A-Za-z]{1,16}$")
_ATEXT = re.compile(r"^[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~.]+$")
_LABEL = re.compile(r"^[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$")
_LITERAL = re.compile(r"^\[[^\[\]\\\s]{1,253}\]$")
_ROUTE = re.compile(r"^@[^,:@]+(?:,@[^,:@]+)*:")
_PARAM_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]*$")
_PARAM_VALUE = re.compile(r"^[\x21-\x3c\x3e-\x7e]+$")


class CommandError(Exception):
    """A client line that cannot be accepted; C{reply} is the answer to send."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(reply.text)
        self.reply = reply


@dataclass(frozen=True)
class Command:
    """A command line: the upper-case verb (empty if it is not a word) and the rest."""

    verb: str
    arg: bytes


def split_command(line: bytes) -> Command:
    """C{b"mail FROM:<a@b>"} -> C{Command("MAIL", b"FROM:<a@b>")}."""
    word, _, arg = line.partition(b" ")
    if not _VERB.match(word):
        return Command("", line)
    return Command(word.decode("ascii").upper(), arg.strip(b" "))


@dataclass(frozen=True)
class Path:
    """A reverse- or forward-path as the client wrote it (source route dropped).

    C{address} is C{""} for the null path C{<>}, C{"postmaster"} for the bare
    RCPT TO:<Postmaster> RFC 5321 4.5.1 requires every server to accept.
    """

    address: str
    local: str
    domain: str

    @property
    def null(self) -> bool:
        return self.address == ""

    def wire(self) -> bytes:
        return b"<" + self.address.encode("ascii") + b">"


@dataclass(frozen=True)
class MailFrom:
    """A parsed MAIL command; C{params} keeps the client's parameters in order."""

    path: Path
    params: tuple[tuple[str, str | None], ...] = ()
    size: int | None = None
    body: str | None = None

    def backend_command(self) -> bytes:
        """The MAIL command to replay on the back-end (same path, same parameters)."""
        parts = [b"MAIL FROM:" + self.path.wire()]
        for key, value in self.params:
            parts.append(
                key.encode("ascii") + (b"=" + value.encode("ascii") if value is not None else b"")
            )
        return b" ".join(parts)


@dataclass(frozen=True)
class RcptTo:
    path: Path

    def backend_command(self) -> bytes:
        return b"RCPT TO:" + self.path.wire()


def _syntax(verb: str) -> CommandError:
    usage = {"MAIL": "MAIL FROM:<address>", "RCPT": "RCPT TO:<address>"}[verb]
    return CommandError(reply(501, "5.5.4", f"Syntax: {usage}"))


def _bad_address(verb: str) -> CommandError:
    if verb == "MAIL":
        return CommandError(reply(501, "5.1.7", "Bad sender address syntax"))
    return CommandError(reply(501, "5.1.3", "Bad recipient address syntax"))


def _split_path(arg: bytes, keyword: bytes, verb: str) -> tuple[str, bytes]:
    """C{FROM:<path> params} -> (path text without brackets, params); quotes honoured."""
    if arg[: len(keyword)].upper() != keyword:
        raise _syntax(verb)
    rest = arg[len(keyword) :].lstrip(b" ")
    if not rest.startswith(b"<"):
        raise _syntax(verb)
    i, quoted = 1, False
    while i < len(rest):
        c = rest[i : i + 1]
        if quoted:
            if c == b"\\":
                i += 2
                continue
            if c == b'"':
                quoted = False
        elif c == b'"':
            quoted = True
        elif c == b">":
            break
        i += 1
    else:
        raise _syntax(verb)
    inner, params = rest[1:i], rest[i + 1 :]
    if params and not params.startswith(b" "):
        raise _syntax(verb)
    if any(b > 126 for b in inner):
        raise CommandError(reply(553, "5.6.7", "Non-ASCII address without SMTPUTF8 (not offered)"))
    if any(b < 32 or b == 127 for b in inner) or len(inner) > 254:
        raise _bad_address(verb)
    return inner.decode("ascii"), params.strip(b" ")


def _valid_domain(domain: str) -> bool:
    if _LITERAL.match(domain):
        return True
    if not domain or len(domain) > 255:
        return False
    return all(_LABEL.match(label) for label in domain.split("."))


def parse_path(text: str, verb: str) -> Path:
    """The inside of C{<...>}: empty (MAIL only), C{postmaster} (RCPT only) or a mailbox."""
    if text == "":
        if verb == "MAIL":
            return Path("", "", "")
        raise _bad_address(verb)
    if verb == "RCPT" and text.lower() == "postmaster":
        return Path(text, text, "")
    route = _ROUTE.match(text)
    if route:  # RFC 5321 4.1.1.3: accept and ignore source routes
        text = text[route.end() :]
    if text.startswith('"'):
        end, i = -1, 1
        while i < len(text):
            if text[i] == "\\":
                i += 2
                continue
            if text[i] == '"':
                end = i
                break
            i += 1
        if end < 2 or text[end + 1 : end + 2] != "@":
            raise _bad_address(verb)
        local, domain = text[: end + 1], text[end + 2 :]
    else:
        local, at, domain = text.partition("@")
        if not at or not local or not _ATEXT.match(local):
            raise _bad_address(verb)
    if not _valid_domain(domain):
        raise _bad_address(verb)
    return Path(f"{local}@{domain}", local, domain)


def _params(raw: bytes, verb: str) -> list[tuple[str, str | None]]:
    out: list[tuple[str, str | None]] = []
    seen: set[str] = set()
    for token in raw.decode("latin-1").split(" "):
        if not token:
            continue
        key, eq, value = token.partition("=")
        if not _PARAM_KEY.match(key) or (eq and not _PARAM_VALUE.match(value)):
            raise CommandError(reply(501, "5.5.4", f"Bad {verb} parameter syntax"))
        key = key.upper()
        if key in seen:
            raise CommandError(reply(501, "5.5.4", f"Duplicate {verb} parameter {key}"))
        seen.add(key)
        out.append((key, value if eq else None))
    return out


def parse_mail(arg: bytes, esmtp: bool) -> MailFrom:
    """C{MAIL FROM:<a@b> SIZE=123 BODY=8BITMIME}; only SIZE and BODY are supported."""
    text, raw = _split_path(arg, b"FROM:", "MAIL")
    path = parse_path(text, "MAIL")
    params = _params(raw, "MAIL")
    if params and not esmtp:
        raise CommandError(reply(555, "5.5.4", "MAIL parameters need EHLO"))
    size: int | None = None
    body: str | None = None
    for key, value in params:
        if key == "SIZE":
            if value is None or not value.isdigit() or len(value) > 20:
                raise CommandError(reply(501, "5.5.4", "Bad SIZE parameter"))
            size = int(value)
        elif key == "BODY":
            if value is None or value.upper() not in ("7BIT", "8BITMIME"):
                raise CommandError(reply(501, "5.5.4", "Bad BODY parameter (7BIT or 8BITMIME)"))
            body = value.upper()
        else:
            raise CommandError(reply(555, "5.5.4", f"Unsupported MAIL parameter {key}"))
    return MailFrom(
        path, tuple((k, v.upper() if k == "BODY" and v else v) for k, v in params), size, body
    )


def parse_rcpt(arg: bytes) -> RcptTo:
    """C{RCPT TO:<a@b>}; no parameters (DSN is not offered)."""
    text, raw = _split_path(arg, b"TO:", "RCPT")
    path = parse_path(text, "RCPT")
    for key, _ in _params(raw, "RCPT"):
        raise CommandError(reply(555, "5.5.4", f"Unsupported RCPT parameter {key}"))
    return RcptTo(path)


def domain_served(domain: str, domains: tuple[str, ...]) -> bool:
    """Is C{domain} one the cluster receives for? C{*.example.org} means its subdomains."""
    d = domain.lower().rstrip(".")
    if not d or d.startswith("["):
        return False
    for pattern in domains:
        if pattern.startswith("*."):
            if d.endswith(pattern[1:]) and len(d) > len(pattern) - 1:
                return True
        elif d == pattern:
            return True
    return False


def xtext(value: str) -> bytes:
    """RFC 3461 xtext (what XCLIENT / XFORWARD values are): C{+HH} outside C{!..~}, C{+}, C{=}."""
    out = bytearray()
    for b in value.encode("utf-8"):
        if 33 <= b <= 126 and b not in (43, 61):
            out.append(b)
        else:
            out += b"+%02X" % b
    return bytes(out)
