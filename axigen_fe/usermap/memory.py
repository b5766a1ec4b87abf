"""An in-memory user map for unit tests and the demo: no I/O, answers set by the test."""

from __future__ import annotations

from twisted.internet.defer import Deferred, succeed
from zope.interface import implementer

from axigen_fe.usermap import results
from axigen_fe.usermap.interface import IUserMap, LookupResult, Outcome, normalize_address
from axigen_fe.usermap.passwords import Verdict, verify


@implementer(IUserMap)
class MemoryUserMap:
    """C{users} maps address -> (host[:port], stored password or None).

    Set C{outage} to make every lookup a TEMPFAIL (a directory that is down); the
    C{lookups} list records what was asked, so tests can check caching.
    """

    checks_passwords_always = False

    def __init__(self, users: dict[str, tuple[str, str | None]], name: str = "memory") -> None:
        self.name = name
        self.users = {normalize_address(a): v for a, v in users.items()}
        self.outage: str | None = None
        self.lookups: list[tuple[str, bytes | None]] = []
        self.pending: list[Deferred[LookupResult]] | None = None

    def lookup(self, address: str, password: bytes | None = None) -> Deferred[LookupResult]:
        self.lookups.append((address, password))
        result = self._answer(address, password)
        if self.pending is not None:
            d: Deferred[LookupResult] = Deferred()
            self.pending.append(d)
            d.addCallback(lambda _: result)
            return d
        return succeed(result)

    def _answer(self, address: str, password: bytes | None) -> LookupResult:
        if self.outage is not None:
            return results.tempfail(address, self.outage)
        entry = self.users.get(normalize_address(address))
        if entry is None:
            return results.unknown(address)
        host, stored = entry
        if (
            password is not None
            and stored is not None
            and verify(stored, password) is not Verdict.MATCH
        ):
            return LookupResult(address, Outcome.BAD_PASSWORD, detail="password mismatch")
        checked = password is not None and stored is not None
        return results.routed(address, host, "memory", password_checked=checked)
