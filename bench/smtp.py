#!/usr/bin/env python3
"""SMTP proxy benchmark: messages/s through the node vs directly to Postfix, node memory.

Run from the repository root as root (Postfix and Dovecot are started here, as in the
integration tests)::

    /tmp/venv/bin/python bench/smtp.py [--seconds 10] [--clients 8] [--big-mib 50]

It starts, on a loopback address of its own, one Dovecot and one Postfix back-end (the
integration-test servers, Postfix with no message size limit) and an axigen-fe node
(twistd, as operators run it) with a file user map and an inbound [smtp] service that
forwards the client address with XCLIENT, plaintext on both legs.

Throughput: C{--clients} client processes (smtplib) each send messages in a loop for
C{--seconds}: connect, EHLO, then MAIL, RCPT, DATA for 1 or 10 messages, QUIT. With one
message per connection (most MX traffic) every message through the node also opens a
back-end session (greeting, XCLIENT, EHLO; the first one per back-end also EHLO before
XCLIENT); with 10 the node reuses its back-end session. 10 kB and 1 MB messages, direct
and through the node, alternating direct/node twice and taking the better run of each
(each run after an unmeasured warm-up run of C{--warmup} seconds). Postfix hands the mail
to the C{discard} transport, so the numbers measure the SMTP leg the node sits in, not
mailbox delivery. Node CPU per message is its utime+stime over the run / messages.

Memory: one C{--big-mib} MB message through the node while its VmRSS is sampled every
10 ms; the growth over the idle baseline is what a streaming proxy must keep small.

Client, node and Postfix share the machine's cores: compare ratios within one run.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import smtplib
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from _common import cpu_seconds, machine, remove_work_dirs, rss_kib, table  # noqa: E402

from tests.integration.directory_data import User  # noqa: E402
from tests.integration.node import Node, start_node  # noqa: E402
from tests.integration.servers.dovecot import make_dovecots, make_root_dir  # noqa: E402
from tests.integration.servers.pki import make_ca  # noqa: E402
from tests.integration.servers.ports import free_port, random_loopback_prefix  # noqa: E402
from tests.integration.servers.postfix import Postfix, make_postfixes  # noqa: E402

RCPT = User("smtpbench", "smtpbench@example.com", "bench-secret", "SSHA", "a")
SENDER = "sender@remote.test"
MB = 1000 * 1000


class BenchPostfix(Postfix):
    """The test Postfix without a size limit, throwing accepted mail away."""

    def _main_cf(self) -> str:
        return (
            super()._main_cf()
            + """
# bench: no size limit, no mailbox delivery (measure the SMTP leg only)
message_size_limit = 0
virtual_transport = discard:bench
"""
        )


def make_message(size: int, seed: int = 0) -> bytes:
    """Headers + base64-looking lines (some starting with a dot) up to C{size} octets."""
    rng = random.Random(seed)
    head = f"From: <{SENDER}>\r\nTo: <{RCPT.address}>\r\nSubject: bench {size}\r\n\r\n".encode()
    alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    line = bytes(rng.choice(alphabet) for _ in range(76)) + b"\r\n"
    body = bytearray()
    n = 0
    while len(head) + len(body) < size:
        body += (b"." + line[1:]) if n % 50 == 0 else line
        n += 1
    return head + bytes(body)


def _client_loop(args: tuple[str, int, int, int, float, float]) -> tuple[int, int]:
    host, port, size, per_connection, start_at, stop_at = args
    msg = make_message(size, seed=os.getpid())
    sent = errors = 0
    while time.time() < start_at:
        time.sleep(0.001)
    while time.time() < stop_at:
        try:
            c = smtplib.SMTP(host, port, local_hostname="bench-client.test", timeout=60)
            for _ in range(per_connection):
                c.sendmail(SENDER, [RCPT.address], msg)
                sent += 1
            c.quit()
        except (smtplib.SMTPException, OSError):
            errors += 1
    return sent, errors


def throughput(
    host: str,
    port: int,
    size: int,
    per_connection: int,
    clients: int,
    seconds: float,
    warmup: float,
) -> tuple[float, int]:
    """Messages per second over the measured window."""
    with multiprocessing.get_context("fork").Pool(clients) as pool:
        if warmup > 0:  # the same loop, results thrown away
            now = time.time()
            pool.map(
                _client_loop, [(host, port, size, per_connection, now, now + warmup)] * clients
            )
        start_at = time.time() + 0.3
        stop_at = start_at + seconds
        results = pool.map(
            _client_loop, [(host, port, size, per_connection, start_at, stop_at)] * clients
        )
    sent = sum(r[0] for r in results)
    errors = sum(r[1] for r in results)
    return sent / seconds, errors


def memory_during(node: Node, port: int, size: int) -> tuple[int, int, float]:
    """(baseline KiB, peak KiB, seconds) while one C{size}-octet message goes through."""
    msg = make_message(size, seed=50)
    baseline = rss_kib(node.pid())
    peak = baseline
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, rss_kib(node.pid()))
            time.sleep(0.01)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    started = time.monotonic()
    c = smtplib.SMTP("127.0.0.1", port, timeout=300)
    c.sendmail(SENDER, [RCPT.address], msg)
    c.quit()
    elapsed = time.monotonic() - started
    done.set()
    t.join()
    return baseline, peak, elapsed


def node_config(postfix: Postfix, map_file: Path, port: int) -> str:
    return f"""
[node]
name = "bench-smtp"

[[usermap]]
name = "main"
type = "file"
path = "{map_file}"

[smtp]
usermap = "main"
backend_port = {postfix.smtp_port}
backend_tls = "none"
forward_client_address = true
hostname = "mx.bench.test"
domains = ["example.com"]
max_message_size = 209715200
max_recipients = 100

[[smtp.listener]]
endpoint = "tcp:port={port}:interface=127.0.0.1:backlog=1024"
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per run")
    parser.add_argument(
        "--warmup", type=float, default=1.0, help="unmeasured seconds before each run"
    )
    parser.add_argument("--clients", type=int, default=8, help="concurrent client processes")
    parser.add_argument(
        "--big-mib", type=int, default=50, help="size of the memory-test message (MB)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp dirs (logs)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="axfe-bench-smtp-"))
    mail_root = make_root_dir("axfe-bench-smtp-mail-")
    host = f"{random_loopback_prefix()}.1"
    ca = make_ca(work / "pki")
    cert = ca.issue("bench-backend", ips=(host,))
    users = {"a": {RCPT.address: RCPT}}
    dovecot = make_dovecots({"a": host}, users, {"a": cert}, ca.cert_file, mail_root)["a"]
    base = make_postfixes({"a": host}, users, {"a": cert}, ca.cert_file, {"a": dovecot}, mail_root)[
        "a"
    ]
    postfix = BenchPostfix(**{f: getattr(base, f) for f in base.__dataclass_fields__})
    node: Node | None = None
    try:
        print(f"starting Dovecot and Postfix on {host}, the node ...", file=sys.stderr)
        dovecot.prepare()
        dovecot.start(timeout=120)
        postfix.prepare()
        postfix.start(timeout=120)
        map_file = work / "users.map"
        map_file.write_text(f"{RCPT.address} {host}\n")
        port = free_port()
        node = start_node(
            work / "node", node_config(postfix, map_file, port), [("127.0.0.1", port)]
        )

        rows = []
        scenarios = (("10 kB", 10 * 1000, 1), ("10 kB", 10 * 1000, 10), ("1 MB", MB, 1))
        for label, size, per_connection in scenarios:
            best = {"direct": 0.0, "node": 0.0}
            cpu_per_msg = float("nan")
            errors = 0
            for _ in range(2):
                for path, (h, p) in (
                    ("direct", (postfix.host, postfix.smtp_port)),
                    ("node", ("127.0.0.1", port)),
                ):
                    rate, errs = throughput(
                        h, p, size, per_connection, args.clients, args.warmup, 0
                    )
                    cpu0 = cpu_seconds(node.pid())
                    rate, errs = throughput(
                        h, p, size, per_connection, args.clients, args.seconds, 0
                    )
                    cpu = cpu_seconds(node.pid()) - cpu0
                    errors += errs
                    print(
                        f"  {label} x{per_connection} {path}: {rate:.1f} msg/s ({errs} errors)",
                        file=sys.stderr,
                    )
                    if path == "node" and rate > best["node"]:
                        cpu_per_msg = 1000 * cpu / max(1.0, rate * args.seconds)
                    best[path] = max(best[path], rate)
            rows.append(
                (
                    label,
                    per_connection,
                    best["direct"],
                    best["node"],
                    f"{best['node'] / best['direct']:.2f}x",
                    cpu_per_msg,
                    errors,
                )
            )

        baseline, peak, elapsed = memory_during(node, port, args.big_mib * MB)
        log = node.log_text()
        assert f"size={args.big_mib * MB}" in log or "accepted by" in log, (
            "big message not accepted"
        )
        out = [
            f"machine: {machine()}",
            "",
            table(
                f"SMTP messages/s, {args.clients} concurrent clients, "
                f"{args.seconds:g} s runs (best of 2)",
                [
                    "message",
                    "msgs per connection",
                    "direct Postfix msg/s",
                    "through node msg/s",
                    "ratio",
                    "node CPU ms/msg",
                    "errors",
                ],
                rows,
            ),
            table(
                f"node memory during one {args.big_mib} MB message",
                ["VmRSS before (KiB)", "VmRSS peak (KiB)", "growth (KiB)", "transfer s", "MB/s"],
                [(baseline, peak, peak - baseline, elapsed, args.big_mib / elapsed)],
            ),
        ]
        print("\n".join(out))
    finally:
        if node is not None:
            node.stop()
        postfix.stop()
        dovecot.stop()
        remove_work_dirs(args.keep, work, mail_root)


if __name__ == "__main__":
    main()
