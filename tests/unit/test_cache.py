"""The cache: TTLs, no cached tempfails, one lookup in flight, no cleartext kept."""

from __future__ import annotations

from twisted.internet.task import Clock

from axigen_fe.usermap.cache import CachingUserMap
from axigen_fe.usermap.interface import LookupResult, Outcome
from axigen_fe.usermap.memory import MemoryUserMap


def _map(ttl: float = 60, neg: float = 10) -> tuple[MemoryUserMap, CachingUserMap, Clock]:
    inner = MemoryUserMap({"a@x.test": ("h1", "{PLAIN}pw")})
    clock = Clock()
    return inner, CachingUserMap(inner, clock, ttl, neg), clock


def _get(m: CachingUserMap, addr: str, pw: bytes | None = None) -> LookupResult:
    out: list[LookupResult] = []
    m.lookup(addr, pw).addCallback(out.append)
    return out[0]


def test_routed_answers_are_reused_until_the_ttl_expires() -> None:
    inner, cache, clock = _map()
    assert _get(cache, "a@x.test", b"pw").outcome is Outcome.ROUTED
    assert _get(cache, "A@X.TEST", b"pw").outcome is Outcome.ROUTED
    assert len(inner.lookups) == 1
    clock.advance(61)
    _get(cache, "a@x.test", b"pw")
    assert len(inner.lookups) == 2


def test_a_cached_answer_keeps_whether_the_password_was_checked() -> None:
    inner, cache, _ = _map()
    inner.users["b@x.test"] = ("h2", None)  # routing only
    for _ in range(2):  # the inner answer, then the cached one
        assert _get(cache, "a@x.test", b"pw").password_checked
        assert not _get(cache, "b@x.test", b"pw").password_checked
    assert len(inner.lookups) == 2


def test_a_different_password_is_a_different_question() -> None:
    inner, cache, _ = _map()
    assert _get(cache, "a@x.test", b"pw").outcome is Outcome.ROUTED
    assert _get(cache, "a@x.test", b"bad").outcome is Outcome.BAD_PASSWORD
    assert len(inner.lookups) == 2


def test_negative_answers_use_the_negative_ttl_and_tempfails_are_not_cached() -> None:
    inner, cache, clock = _map()
    assert _get(cache, "nobody@x.test").outcome is Outcome.UNKNOWN_USER
    _get(cache, "nobody@x.test")
    assert len(inner.lookups) == 1
    clock.advance(11)
    _get(cache, "nobody@x.test")
    assert len(inner.lookups) == 2
    inner.outage = "directory down"
    assert _get(cache, "b@x.test").outcome is Outcome.TEMPFAIL
    assert _get(cache, "b@x.test").outcome is Outcome.TEMPFAIL
    assert len(inner.lookups) == 4


def test_concurrent_identical_lookups_share_one_inner_lookup() -> None:
    inner, cache, _ = _map()
    inner.pending = []
    got: list[LookupResult] = []
    for _ in range(5):
        cache.lookup("a@x.test", b"pw").addCallback(got.append)
    assert len(inner.lookups) == 1 and got == []
    inner.pending[0].callback(None)
    assert len(got) == 5 and all(r.outcome is Outcome.ROUTED for r in got)


def test_the_cache_holds_no_cleartext_password() -> None:
    _, cache, _ = _map()
    _get(cache, "a@x.test", b"pw-in-clear")
    assert b"pw-in-clear" not in repr(cache._entries).encode()
    for _, digest in cache._entries:
        assert digest is not None and b"pw-in-clear" not in digest
