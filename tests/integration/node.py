"""Run a real axigen-fe node (C{twistd -n axigen-fe --config ...}) as a subprocess.

Integration tests talk to the node with blocking real clients (imaplib, poplib,
smtplib, swaks), so the node runs in its own process, exactly as operators start it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.integration.servers.ports import wait_for_port


@dataclass
class Node:
    """A started node; C{stop()} ends it by PID (SIGTERM, then SIGKILL)."""

    config_file: Path
    log_file: Path
    process: subprocess.Popen[bytes]
    ports: list[tuple[str, int]] = field(default_factory=list)

    def log_text(self) -> str:
        return self.log_file.read_text(encoding="utf-8", errors="replace")

    def wait_for_log(self, needle: str, timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log_text()
            if needle in text:
                return text
            time.sleep(0.05)
        raise AssertionError(
            f"{needle!r} not in node log after {timeout}s:\n{self.log_text()[-3000:]}"
        )

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    def pid(self) -> int:
        return self.process.pid


def twistd() -> str:
    candidate = Path(sys.executable).parent / "twistd"
    return str(candidate) if candidate.exists() else "twistd"


def start_node(
    directory: Path,
    config_text: str,
    wait: list[tuple[str, int]],
    *,
    extra_args: list[str] | None = None,
) -> Node:
    """Write C{config_text} to C{directory}/node.toml, start twistd, wait for C{wait} ports."""
    directory.mkdir(parents=True, exist_ok=True)
    config_file = directory / "node.toml"
    config_file.write_text(config_text, encoding="utf-8")
    log_file = directory / "node.log"
    # AXFE_TWISTD_ARGS: extra twistd options for a look inside, e.g.
    # "--profile=/tmp/node.prof --profiler=cprofile --savestats"
    twistd_args = os.environ.get("AXFE_TWISTD_ARGS", "").split()
    args = [twistd(), "-n", "--pidfile=", "--logfile", str(log_file), *twistd_args]
    args += ["axigen-fe", "--config", str(config_file)]
    args += extra_args or []
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    proc = subprocess.Popen(
        args,
        cwd=directory,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(directory / "node.stderr", "wb"),
    )
    node = Node(config_file, log_file, proc, list(wait))
    try:
        for host, port in wait:
            deadline = time.monotonic() + 20
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(
                        f"node exited with {proc.returncode}:\n"
                        f"{(directory / 'node.stderr').read_text()}\n"
                        f"{log_file.read_text() if log_file.exists() else ''}"
                    )
                try:
                    wait_for_port(host, port, timeout=0.5)
                    break
                except TimeoutError:
                    if time.monotonic() > deadline:
                        raise
    except BaseException:
        node.stop()
        raise
    return node
