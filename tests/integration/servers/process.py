"""What every test server started as our own child shares: stop by PID, read its log."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any


class ServerProcess:
    """Mixin for a server whose foreground process is C{self.process} and log C{self.log_file}.

    C{name} says which server a timeout message is about; C{stop_timeout} is how long
    a clean stop may take before SIGKILL.
    """

    process: subprocess.Popen[Any] | None
    log_file: Path
    stop_timeout: float = 10.0

    @property
    def name(self) -> str:
        return type(self).__name__.lower()

    def request_stop(self) -> None:
        """Send SIGTERM (by PID) without waiting: stop several at once."""
        proc = self.process
        if proc is not None and proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)

    def stop(self, timeout: float | None = None) -> None:
        """SIGTERM our child and wait for it to exit; SIGKILL if it lingers."""
        proc = self.process
        if proc is None:
            return
        self.request_stop()
        try:
            proc.wait(self.stop_timeout if timeout is None else timeout)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(5)
        self.process = None

    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_text(self) -> str:
        try:
            return self.log_file.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def wait_for_log(self, needle: str, timeout: float = 10.0) -> str:
        """Poll the log until C{needle} appears (servers log asynchronously); return it all."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.log_text()
            if needle in text:
                return text
            if time.monotonic() > deadline:
                raise TimeoutError(f"{needle!r} not in the {self.name} log:\n{text[-4000:]}")
            time.sleep(0.05)
