"""Free loopback addresses and ports, so that test runs can go side by side."""

from __future__ import annotations

import random
import socket
import time


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on C{host} right now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def free_port_on_all(hosts: list[str]) -> int:
    """One port number free on every address in C{hosts} (back-ends share backend_port)."""
    for _ in range(200):
        port = free_port(hosts[0])
        ok = True
        for h in hosts[1:]:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                try:
                    s.bind((h, port))
                except OSError:
                    ok = False
                    break
        if ok:
            return port
    raise RuntimeError(f"no common free port on {hosts}")


def random_loopback_prefix() -> str:
    """A random C{127.x.y} prefix (x in 2..250) so parallel runs get distinct back-end addresses."""
    rng = random.SystemRandom()
    return f"127.{rng.randint(2, 250)}.{rng.randint(1, 250)}"


def wait_for_port(host: str, port: int, timeout: float = 20.0) -> None:
    """Block until something accepts on C{host:port}, or raise TimeoutError."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s")
