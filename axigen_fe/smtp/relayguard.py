"""Keep an authenticated submission session from changing who it is.

After AUTH the node tells the user's Postfix who the client is with C{XCLIENT LOGIN=...}
and then relays the session. Postfix honours XCLIENT from the node's address at any
time outside a mail transaction, so without a guard a logged-in user could send
C{XCLIENT LOGIN=someone-else} (or C{XFORWARD}, or C{STARTTLS} to hide the rest of the
session from the node) straight through the relay and send mail as anyone.

L{CommandGuard} reads the client's side of the relay just enough to tell commands from
message content: command lines, a DATA body up to its lone dot, BDAT chunks by their
announced size. A refused command is replaced by a line the back-end answers with an
error (Postfix: C{500 5.5.2} command not recognized), so replies stay in command order
even when the client pipelines.

DATA is the one command whose effect depends on the back-end's answer (C{354} starts a
body, anything else does not), so the guard holds the client's next bytes until that
answer has come (RFC 2920 requires the client to wait for it anyway) and counts the
back-end's replies to know which one it is. Until then nothing the client sends can be
taken for message content while the back-end reads it as commands.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

#: commands an authenticated client may not send through the relay
REFUSED_VERBS = frozenset({b"XCLIENT", b"XFORWARD", b"STARTTLS"})
#: what goes to the back-end instead: no such command, so it answers 500 5.5.2
REFUSED_LINE = b"X-REFUSED-BY-PROXY\r\n"
#: a command line longer than this is cut off and refused (RFC 5321 allows 512 octets)
MAX_COMMAND_LINE = 4096

_END_OF_BODY = b"\r\n.\r\n"


class Mode(enum.Enum):
    COMMANDS = "commands"
    WAITING = "waiting for the answer to DATA"
    BODY = "DATA body"
    CHUNK = "BDAT chunk"


@dataclass
class Forward:
    """What L{CommandGuard.from_client} decided for one chunk of client bytes.

    @ivar data: the bytes to send to the back-end now.
    @ivar held: bytes to give back to the guard once L{CommandGuard.from_backend} says
        the answer to DATA has come (the caller stops reading meanwhile).
    @ivar refused: the verbs refused in this chunk, for the log.
    """

    data: bytes
    held: bytes = b""
    refused: list[str] = field(default_factory=list)


class CommandGuard:
    """Watches one submission relay (see the module docstring)."""

    def __init__(self) -> None:
        self.mode = Mode.COMMANDS
        self._line = b""
        self._skipping = False
        self._chunk_left = 0
        self._tail = b""
        self._outstanding = 0  # commands sent whose reply has not been seen yet
        self._reply = b""  # a reply line not complete yet

    # ------------------------------------------------------------------- client side

    def from_client(self, data: bytes) -> Forward:
        out: list[bytes] = []
        refused: list[str] = []
        i, n = 0, len(data)
        while i < n:
            mode = self.mode
            if mode is Mode.WAITING:
                return Forward(b"".join(out), data[i:], refused)
            if mode is Mode.CHUNK:
                take = min(self._chunk_left, n - i)
                out.append(data[i : i + take])
                i += take
                self._chunk_left -= take
                if self._chunk_left == 0:
                    self.mode = Mode.COMMANDS
                continue
            if mode is Mode.BODY:
                i = self._body(data, i, out)
                continue
            end = data.find(b"\n", i)
            if self._skipping:  # the rest of a line refused as too long: dropped
                if end < 0:
                    break
                self._skipping = False
                i = end + 1
                continue
            if end < 0:
                self._line += data[i:]
                if len(self._line) > MAX_COMMAND_LINE:
                    # none of it has gone out: the back-end gets one refused line instead
                    self._line, self._skipping = b"", True
                    self._outstanding += 1
                    refused.append("an over-long command line")
                    out.append(REFUSED_LINE)
                break
            line, self._line = self._line + data[i : end + 1], b""
            i = end + 1
            out.append(self._command(line, refused))
        return Forward(b"".join(out), b"", refused)

    def _command(self, line: bytes, refused: list[str]) -> bytes:
        words = line.split(None, 1)
        verb = words[0].upper() if words else b""
        self._outstanding += 1
        if verb in REFUSED_VERBS:
            refused.append(verb.decode("ascii"))
            return REFUSED_LINE
        if verb == b"DATA":
            self.mode = Mode.WAITING
        elif verb == b"BDAT":
            size = _bdat_size(line)
            if size is None:
                refused.append("BDAT without a size")
                return REFUSED_LINE
            if size:
                self._chunk_left = size
                self.mode = Mode.CHUNK
        return line

    def _body(self, data: bytes, i: int, out: list[bytes]) -> int:
        """Pass body bytes up to and including the lone dot; return where commands resume."""
        window = self._tail + data[i:]
        found = window.find(_END_OF_BODY)
        if found < 0:
            out.append(data[i:])
            self._tail = window[-4:]
            return len(data)
        end = i + found + len(_END_OF_BODY) - len(self._tail)
        out.append(data[i:end])
        self._tail = b""
        self.mode = Mode.COMMANDS
        return end

    # ------------------------------------------------------------------ back-end side

    def from_backend(self, data: bytes) -> bool:
        """Count the back-end's replies; True when the answer to DATA has just come
        (the caller then feeds the held bytes back through L{from_client})."""
        answered = False
        start = 0
        text = self._reply + data
        while True:
            end = text.find(b"\n", start)
            if end < 0:
                break
            line = text[start : end + 1]
            start = end + 1
            if len(line) >= 4 and line[3:4] == b"-":
                continue  # a line of a multi-line reply: the reply goes on
            self._outstanding = max(0, self._outstanding - 1)
            if self.mode is Mode.WAITING and self._outstanding == 0:
                self.mode = Mode.BODY if line[:3] == b"354" else Mode.COMMANDS
                self._tail = b"\r\n"  # an empty body is just ".\r\n"
                answered = True
        self._reply = text[start:][-4096:]  # bounded: a reply line is short
        return answered


def _bdat_size(line: bytes) -> int | None:
    parts = line.split()
    if len(parts) < 2 or not parts[1].isdigit() or len(parts[1]) > 12:
        return None
    return int(parts[1])
