"""Free loopback addresses and ports, so that test runs can go side by side."""

from __future__ import annotations

import random
import socket
import time


def _ephemeral_range() -> tuple[int, int]:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low, high = (int(v) for v in f.read().split())
            return low, high
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


#: where L{free_port} looks: below the kernel's ephemeral range, above the demo's ports
_LOW_PORT = 20000
_HIGH_PORT = max(_ephemeral_range()[0], _LOW_PORT + 4000)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on C{host} right now, outside the ephemeral range.

    A port the kernel picks for C{bind(0)} comes from the range it also gives to outgoing
    connections: between this call and the server's own bind, any client connecting
    from the machine (another test, another run side by side) may be handed that very
    port, and the server then fails with "address in use". Below the range only another
    C{free_port} caller can pick the same number, one chance in several thousand.
    """
    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.randrange(_LOW_PORT, _HIGH_PORT)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port on {host} in {_LOW_PORT}..{_HIGH_PORT - 1}")


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
