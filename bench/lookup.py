#!/usr/bin/env python3
"""User-map lookups against a real slapd: the node's pooled connector vs python-ldap.

Starts its own slapd (with N generated users) and measures, in one run:
  - cold lookups/s (distinct users, search + {SSHA} verify) through LDAPPasswordUserMap
    on the pooled connector, with C concurrent lookups;
  - warm lookups/s through the cache in front of it;
  - python-ldap (libldap), one persistent bound connection, the same searches + verify:
    synchronous, and asynchronous with C searches outstanding;
  - cold-lookup latency p50/p99 when paced at half the saturating rate.
Prints markdown tables with ratios. Needs python-ldap (pip install '.[bench]').

    python bench/lookup.py [--users 2000] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench._common import machine, percentile, table  # noqa: E402
from tests.integration.directory_data import PEOPLE_DN, PROXY_DN, PROXY_PASSWORD, USERS, User  # noqa: E402
from tests.integration.servers.pki import make_ca  # noqa: E402
from tests.integration.servers.slapd import start_slapd  # noqa: E402


def bench_users(n: int) -> list[User]:
    return [User(f"bench{i}", f"bench{i}@example.com", f"pw-{i}", "SSHA", "a") for i in range(n)]


def run_node_side(uri: str, users: list[User], concurrency: int) -> dict[str, Any]:
    from twisted.internet import defer, reactor, task

    from axigen_fe.config.model import LDAPConnectorConfig
    from axigen_fe.ops.gctune import freeze_startup_heap, tune_for_serving

    tune_for_serving()  # as twistd -n axigen-fe does
    freeze_startup_heap()
    from axigen_fe.ldap.connector import LDAPConnector
    from axigen_fe.usermap.cache import CachingUserMap
    from axigen_fe.usermap.ldap_password import LDAPPasswordUserMap

    cfg = LDAPConnectorConfig(
        name="bench",
        uris=(uri,),
        base_dn=PEOPLE_DN,
        bind_dn=PROXY_DN,
        bind_password=PROXY_PASSWORD,
        pool_size=4,
    )
    out: dict[str, Any] = {}

    async def timed(m: Any, u: User, lat: list[float]) -> None:
        t0 = time.perf_counter()
        r = await m.lookup(u.address, u.password.encode())
        lat.append(time.perf_counter() - t0)
        assert r.routed, r

    async def saturate(m: Any, batch: list[User]) -> tuple[float, list[float]]:
        lat: list[float] = []
        it = iter(batch)

        async def worker() -> None:
            for u in it:
                await timed(m, u, lat)

        t0 = time.perf_counter()
        await defer.gatherResults(
            [defer.Deferred.fromCoroutine(worker()) for _ in range(concurrency)]
        )
        return len(batch) / (time.perf_counter() - t0), lat

    async def paced(m: Any, batch: list[User], rate: float) -> list[float]:
        lat: list[float] = []
        ds = []
        start = time.perf_counter()
        for i, u in enumerate(batch):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await task.deferLater(reactor, delay, lambda: None)
            ds.append(defer.Deferred.fromCoroutine(timed(m, u, lat)))
        await defer.gatherResults(ds)
        return lat

    async def main() -> None:
        connector = LDAPConnector(reactor, cfg)
        plain = LDAPPasswordUserMap("bench", connector, cfg)
        half = len(users) // 2
        await saturate(plain, users[:50])  # open the pool
        cold_rate, cold_lat = await saturate(plain, users[:half])
        cache = CachingUserMap(plain, reactor, 600, 60)
        await saturate(cache, users)  # prime
        warm_rate, warm_lat = await saturate(cache, users * 5)
        paced_lat = await paced(plain, users[half:], cold_rate / 2)
        await connector.close()
        out.update(
            cold_rate=cold_rate,
            cold_lat=cold_lat,
            warm_rate=warm_rate,
            warm_lat=warm_lat,
            paced_lat=paced_lat,
        )

    try:
        task.react(lambda r: defer.Deferred.fromCoroutine(main()))  # type: ignore[arg-type]
    except SystemExit as e:  # react() always exits; only a failure is news
        if e.code:
            raise
    return out


def ssha_ok(stored: bytes, password: bytes) -> bool:
    raw = base64.b64decode(stored[6:])
    return hashlib.sha1(password + raw[20:]).digest() == raw[:20]


def run_python_ldap(uri: str, users: list[User], concurrency: int) -> dict[str, Any]:
    import ldap  # type: ignore[import-not-found]
    from ldap.filter import escape_filter_chars  # type: ignore[import-not-found]

    conn = ldap.initialize(uri)
    conn.protocol_version = 3
    conn.simple_bind_s(PROXY_DN, PROXY_PASSWORD)
    attrs = ["mailHost", "userPassword"]
    half = len(users) // 2

    def one(u: User) -> None:
        res = conn.search_s(
            PEOPLE_DN, ldap.SCOPE_SUBTREE, f"(mail={escape_filter_chars(u.address)})", attrs
        )
        assert len(res) == 1 and ssha_ok(res[0][1]["userPassword"][0], u.password.encode())

    for u in users[:50]:
        one(u)
    lat = []
    t0 = time.perf_counter()
    for u in users[:half]:
        t1 = time.perf_counter()
        one(u)
        lat.append(time.perf_counter() - t1)
    sync_rate = half / (time.perf_counter() - t0)

    # asynchronous: keep `concurrency` searches outstanding on the one connection
    pending: dict[int, tuple[User, float]] = {}
    alat: list[float] = []
    it = iter(users[half:])
    t0 = time.perf_counter()
    done = 0

    def submit() -> bool:
        u = next(it, None)
        if u is None:
            return False
        msgid = conn.search_ext(
            PEOPLE_DN, ldap.SCOPE_SUBTREE, f"(mail={escape_filter_chars(u.address)})", attrs
        )
        pending[msgid] = (u, time.perf_counter())
        return True

    for _ in range(concurrency):
        submit()
    while pending:
        rtype, rdata, msgid, _ = conn.result3(ldap.RES_ANY, all=1)
        u, started = pending.pop(msgid)
        assert ssha_ok(rdata[0][1]["userPassword"][0], u.password.encode())
        alat.append(time.perf_counter() - started)
        done += 1
        submit()
    async_rate = done / (time.perf_counter() - t0)
    conn.unbind_s()
    return dict(sync_rate=sync_rate, sync_lat=lat, async_rate=async_rate, async_lat=alat)


def ms(x: float) -> float:
    return x * 1000.0


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--users", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=16)
    args = ap.parse_args()
    users = bench_users(args.users)
    with tempfile.TemporaryDirectory(prefix="axigen-bench-") as tmp:
        ca = make_ca(Path(tmp) / "pki")
        slapd = start_slapd(
            Path(tmp) / "slapd", ca, {"a": "127.0.0.1", "b": "127.0.0.1"}, users=list(USERS) + users
        )
        try:
            node = run_node_side(slapd.ldap_uri, users, args.concurrency)
            pyl = run_python_ldap(slapd.ldap_uri, users, args.concurrency)
        finally:
            slapd.stop()
    base = pyl["sync_rate"]
    rows = [
        [
            "python-ldap, 1 connection, synchronous",
            pyl["sync_rate"],
            1.0,
            ms(percentile(pyl["sync_lat"], 50)),
            ms(percentile(pyl["sync_lat"], 99)),
        ],
        [
            f"python-ldap, 1 connection, {args.concurrency} outstanding",
            pyl["async_rate"],
            pyl["async_rate"] / base,
            ms(percentile(pyl["async_lat"], 50)),
            ms(percentile(pyl["async_lat"], 99)),
        ],
        [
            f"node pooled connector, cold, {args.concurrency} concurrent",
            node["cold_rate"],
            node["cold_rate"] / base,
            ms(percentile(node["cold_lat"], 50)),
            ms(percentile(node["cold_lat"], 99)),
        ],
        [
            f"node cache, warm, {args.concurrency} concurrent",
            node["warm_rate"],
            node["warm_rate"] / base,
            ms(percentile(node["warm_lat"], 50)),
            ms(percentile(node["warm_lat"], 99)),
        ],
        [
            "node cold, paced at half the saturating rate",
            node["cold_rate"] / 2,
            "-",
            ms(percentile(node["paced_lat"], 50)),
            ms(percentile(node["paced_lat"], 99)),
        ],
    ]
    print(
        f"Machine: {machine()}; slapd with {args.users} extra users; "
        "lookups = search + {SSHA} verify\n"
    )
    print(
        table(
            "User-map lookups vs python-ldap (same slapd, same run)",
            ["client", "lookups/s", "x python-ldap sync", "p50 ms", "p99 ms"],
            rows,
        )
    )
    p50, p99 = percentile(node["paced_lat"], 50), percentile(node["paced_lat"], 99)
    print(
        table(
            "Targets",
            ["target", "measured", "met"],
            [
                [
                    "cold lookups/s >= python-ldap (sync)",
                    f"{node['cold_rate'] / base:.2f}x",
                    "yes" if node["cold_rate"] >= base else "no",
                ],
                [
                    "cold lookups/s >= python-ldap (16 outstanding)",
                    f"{node['cold_rate'] / pyl['async_rate']:.2f}x",
                    "yes" if node["cold_rate"] >= pyl["async_rate"] else "no",
                ],
                [
                    "warm >= 20x cold",
                    f"{node['warm_rate'] / node['cold_rate']:.1f}x",
                    "yes" if node["warm_rate"] >= 20 * node["cold_rate"] else "no",
                ],
                [
                    "paced cold p99 <= 2x p50",
                    f"{p99 / p50:.2f}x",
                    "yes" if p99 <= 2 * p50 else "no",
                ],
            ],
        )
    )


if __name__ == "__main__":
    main()
