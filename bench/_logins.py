"""The login load both mail benches run: N clients logging in as fast as they can.

Each bench passes its own C{one_login} (IMAP: LOGIN, SELECT, LOGOUT; POP3: USER, PASS,
STAT, QUIT); the warm-up, the measured window, latencies and proxy CPU are common.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from tests.integration.directory_data import User


@dataclass
class LoginRun:
    logins: int = 0
    errors: int = 0
    latencies: list[float] = field(default_factory=list)
    seconds: float = 0.0
    proxy_cpu: float | None = None

    @property
    def rate(self) -> float:
        return self.logins / self.seconds if self.seconds else 0.0

    @property
    def cpu_us_per_login(self) -> float | None:
        if self.proxy_cpu is None or not self.logins:
            return None
        return self.proxy_cpu / self.logins * 1e6


async def login_load(
    one_login: Callable[[str, int, User], Awaitable[None]],
    host: str,
    port: int,
    users: list[User],
    clients: int,
    seconds: float,
    warmup: float,
    cpu: Callable[[], float] | None,
) -> LoginRun:
    run = LoginRun()
    counter = 0
    measuring = False
    stop_at = 0.0

    async def worker() -> None:
        nonlocal counter
        while True:
            if stop_at and time.monotonic() >= stop_at:
                return
            u = users[counter % len(users)]
            counter += 1
            start = time.monotonic()
            try:
                await one_login(host, port, u)
            except (OSError, RuntimeError, asyncio.IncompleteReadError):
                if measuring:
                    run.errors += 1
                continue
            if measuring and time.monotonic() <= stop_at:
                run.logins += 1
                run.latencies.append(time.monotonic() - start)

    tasks = [asyncio.create_task(worker()) for _ in range(clients)]
    await asyncio.sleep(warmup)
    measuring = True
    cpu0 = cpu() if cpu else None
    t0 = time.monotonic()
    stop_at = t0 + seconds
    await asyncio.sleep(seconds)
    run.seconds = time.monotonic() - t0
    if cpu is not None and cpu0 is not None:
        run.proxy_cpu = cpu() - cpu0
    await asyncio.gather(*tasks)
    return run
