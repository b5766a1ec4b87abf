"""The Local File user map: C{address host[:port] [{SCHEME}hash]} lines.

The file is re-read when it changes (checked at most once a second, on lookup), so an
operator edits it in place without a restart. A broken new version never replaces a
working table: the old one stays and the log says which line is wrong.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from axigen_fe.usermap import results
from axigen_fe.usermap.interface import IUserMap, LookupResult, normalize_address
from axigen_fe.usermap.passwords import Verdict, scheme_of, verify


@dataclass(frozen=True)
class FileEntry:
    host: str
    stored_password: str | None


class FileMapError(ValueError):
    """A line of the map file cannot be understood."""


def parse_map(text: str, source: str) -> dict[str, FileEntry]:
    """Parse the map; keys are lower-case addresses or C{*@domain} wildcards."""
    table: dict[str, FileEntry] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        if len(fields) not in (2, 3):
            raise FileMapError(
                f"{source}:{number}: expected 'address host[:port] [{{SCHEME}}hash]', "
                f"got {len(fields)} fields"
            )
        address, host = normalize_address(fields[0]), fields[1]
        if address.count("@") != 1 or address.endswith("@") or (address.startswith("@")):
            raise FileMapError(f"{source}:{number}: {fields[0]!r} is not an address or *@domain")
        if "*" in address and not address.startswith("*@"):
            raise FileMapError(
                f"{source}:{number}: only '*@domain' wildcards are allowed, not {fields[0]!r}"
            )
        table[address] = FileEntry(host, fields[2] if len(fields) == 3 else None)
    return table


@implementer(IUserMap)
class FileUserMap:
    """Routes from a local file; exact addresses beat C{*@domain} lines."""

    log = Logger()
    checks_passwords_always = False
    _CHECK_INTERVAL = 1.0

    def __init__(self, name: str, path: Path, clock: IReactorTime) -> None:
        self.name = name
        self._path = path
        self._clock = clock
        self._table: dict[str, FileEntry] = {}
        self._signature: tuple[int, int, int] | None = None
        self._checked_at = float("-inf")
        self._load(initial=True)

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self._path)
        except OSError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def _load(self, initial: bool = False) -> None:
        signature = self._stat()
        try:
            text = self._path.read_text(encoding="utf-8")
            table = parse_map(text, str(self._path))
        except (OSError, UnicodeDecodeError, FileMapError) as e:
            if initial:
                raise FileMapError(str(e)) from e
            self.log.error(
                "usermap {name}: keeping the previous table ({count} entries); "
                "the new {path} is invalid: {why}",
                name=self.name,
                count=len(self._table),
                path=str(self._path),
                why=str(e),
            )
            self._signature = signature  # don't re-log every lookup; the next edit is re-read
            return
        if not initial:
            self.log.info(
                "usermap {name}: reloaded {path} ({count} entries)",
                name=self.name,
                path=str(self._path),
                count=len(table),
            )
        self._table = table
        self._signature = signature

    def reload_if_changed(self) -> None:
        """Re-read the file when its inode, mtime or size changed."""
        now = self._clock.seconds()
        if now - self._checked_at < self._CHECK_INTERVAL:
            return
        self._checked_at = now
        if self._stat() != self._signature:
            self._load()

    def lookup(self, address: str, password: bytes | None = None) -> Deferred[LookupResult]:
        self.reload_if_changed()
        key = normalize_address(address)
        entry = self._table.get(key)
        if entry is None and "@" in key:
            entry = self._table.get("*@" + key.rsplit("@", 1)[1])
        if entry is None:
            return succeed(results.unknown(address, "not in the map file"))
        if password is not None and entry.stored_password is not None:
            verdict = verify(entry.stored_password, password)
            if verdict is Verdict.UNKNOWN_SCHEME:
                self.log.error(
                    "usermap {name}: {address} has a password in the unknown scheme {scheme}",
                    name=self.name,
                    address=address,
                    scheme=scheme_of(entry.stored_password),
                )
                return succeed(results.bad_password(address, "unknown password scheme"))
            if verdict is Verdict.MISMATCH:
                return succeed(results.bad_password(address))
        checked = password is not None and entry.stored_password is not None
        detail = "file" if checked or password is None else "file, no password stored"
        return succeed(results.routed(address, entry.host, detail, password_checked=checked))
