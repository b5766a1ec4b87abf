"""Reading IMAP commands before login: tags, atoms, quoted strings, literals, lists.

Only the pre-auth grammar is needed (CAPABILITY, NOOP, LOGOUT, STARTTLS, LOGIN,
AUTHENTICATE, ID), but it has to be complete for those: clients send user names and
passwords as atoms, quoted strings (with C{\\"} and C{\\\\} escapes, 8-bit allowed as in
RFC 9051), synchronizing literals C{{n}} (the server must answer C{+} before the client
sends the bytes) and non-synchronizing C{{n+}} literals (RFC 7888, sent straight away).

L{CommandReader} is fed raw bytes and hands out one event at a time, so the protocol
above it stays a plain state machine and never sees a half-read command. Every size is
bounded: before login a client is a stranger, and must not make the node buffer much.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TypeAlias


class Atom(bytes):
    """An unquoted token. Kept apart from strings so C{ID NIL} differs from C{ID "NIL"}."""


#: one parsed argument: an atom, a string (quoted or literal), or a parenthesized list
Arg: TypeAlias = "bytes | list[Arg]"


@dataclass(frozen=True, slots=True)
class Command:
    """A complete command: C{name} is upper-cased, C{args} as sent."""

    tag: bytes
    name: str
    args: tuple[Arg, ...]


@dataclass(frozen=True, slots=True)
class Continue:
    """The client announced a synchronizing literal: answer C{+} and it sends the bytes."""


@dataclass(frozen=True, slots=True)
class BadCommand:
    """A command that cannot be understood.

    @ivar tag: the command's tag when it could be read (reply C{tag BAD}), else None
        (reply C{* BAD}).
    @ivar fatal: the byte stream cannot be resynchronized (an oversized line or
        non-synchronizing literal): say BYE and close.
    """

    tag: bytes | None
    text: str
    fatal: bool = False


Event: TypeAlias = "Command | Continue | BadCommand"

_LITERAL_AT_END = re.compile(rb"\{([0-9]{1,10})(\+?)\}\Z")

# RFC 9051 atom-specials: ( ) { SP CTL % * " \ ]; "]" is allowed in astrings, and 8-bit
# bytes are tolerated (clients put UTF-8 user names in atoms).
_ATOM_EXCLUDED = frozenset(b'(){ %*"\\') | frozenset(range(0x00, 0x20)) | {0x7F}
_TAG_EXCLUDED = _ATOM_EXCLUDED | {ord("+")}
_ATOM = re.compile(rb'[^(){ %*"\\\x00-\x1f\x7f]*')
_TAG = re.compile(rb'[^(){ %*"\\\x00-\x1f\x7f+]*')
_QUOTED = re.compile(rb'"((?:[^"\\\r\n\x00]|\\["\\])*)"')
_BAD_ESCAPE = re.compile(rb'\\(?!["\\])')
_UNESCAPE = re.compile(rb'\\(["\\])')


class _Incomplete(Exception):
    """The text ends with a literal whose bytes have not arrived yet."""


class _Syntax(Exception):
    def __init__(self, text: str, tag: bytes | None) -> None:
        super().__init__(text)
        self.text = text
        self.tag = tag


class _Tokenizer:
    """Walks the segments of one command: text, literal bytes, text, literal bytes, ...

    Even indexes are command text (each but the last ends with a literal marker), odd
    indexes are the literals' raw bytes.
    """

    __slots__ = ("segments", "index", "pos", "tag")

    def __init__(self, segments: list[bytes]) -> None:
        self.segments = segments
        self.index = 0
        self.pos = 0
        self.tag: bytes | None = None

    @property
    def _text(self) -> bytes:
        return self.segments[self.index]

    def _fail(self, text: str) -> _Syntax:
        return _Syntax(text, self.tag)

    def at_end(self) -> bool:
        return self.index == len(self.segments) - 1 and self.pos >= len(self._text)

    def peek(self) -> int | None:
        text = self._text
        return text[self.pos] if self.pos < len(text) else None

    def _run(self, pattern: re.Pattern[bytes]) -> bytes:
        m = pattern.match(self._text, self.pos)
        assert m is not None  # the patterns match the empty string
        self.pos = m.end()
        return m.group()

    def space(self) -> None:
        if self.peek() != 0x20:
            raise self._fail("Expected a space between arguments.")
        self.pos += 1

    def parse_tag(self) -> bytes:
        tag = self._run(_TAG)
        if not tag:
            raise self._fail("Missing or invalid tag.")
        self.tag = tag
        return tag

    def parse_atom(self) -> Atom:
        atom = self._run(_ATOM)
        if not atom:
            raise self._fail("Expected an atom.")
        return Atom(atom)

    def parse_value(self, depth: int = 0) -> Arg:
        c = self.peek()
        if c is None:
            raise self._fail("Missing argument.")
        if c == 0x22:  # "
            return self._quoted()
        if c == 0x7B:  # {
            return self._literal()
        if c == 0x28:  # (
            if depth >= 4:
                raise self._fail("Lists nested too deeply.")
            return self._list(depth + 1)
        return self.parse_atom()

    def _quoted(self) -> bytes:
        m = _QUOTED.match(self._text, self.pos)
        if m is None:
            rest = self._text[self.pos + 1 :]
            if b"\\" in rest and _BAD_ESCAPE.search(rest):
                raise self._fail("Invalid escape in quoted string.")
            if b'"' in rest:
                raise self._fail("Invalid character in quoted string.")
            raise self._fail("Unterminated quoted string.")
        self.pos = m.end()
        body = m.group(1)
        return _UNESCAPE.sub(rb"\1", body) if b"\\" in body else body

    def _literal(self) -> bytes:
        m = _LITERAL_AT_END.search(self._text, self.pos)
        if m is None or m.start() != self.pos:
            raise self._fail("Invalid literal.")
        if self.index + 1 >= len(self.segments):
            raise _Incomplete()
        value = self.segments[self.index + 1]
        self.index += 2
        self.pos = 0
        return value

    def _list(self, depth: int) -> list[Arg]:
        self.pos += 1  # (
        items: list[Arg] = []
        if self.peek() == 0x29:
            self.pos += 1
            return items
        while True:
            items.append(self.parse_value(depth))
            c = self.peek()
            if c == 0x29:  # )
                self.pos += 1
                return items
            self.space()


def _parse(segments: list[bytes]) -> Command:
    """Parse a complete command; raise L{_Syntax} or L{_Incomplete}."""
    t = _Tokenizer(segments)
    tag = t.parse_tag()
    t.space()
    name = t.parse_atom()
    args: list[Arg] = []
    while not t.at_end():
        t.space()
        if t.at_end():  # a trailing space: tolerated, clients send it
            break
        args.append(t.parse_value())
    return Command(tag, name.decode("ascii", "replace").upper(), tuple(args))


def _tag_of(line: bytes) -> bytes | None:
    """The tag of a line we could not parse, if it has a usable one (for C{tag BAD})."""
    tag, sep, _ = line.partition(b" ")
    if sep and tag and not any(c in _TAG_EXCLUDED for c in tag):
        return tag
    return None


class CommandReader:
    """Assembles client bytes into L{Event}s; also reads the bare lines of SASL exchanges.

    @param max_line: longest command line (without literals) accepted before login.
    @param max_literal: largest literal accepted (user names and passwords are small).
    @param max_command: all lines and literals of one command together.
    """

    def __init__(
        self, max_line: int = 8192, max_literal: int = 8192, max_command: int = 32768
    ) -> None:
        self.max_line = max_line
        self.max_literal = max_literal
        self.max_command = max_command
        self._buffer = bytearray()
        self._segments: list[bytes] = []
        self._size = 0
        self._awaiting: int | None = None  # bytes of a literal still to read
        self._error: BadCommand | None = None  # the command is bad but its literals still arrive

    # ------------------------------------------------------------------ input

    def feed(self, data: bytes) -> None:
        self._buffer += data

    @property
    def buffered(self) -> int:
        """Bytes received and not yet consumed (pipelined commands, partial lines)."""
        return len(self._buffer)

    def take_buffer(self) -> bytes:
        """Everything not consumed yet, e.g. commands pipelined after LOGIN, for the back-end."""
        data = bytes(self._buffer)
        self._reset()
        self._buffer.clear()
        return data

    def discard(self) -> int:
        """Drop everything received and not consumed (after STARTTLS); return how much."""
        return len(self.take_buffer())

    def _reset(self) -> None:
        self._segments = []
        self._size = 0
        self._awaiting = None
        self._error = None

    # --------------------------------------------------------------- commands

    def next_command(self) -> Event | None:
        """The next event, or None until more bytes arrive."""
        while True:
            if self._awaiting is not None:
                n = self._awaiting
                if len(self._buffer) < n:
                    return None
                self._segments.append(bytes(self._buffer[:n]))
                del self._buffer[:n]
                self._awaiting = None
            line = self._take_line()
            if line is None:
                if len(self._buffer) > self.max_line:
                    return self._fatal("Line too long.")
                return None
            if isinstance(line, BadCommand):
                return line
            event = self._line(line)
            if event is not None:
                return event

    def _take_line(self) -> bytes | BadCommand | None:
        end = self._buffer.find(b"\n")
        if end < 0:
            return None
        if end > self.max_line:
            return self._fatal("Line too long.")
        line = bytes(self._buffer[:end])
        del self._buffer[: end + 1]
        if line.endswith(b"\r"):
            line = line[:-1]
        return line

    def _fatal(self, text: str) -> BadCommand:
        tag = _tag_of(self._segments[0]) if self._segments else None
        self._reset()
        self._buffer.clear()
        return BadCommand(tag, text, fatal=True)

    def _line(self, line: bytes) -> Event | None:
        if not line and not self._segments:
            return None  # a stray empty line between commands: harmless, ignored
        self._segments.append(line)
        self._size += len(line)
        m = _LITERAL_AT_END.search(line)
        if m is None:
            return self._complete()
        size, non_sync = int(m.group(1)), m.group(2) == b"+"
        if self._error is None:
            try:
                _parse(self._segments)
            except _Incomplete:
                pass
            except _Syntax as e:
                self._error = BadCommand(e.tag, e.text)
        if size > self.max_literal or self._size + size > self.max_command:
            if non_sync:
                return self._fatal("Literal too large.")
            tag = _tag_of(self._segments[0])
            self._reset()
            return BadCommand(tag, "Literal too large.")
        if self._error is not None and not non_sync:
            # the client waits for "+"; answering BAD instead ends the command
            error = self._error
            self._reset()
            return error
        self._size += size
        self._awaiting = size
        return None if non_sync else Continue()

    def _complete(self) -> Event:
        segments, error = self._segments, self._error
        self._reset()
        if error is not None:
            return error
        try:
            return _parse(segments)
        except _Syntax as e:
            return BadCommand(e.tag if e.tag is not None else _tag_of(segments[0]), e.text)
        except _Incomplete:  # pragma: no cover - a complete command has all its literals
            return BadCommand(_tag_of(segments[0]), "Invalid literal.")

    # -------------------------------------------------------------- SASL lines

    def next_line(self) -> bytes | BadCommand | None:
        """One bare line (a SASL response), CRLF removed; None until it is complete."""
        line = self._take_line()
        if line is None and len(self._buffer) > self.max_line:
            return self._fatal("Line too long.")
        return line
