# mypy: disable-error-code="no-untyped-call"
# (twisted.mail.imap4 is untyped: calling into it is not an error here)
"""In-memory mailboxes shared by a demo back-end's IMAP, POP3 and SMTP servers.

Each user has one INBOX (more folders may be created over IMAP). SMTP appends, IMAP
reads/flags/expunges, POP3 works on a snapshot and expunges what it deleted at QUIT:
the same object model a real server has, minus the disk. Messages are kept as the raw
bytes they arrived as, so FETCH BODY[] and RETR hand them back byte for byte.
"""

from __future__ import annotations

import email
import email.message
import email.policy
import email.utils
import io
import itertools
from collections.abc import Iterable, Iterator
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.mail import imap4
from zope.interface import implementer

SYSTEM_FLAGS = ("\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft")

_uid_validity = itertools.count(1_700_000_000)


def _split(raw: bytes) -> tuple[bytes, bytes]:
    """Header block and body of an RFC 5322 message (CRLF or bare LF line ends)."""
    for sep in (b"\r\n\r\n", b"\n\n"):
        at = raw.find(sep)
        if at != -1:
            return raw[: at + len(sep)], raw[at + len(sep) :]
    return raw, b""


class _Part:
    """The IMAP view of a MIME part: headers, body, sub-parts (for BODYSTRUCTURE)."""

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        self._header, self._body = _split(raw)
        self._parsed = email.message_from_bytes(raw, policy=email.policy.compat32)

    def getHeaders(self, negate: bool, *names: str) -> dict[str, str]:
        wanted = {
            n.lower() if isinstance(n, str) else n.decode("ascii", "replace").lower() for n in names
        }
        headers: dict[str, str] = {}
        for key, value in self._parsed.items():
            k = key.lower()
            if (k not in wanted) if negate else (k in wanted):
                headers.setdefault(k, str(value))
        return headers

    def getBodyFile(self) -> io.BytesIO:
        return io.BytesIO(self._body)

    def getSize(self) -> int:
        return len(self.raw)

    def isMultipart(self) -> bool:
        return self._parsed.is_multipart()

    def getSubPart(self, part: int) -> _Part:
        payload = self._parsed.get_payload()
        if not isinstance(payload, list) or not 0 <= part < len(payload):
            raise IndexError(part)
        sub = payload[part]
        assert isinstance(sub, email.message.Message)
        return _Part(sub.as_bytes())


@implementer(imap4.IMessage, imap4.IMessageFile)
class StoredMessage(_Part):
    """One message in a mailbox: raw bytes, a UID, flags and its arrival time."""

    def __init__(self, uid: int, raw: bytes, flags: Iterable[str], internal_date: str) -> None:
        super().__init__(raw)
        self.uid = uid
        self.flags: list[str] = list(flags)
        self.internal_date = internal_date

    def getUID(self) -> int:
        return self.uid

    def getFlags(self) -> list[str]:
        return list(self.flags)

    def getInternalDate(self) -> str:
        return self.internal_date

    def open(self) -> io.BytesIO:
        return io.BytesIO(self.raw)


@implementer(imap4.IMailbox, imap4.IMailboxInfo)
class Mailbox:
    """One folder; listeners (selected IMAP sessions) hear of new messages."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.messages: list[StoredMessage] = []
        self.uid_validity = next(_uid_validity)
        self.next_uid = 1
        self.listeners: list[Any] = []

    # --- writing -----------------------------------------------------------
    def deliver(self, raw: bytes, flags: Iterable[str] = (), date: str | None = None) -> int:
        """Append C{raw}; returns its UID and tells the selected sessions (EXISTS)."""
        uid = self.next_uid
        self.next_uid += 1
        self.messages.append(
            StoredMessage(uid, raw, flags, date or email.utils.formatdate(localtime=True))
        )
        for listener in list(self.listeners):
            listener.newMessages(len(self.messages), None)
        return uid

    def remove_uids(self, uids: set[int]) -> list[int]:
        """Drop messages by UID; returns their former sequence numbers, highest first.

        Highest first because each EXPUNGE response renumbers the messages after it.
        """
        gone = [seq for seq, m in enumerate(self.messages, 1) if m.uid in uids]
        self.messages = [m for m in self.messages if m.uid not in uids]
        return sorted(gone, reverse=True)

    # --- IMailboxInfo / IMailbox -----------------------------------------------
    def getFlags(self) -> list[str]:
        return list(SYSTEM_FLAGS)

    def getHierarchicalDelimiter(self) -> str:
        return "/"

    def getUIDValidity(self) -> int:
        return self.uid_validity

    def getUIDNext(self) -> int:
        return self.next_uid

    def getUID(self, message: int) -> int:
        return self.messages[message - 1].uid

    def getMessageCount(self) -> int:
        return len(self.messages)

    def getRecentCount(self) -> int:
        return 0

    def getUnseenCount(self) -> int:
        return sum(1 for m in self.messages if "\\Seen" not in m.flags)

    def isWriteable(self) -> bool:
        return True

    def destroy(self) -> None:
        self.messages = []

    def requestStatus(self, names: Iterable[str]) -> dict[str, int]:
        return imap4.statusRequestHelper(self, names)  # type: ignore[no-any-return]

    def addListener(self, listener: Any) -> None:
        self.listeners.append(listener)

    def removeListener(self, listener: Any) -> None:
        if listener in self.listeners:
            self.listeners.remove(listener)

    def addMessage(
        self, message: Any, flags: Iterable[str] = (), date: str | None = None
    ) -> Deferred[int]:
        raw = message if isinstance(message, bytes) else message.read()
        return succeed(
            self.deliver(raw, [f.decode() if isinstance(f, bytes) else f for f in flags], date)
        )

    def expunge(self) -> list[int]:
        return self.remove_uids({m.uid for m in self.messages if "\\Deleted" in m.flags})

    def _matching(
        self, messages: imap4.MessageSet, uid: bool
    ) -> Iterator[tuple[int, StoredMessage]]:
        if self.messages:
            try:  # "*" means the highest number in use
                messages.last = self.messages[-1].uid if uid else len(self.messages)
            except ValueError:  # already set by the caller
                pass
        for seq, m in enumerate(self.messages, 1):
            if (m.uid if uid else seq) in messages:
                yield seq, m

    def fetch(self, messages: imap4.MessageSet, uid: bool) -> list[tuple[int, StoredMessage]]:
        return list(self._matching(messages, uid))

    def store(
        self, messages: imap4.MessageSet, flags: Iterable[str], mode: int, uid: bool
    ) -> dict[int, list[str]]:
        flags = list(flags)
        result: dict[int, list[str]] = {}
        for seq, m in self._matching(messages, uid):
            if mode == 0:
                m.flags = list(flags)
            elif mode > 0:
                m.flags += [f for f in flags if f not in m.flags]
            else:
                m.flags = [f for f in m.flags if f not in flags]
            result[seq] = list(m.flags)
        return result


class Account(imap4.MemoryAccount):
    """A user's folders; INBOX always exists."""

    def __init__(self, address: str) -> None:
        super().__init__(address)
        self.addMailbox("INBOX")

    def _emptyMailbox(self, name: str, id: int) -> Mailbox:
        return Mailbox(name)

    @property
    def inbox(self) -> Mailbox:
        box = self.mailboxes["INBOX"]
        assert isinstance(box, Mailbox)
        return box


class MailStore:
    """All mailboxes of one back-end, by lower-case address."""

    def __init__(self, addresses: Iterable[str]) -> None:
        self.accounts = {a.lower(): Account(a.lower()) for a in addresses}

    def account(self, address: str) -> Account | None:
        return self.accounts.get(address.lower())
