"""What a back-end announced (POP3 CAPA, SMTP EHLO), remembered for a while.

One cache per service, keyed by back-end. Knowing the capabilities lets a session skip
a round trip before it logs in or forwards the client's address; the protocol drops an
entry as soon as an answer suggests it is stale. The cache is bounded: when full it
starts over, which costs one extra round trip per back-end, never a wrong answer.
"""

from __future__ import annotations

from typing import Generic, TypeVar

from twisted.internet.interfaces import IReactorTime

K = TypeVar("K")
V = TypeVar("V")


class TTLCache(Generic[K, V]):
    """Values per key for C{ttl} seconds, at most C{max_entries} of them."""

    def __init__(self, clock: IReactorTime, ttl: float = 300.0, max_entries: int = 4096) -> None:
        self._clock = clock
        self._ttl = ttl
        self._max = max_entries
        self._entries: dict[K, tuple[float, V]] = {}

    def get(self, key: K) -> V | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[0] <= self._clock.seconds():
            del self._entries[key]
            return None
        return entry[1]

    def put(self, key: K, value: V) -> None:
        if len(self._entries) >= self._max:
            self._entries.clear()
        self._entries[key] = (self._clock.seconds() + self._ttl, value)

    def forget(self, key: K) -> None:
        self._entries.pop(key, None)
