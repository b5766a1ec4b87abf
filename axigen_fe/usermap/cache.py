"""A caching front for any user map: TTLs, and one lookup in flight per question.

The cache never holds a cleartext password. A password check is keyed by an HMAC of
the password under a per-process random key, so a memory dump shows neither the
password nor a hash that can be attacked offline without that key.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import replace

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer

from axigen_fe.usermap.interface import IUserMap, LookupResult, Outcome, normalize_address

_Key = tuple[str, bytes | None]


@implementer(IUserMap)
class CachingUserMap:
    """Wraps C{inner}; routed answers live C{ttl} s, unknown/bad ones C{negative_ttl} s.

    Temporary failures are never cached: the next client must get a fresh try.
    """

    def __init__(
        self,
        inner: IUserMap,
        clock: IReactorTime,
        ttl: float,
        negative_ttl: float,
        max_entries: int = 100_000,
    ) -> None:
        self._inner = inner
        self._clock = clock
        self._ttl = ttl
        self._negative_ttl = negative_ttl
        self._max = max_entries
        self._secret = os.urandom(32)
        self._entries: dict[_Key, tuple[float, LookupResult]] = {}
        self._in_flight: dict[_Key, list[Deferred[LookupResult]]] = {}
        self.name = inner.name
        self.checks_passwords_always = inner.checks_passwords_always

    def _key(self, address: str, password: bytes | None) -> _Key:
        digest = (
            None if password is None else hmac.new(self._secret, password, hashlib.sha256).digest()
        )
        return (normalize_address(address), digest)

    def lookup(self, address: str, password: bytes | None = None) -> Deferred[LookupResult]:
        key = self._key(address, password)
        now = self._clock.seconds()
        hit = self._entries.get(key)
        if hit is not None:
            expires, result = hit
            if now < expires:
                return succeed(replace(result, address=address, detail=result.detail + " (cached)"))
            del self._entries[key]
        waiters = self._in_flight.get(key)
        mine: Deferred[LookupResult] = Deferred()
        if waiters is not None:
            waiters.append(mine)
            return mine
        self._in_flight[key] = [mine]
        self._inner.lookup(address, password).addBoth(self._finished, key)
        return mine

    def _finished(self, result: LookupResult | object, key: _Key) -> None:
        waiters = self._in_flight.pop(key, [])
        if not isinstance(result, LookupResult):  # an inner map broke its promise never to fail
            result = LookupResult(key[0], Outcome.TEMPFAIL, detail=f"user map error: {result}")
        ttl = self._ttl if result.outcome is Outcome.ROUTED else self._negative_ttl
        if result.outcome is not Outcome.TEMPFAIL and ttl > 0:
            if len(self._entries) >= self._max:
                self._evict()
            self._entries[key] = (self._clock.seconds() + ttl, result)
        for d in waiters:
            d.callback(result)

    def _evict(self) -> None:
        """Drop expired entries, then the oldest half if still full (dicts keep insertion order)."""
        now = self._clock.seconds()
        for k in [k for k, (exp, _) in self._entries.items() if exp <= now]:
            del self._entries[k]
        if len(self._entries) >= self._max:
            for k in list(self._entries)[: self._max // 2]:
                del self._entries[k]

    def clear(self) -> None:
        """Forget everything (reload on SIGHUP)."""
        self._entries.clear()
