"""The embedded demo, as a user meets it: `twistd -n axigen-fe --demo`, then real clients.

One demo process per module (per xdist worker) on a random base port and random loopback
back-end addresses; `axigen-fe lookup` is pointed at it with a copy of etc/demo.toml
rendered for those ports, exactly as a user would use etc/demo.toml with the default ones.
"""

from __future__ import annotations

import imaplib
import json
import os
import poplib
import random
import smtplib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from axigen_fe.demo.config import render
from axigen_fe.demo.layout import DemoLayout
from tests.integration.node import twistd
from tests.integration.servers.ports import random_loopback_prefix, wait_for_port

pytestmark = pytest.mark.integration


@dataclass
class Demo:
    layout: DemoLayout
    process: subprocess.Popen[bytes]
    directory: Path
    config_file: Path

    @property
    def stdout_text(self) -> str:
        return (self.directory / "demo.stdout").read_text(encoding="utf-8", errors="replace")

    @property
    def log_text(self) -> str:
        return (self.directory / "demo.log").read_text(encoding="utf-8", errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()  # by PID: only the process this module started
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def _free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _pick_layout() -> DemoLayout:
    """A base port whose every derived port is free on its address (random, so parallel-safe)."""
    rng = random.SystemRandom()
    for _ in range(200):
        prefix = random_loopback_prefix()
        layout = DemoLayout(
            host="127.0.0.1",
            base_port=rng.randrange(20000, 60000, 10),
            backend_hosts=(f"{prefix}.11", f"{prefix}.12"),
        )
        wanted = [
            ("127.0.0.1", p)
            for p in (
                layout.imap_port,
                layout.pop3_port,
                layout.smtp_port,
                layout.submission_port,
                layout.ldap_port,
            )
        ]
        for host in layout.backend_hosts:
            wanted += [
                (host, p)
                for p in (
                    layout.backend_imap_port,
                    layout.backend_pop3_port,
                    layout.backend_smtp_port,
                    layout.backend_submission_port,
                )
            ]
        if all(_free(h, p) for h, p in wanted):
            return layout
    raise RuntimeError("no free demo port range found")


def _start(directory: Path) -> Demo:
    layout = _pick_layout()
    config_file = directory / "demo.toml"
    config_file.write_text(render(layout), encoding="utf-8")
    args = [
        twistd(), "-n", "--pidfile=", "--logfile", str(directory / "demo.log"),
        "axigen-fe", "--demo",
        "--demo-base-port", str(layout.base_port),
        "--demo-backends", ",".join(layout.backend_hosts),
    ]  # fmt: skip
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with open(directory / "demo.stdout", "wb") as out, open(directory / "demo.stderr", "wb") as err:
        proc = subprocess.Popen(args, cwd=directory, env=env, stdout=out, stderr=err)
    demo = Demo(layout, proc, directory, config_file)
    deadline = time.monotonic() + 30
    while "axigen-fe demo:" not in demo.stdout_text:
        if proc.poll() is not None or time.monotonic() > deadline:
            demo.stop()
            stderr = (directory / "demo.stderr").read_text()
            log = demo.log_text if (directory / "demo.log").exists() else ""
            raise RuntimeError(f"demo did not start (exit {proc.returncode}):\n{stderr}\n{log}")
        time.sleep(0.05)
    wait_for_port("127.0.0.1", layout.ldap_port, timeout=10)
    return demo


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    # A port can be taken between the check and the bind: try a few ranges.
    last: Exception | None = None
    for attempt in range(3):
        try:
            d = _start(tmp_path_factory.mktemp(f"demo{attempt}"))
        except RuntimeError as e:
            last = e
            continue
        try:
            yield d
        finally:
            d.stop()
        return
    raise AssertionError(f"the demo would not start: {last}")


def _cli() -> list[str]:
    candidate = Path(sys.executable).parent / "axigen-fe"
    return [str(candidate)] if candidate.exists() else [sys.executable, "-m", "axigen_fe.cli"]


def _lookup(demo: Demo, address: str, password: str | None = None) -> tuple[int, dict[str, object]]:
    args = [*_cli(), "lookup", "--config", str(demo.config_file)]
    if password is not None:
        args.append("--password-stdin")
    run = subprocess.run(
        [*args, address],
        input=None if password is None else f"{password}\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.stdout.strip(), f"no JSON on stdout; stderr:\n{run.stderr}"
    return run.returncode, json.loads(run.stdout)


# --- the banner -----------------------------------------------------------------


def test_banner_prints_ports_and_demo_credentials(demo: Demo) -> None:
    out = demo.stdout_text
    first = next(line for line in out.splitlines() if line.startswith("axigen-fe demo:"))
    assert "alice@demo.test/alice" in first and "bob@demo.test/bob" in first
    assert demo.layout.ldap_uri in out
    assert f"{demo.layout.backend_hosts[0]}: IMAP {demo.layout.backend_imap_port}" in out
    assert f"{demo.layout.backend_hosts[1]}: IMAP {demo.layout.backend_imap_port}" in out
    assert f"IMAP 127.0.0.1:{demo.layout.imap_port}" in first
    assert "import imaplib" in out
    assert f"POP3 127.0.0.1:{demo.layout.pop3_port}" in first
    assert "not started" not in out  # every proxy of the demo is there
    assert "axigen-fe demo:" in demo.log_text  # and the same in the log


# --- axigen-fe lookup against the demo directory --------------------------------


def test_lookup_routes_alice_to_backend_1(demo: Demo) -> None:
    code, result = _lookup(demo, "alice@demo.test")
    assert code == 0
    assert result["result"] == "routed"
    assert result["host"] == demo.layout.backend_hosts[0]
    assert result["usermap"] == "main"


def test_lookup_routes_bob_to_backend_2_whatever_the_case(demo: Demo) -> None:
    code, result = _lookup(demo, "Bob@Demo.Test")
    assert (code, result["result"], result["host"]) == (0, "routed", demo.layout.backend_hosts[1])


def test_lookup_with_the_right_password_routes(demo: Demo) -> None:
    code, result = _lookup(demo, "alice@demo.test", "alice")
    assert (code, result["result"], result["host"]) == (0, "routed", demo.layout.backend_hosts[0])


def test_lookup_with_a_wrong_password_is_bad_password(demo: Demo) -> None:
    code, result = _lookup(demo, "alice@demo.test", "bob")
    assert (code, result["result"], result["host"]) == (1, "bad-password", None)


def test_lookup_of_an_unknown_user(demo: Demo) -> None:
    code, result = _lookup(demo, "carol@demo.test")
    assert (code, result["result"]) == (1, "unknown-user")


# --- real clients through the demo node -----------------------------------------


def test_imap_alice_reaches_backend_1(demo: Demo) -> None:
    client = imaplib.IMAP4("127.0.0.1", demo.layout.imap_port, timeout=20)
    try:
        assert client.login("alice@demo.test", "alice")[0] == "OK"
        typ, count = client.select("INBOX")
        assert typ == "OK" and int(count[0] or b"0") >= 1
        typ, data = client.fetch("1", "(BODY.PEEK[])")
        assert typ == "OK"
        body = data[0][1]  # type: ignore[index]
        assert isinstance(body, bytes)
        assert b"Subject: Welcome to demo back-end 1" in body
    finally:
        client.logout()
    assert "demo back-end 1: IMAP login alice@demo.test" in demo.log_text


def test_imap_wrong_password_is_refused(demo: Demo) -> None:
    client = imaplib.IMAP4("127.0.0.1", demo.layout.imap_port, timeout=20)
    try:
        with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
            client.login("bob@demo.test", "alice")
    finally:
        client.shutdown()


def test_pop3_bob_reaches_backend_2(demo: Demo) -> None:
    client = poplib.POP3("127.0.0.1", demo.layout.pop3_port, timeout=20)
    try:
        client.user("bob@demo.test")
        assert client.pass_("bob").startswith(b"+OK")
        count, _size = client.stat()
        assert count >= 1
        _resp, lines, _octets = client.retr(1)
        assert b"Subject: Welcome to demo back-end 2" in lines
    finally:
        client.quit()
    assert "demo back-end 2: POP3 login bob@demo.test" in demo.log_text


def test_smtp_to_bob_lands_in_bobs_mailbox_on_backend_2(demo: Demo) -> None:
    subject = f"demo smtp test {random.randrange(10**9)}"
    with smtplib.SMTP("127.0.0.1", demo.layout.smtp_port, timeout=20) as smtp:
        smtp.sendmail(
            "someone@example.org",
            ["bob@demo.test"],
            f"Subject: {subject}\r\n\r\nhello bob\r\n".encode(),
        )
    client = poplib.POP3("127.0.0.1", demo.layout.pop3_port, timeout=20)
    try:
        client.user("bob@demo.test")
        client.pass_("bob")
        count, _ = client.stat()
        subjects = [
            line
            for i in range(1, count + 1)
            for line in client.top(i, 0)[1]
            if line.startswith(b"Subject:")
        ]
        assert f"Subject: {subject}".encode() in subjects
    finally:
        client.quit()


def test_submission_from_alice_reaches_bob_on_the_other_backend(demo: Demo) -> None:
    subject = f"demo submission test {random.randrange(10**9)}"
    with smtplib.SMTP("127.0.0.1", demo.layout.submission_port, timeout=20) as smtp:
        smtp.login("alice@demo.test", "alice")
        message = f"From: alice@demo.test\r\nSubject: {subject}\r\n\r\nhi bob\r\n"
        smtp.sendmail("alice@demo.test", ["bob@demo.test"], message.encode())
    client = imaplib.IMAP4("127.0.0.1", demo.layout.imap_port, timeout=20)
    try:
        client.login("bob@demo.test", "bob")
        client.select("INBOX")
        typ, found = client.search(None, "ALL")
        assert typ == "OK"
        typ, data = client.fetch(
            b",".join((found[0] or b"").split()).decode(), "(BODY.PEEK[HEADER])"
        )
        headers = b"".join(part[1] for part in data if isinstance(part, tuple))
        assert f"Subject: {subject}".encode() in headers
    finally:
        client.logout()
