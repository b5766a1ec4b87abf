"""A real Dovecot 2.3 back-end (IMAP, POP3, LMTP) for the integration tests.

One L{Dovecot} per back-end address, run in the foreground (C{dovecot -F}) as a child of
the test process, with everything it writes under its own directory:

    <directory>/dovecot.conf     configuration
    <directory>/passwd           passdb: every user of that back-end, {PLAIN.B64} password
    <directory>/masters          master passdb (MASTER_USER), for "user*fe-master" logins
    <directory>/run/             base_dir (sockets, login chroot)
    <directory>/state/           state_dir
    <directory>/mail/<domain>/<local>/Maildir   mailboxes (owned by the system user "mail")
    <directory>/auth-client      SASL socket for Postfix (smtpd_sasl_type = dovecot)
    <directory>/dovecot.log      every log line, logins (with rip=) included

The directory and its parents must be reachable by the unprivileged users Dovecot and
Postfix switch to (mail, dovecot, dovenull, postfix): pytest's own temp dirs are 0700,
so the fixtures put these under a 0755 directory of their own (see L{make_root_dir}).
"""

from __future__ import annotations

import base64
import ctypes
import email.utils
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.integration.directory_data import MASTER_PASSWORD, MASTER_USER, User
from tests.integration.servers.pki import IssuedCert
from tests.integration.servers.process import ServerProcess

DOVECOT_BIN = shutil.which("dovecot", path="/usr/sbin:/usr/bin:/sbin:/bin") or "/usr/sbin/dovecot"
#: system user that owns the mailboxes (Dovecot refuses uid 0 for mail access)
MAIL_USER = "mail"


def die_with_parent() -> None:  # pragma: no cover - runs in the child
    """preexec_fn: SIGTERM this child if the test process dies without tearing down."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def make_root_dir(prefix: str = "axfe-mail-") -> Path:
    """A fresh directory under /tmp, 0755, reachable by the daemons' unprivileged users."""
    root = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    root.chmod(0o755)
    return root


def _b64(text: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def welcome_message(label: str, address: str) -> bytes:
    """The message every mailbox on back-end C{label} starts with."""
    return (
        f"Return-Path: <postmaster@backend-{label}.test>\r\n"
        f"From: Back-end {label} <postmaster@backend-{label}.test>\r\n"
        f"To: <{address}>\r\n"
        f"Subject: Welcome to backend {label}\r\n"
        f"Date: {email.utils.formatdate(localtime=False)}\r\n"
        f"Message-ID: <welcome-{label}-{address.replace('@', '.')}@backend-{label}.test>\r\n"
        f"X-Backend: {label}\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=us-ascii\r\n"
        "\r\n"
        f"This mailbox lives on back-end {label}.\r\n"
    ).encode("ascii")


@dataclass
class Dovecot(ServerProcess):
    """One Dovecot instance bound to C{host}; see the module docstring for its files."""

    label: str
    host: str
    imap_port: int
    imaps_port: int
    pop3_port: int
    pop3s_port: int
    lmtp_port: int
    directory: Path
    cert: IssuedCert
    ca_file: Path
    #: address -> user, the mailboxes this back-end holds
    users: dict[str, User] = field(default_factory=dict, repr=False)
    process: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return f"dovecot {self.label}"

    # ----------------------------------------------------------------- paths

    @property
    def config_file(self) -> Path:
        return self.directory / "dovecot.conf"

    @property
    def log_file(self) -> Path:
        """Where every Dovecot log line lands (login lines with C{rip=} included)."""
        return self.directory / "dovecot.log"

    @property
    def stderr_file(self) -> Path:
        return self.directory / "dovecot.stderr"

    @property
    def base_dir(self) -> Path:
        return self.directory / "run"

    @property
    def mail_root(self) -> Path:
        return self.directory / "mail"

    @property
    def auth_socket(self) -> Path:
        """A Dovecot auth-client socket (mode 0666) for Postfix's C{smtpd_sasl_type = dovecot}."""
        return self.directory / "auth-client"

    @property
    def instance_name(self) -> str:
        return f"axfe-{self.directory.parent.name.rsplit('-', 1)[-1]}-{self.label}"

    @property
    def pid(self) -> int | None:
        """PID of the C{dovecot -F} master (our child), None when not started."""
        return self.process.pid if self.process is not None else None

    @property
    def ports(self) -> dict[str, int]:
        return {
            "imap": self.imap_port,
            "imaps": self.imaps_port,
            "pop3": self.pop3_port,
            "pop3s": self.pop3s_port,
            "lmtp": self.lmtp_port,
        }

    def home(self, address: str) -> Path:
        local, _, domain = address.partition("@")
        return self.mail_root / domain / local

    def maildir(self, address: str) -> Path:
        return self.home(address) / "Maildir"

    # ---------------------------------------------------------------- set-up

    def prepare(self) -> None:
        """Write the configuration, the passdbs and the seeded mailboxes."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self.directory.chmod(0o755)
        for d in (self.base_dir, self.directory / "state"):
            d.mkdir(exist_ok=True)
        self._write_passdbs()
        self._seed_mailboxes()
        self.config_file.write_text(self._config())
        self.log_file.touch()

    def _write_passdbs(self) -> None:
        # {PLAIN.B64}: the password may hold ':', spaces, quotes, backslashes and UTF-8
        lines = [
            f"{address}:{{PLAIN.B64}}{_b64(u.password)}::::::"
            for address, u in sorted(self.users.items())
        ]
        passwd = self.directory / "passwd"
        passwd.write_text("\n".join(lines) + "\n")
        masters = self.directory / "masters"
        masters.write_text(f"{MASTER_USER}:{{PLAIN.B64}}{_b64(MASTER_PASSWORD)}::::::\n")
        # read by the auth process, which runs as the "dovecot" user
        passwd.chmod(0o644)
        masters.chmod(0o644)

    def _seed_mailboxes(self) -> None:
        mail = pwd.getpwnam(MAIL_USER)
        self.mail_root.mkdir(exist_ok=True)
        os.chown(self.mail_root, mail.pw_uid, mail.pw_gid)
        hostname = f"backend-{self.label}"
        for n, address in enumerate(sorted(self.users)):
            maildir = self.maildir(address)
            if (maildir / "new").is_dir():
                continue  # seeded already (prepare() called again, e.g. after a port clash)
            for sub in ("cur", "new", "tmp"):
                (maildir / sub).mkdir(parents=True, exist_ok=True)
            msg = welcome_message(self.label, address)
            name = f"{int(time.time())}.M{n}P{os.getpid()}.{hostname},S={len(msg)}"
            (maildir / "new" / name).write_bytes(msg)
            # chown the whole tree from the domain dir down
            domain_dir = self.home(address).parent
            for root, _dirs, files in os.walk(domain_dir):
                os.chown(root, mail.pw_uid, mail.pw_gid)
                for f in files:
                    os.chown(os.path.join(root, f), mail.pw_uid, mail.pw_gid)

    def _config(self) -> str:
        d = self.directory
        host = self.host
        return f"""\
# generated by tests/integration/servers/dovecot.py -- back-end {self.label}
instance_name = {self.instance_name}
base_dir = {self.base_dir}
state_dir = {d / "state"}
log_path = {self.log_file}
info_log_path = {self.log_file}
debug_log_path = {self.log_file}
log_timestamp = "%Y-%m-%d %H:%M:%S "
protocols = imap pop3 lmtp
listen = {host}
shutdown_clients = yes
verbose_proctitle = yes

ssl = yes
ssl_cert = <{self.cert.cert_file}
ssl_key = <{self.cert.key_file}
ssl_dh = </usr/share/dovecot/dh.pem
ssl_min_protocol = TLSv1.2

disable_plaintext_auth = no
auth_mechanisms = plain login
auth_verbose = yes
auth_failure_delay = 0
auth_cache_size = 0
auth_master_user_separator = *
login_trusted_networks = 127.0.0.0/8
login_greeting = Dovecot back-end {self.label} ready.

first_valid_uid = {pwd.getpwnam(MAIL_USER).pw_uid}
first_valid_gid = {pwd.getpwnam(MAIL_USER).pw_gid}
mail_location = maildir:~/Maildir
mail_max_userip_connections = 1000
mailbox_idle_check_interval = 1 secs

default_process_limit = 500
default_client_limit = 4000
default_vsz_limit = 512M

passdb {{
  driver = passwd-file
  master = yes
  pass = yes
  args = scheme=PLAIN username_format=%u {d / "masters"}
}}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {d / "passwd"}
}}
userdb {{
  driver = static
  args = uid={MAIL_USER} gid={MAIL_USER} home={self.mail_root}/%d/%n
}}

service imap-login {{
  inet_listener imap {{
    address = {host}
    port = {self.imap_port}
  }}
  inet_listener imaps {{
    address = {host}
    port = {self.imaps_port}
    ssl = yes
  }}
  service_count = 0
  process_min_avail = 2
  client_limit = 1000
}}
service pop3-login {{
  inet_listener pop3 {{
    address = {host}
    port = {self.pop3_port}
  }}
  inet_listener pop3s {{
    address = {host}
    port = {self.pop3s_port}
    ssl = yes
  }}
  service_count = 0
  process_min_avail = 1
  client_limit = 1000
}}
service lmtp {{
  inet_listener lmtp {{
    address = {host}
    port = {self.lmtp_port}
  }}
}}
# No auth penalty: it delays every auth from an IP by 2..15 s after failed logins from
# it (login_trusted_networks does not exempt), which would make tests order-dependent.
# The auth process finds no "anvil-auth-penalty" socket (ENOENT) and disables it.
service anvil {{
  unix_listener anvil-auth-penalty {{
    path = anvil-auth-penalty-disabled
  }}
}}
service auth {{
  unix_listener {self.auth_socket} {{
    mode = 0666
  }}
}}

protocol imap {{
  imap_idle_notify_interval = 1 secs
}}
protocol lmtp {{
  postmaster_address = postmaster@backend-{self.label}.test
}}
"""

    # ------------------------------------------------------------- lifecycle

    def start(self, timeout: float = 20.0) -> None:
        if self.is_running():
            return
        if not self.config_file.exists():
            self.prepare()
        stderr = open(self.stderr_file, "ab")
        try:
            self.process = subprocess.Popen(
                [DOVECOT_BIN, "-c", str(self.config_file), "-F"],
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=stderr,
                preexec_fn=die_with_parent,
            )
        finally:
            stderr.close()
        deadline = time.monotonic() + timeout
        for port in (
            self.imap_port,
            self.imaps_port,
            self.pop3_port,
            self.pop3s_port,
            self.lmtp_port,
        ):
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError(
                        f"dovecot {self.label} exited with {self.process.returncode}:\n"
                        f"{self.stderr_file.read_text(errors='replace')}\n{self.log_text()}"
                    )
                try:
                    with socket.create_connection((self.host, port), timeout=0.5):
                        break
                except OSError:
                    if time.monotonic() > deadline:
                        self.stop()
                        raise TimeoutError(
                            f"dovecot {self.label}: nothing on {self.host}:{port}\n"
                            + self.log_text()
                        ) from None
                    time.sleep(0.05)
        while not self.auth_socket.exists():
            if time.monotonic() > deadline:
                raise TimeoutError(f"dovecot {self.label}: no {self.auth_socket}")
            time.sleep(0.05)

    # ----------------------------------------------------------- inspection

    def mailbox_messages(self, address: str) -> list[bytes]:
        """The raw messages in C{address}'s INBOX (new/ and cur/), oldest first."""
        maildir = self.maildir(address)
        entries: list[Path] = []
        for sub in ("new", "cur"):
            try:
                entries.extend(p for p in (maildir / sub).iterdir() if p.is_file())
            except FileNotFoundError:
                pass

        def order(p: Path) -> tuple[float, str]:
            stamp = p.name.split(".", 1)[0]
            return (float(stamp) if stamp.isdigit() else 0.0, p.name)

        out = []
        for p in sorted(entries, key=order):
            try:
                out.append(p.read_bytes())
            except FileNotFoundError:  # moved from new/ to cur/ meanwhile
                moved = list((maildir / "cur").glob(p.name.split(":", 1)[0] + "*"))
                out.extend(m.read_bytes() for m in moved[:1])
        return out

    def add_message(self, address: str, raw: bytes) -> Path:
        """Drop C{raw} into C{address}'s INBOX (maildir new/), as a local delivery would."""
        mail = pwd.getpwnam(MAIL_USER)
        maildir = self.maildir(address)
        unique = f"M{time.time_ns() % 10**9}P{os.getpid()}"
        name = f"{int(time.time())}.{unique}.backend-{self.label},S={len(raw)}"
        tmp = maildir / "tmp" / name
        tmp.write_bytes(raw)
        os.chown(tmp, mail.pw_uid, mail.pw_gid)
        final = maildir / "new" / name
        os.rename(tmp, final)
        return final

    def wait_for_message(self, address: str, needle: bytes, timeout: float = 15.0) -> bytes:
        """Poll C{address}'s INBOX until a message containing C{needle} shows up; return it."""
        deadline = time.monotonic() + timeout
        while True:
            for msg in self.mailbox_messages(address):
                if needle in msg:
                    return msg
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"no message with {needle!r} for {address} on dovecot {self.label}"
                )
            time.sleep(0.1)


def make_dovecots(
    hosts: dict[str, str],
    users_by_backend: dict[str, dict[str, User]],
    certs: dict[str, IssuedCert],
    ca_file: Path,
    root: Path,
) -> dict[str, Dovecot]:
    """One (not yet started) L{Dovecot} per label in C{hosts}; port numbers shared by all."""
    from tests.integration.servers.ports import free_port_on_all

    addresses = list(hosts.values())
    ports: list[int] = []
    while len(ports) < 5:
        p = free_port_on_all(addresses)
        if p not in ports:
            ports.append(p)
    imap, imaps, pop3, pop3s, lmtp = ports
    return {
        label: Dovecot(
            label=label,
            host=host,
            imap_port=imap,
            imaps_port=imaps,
            pop3_port=pop3,
            pop3s_port=pop3s,
            lmtp_port=lmtp,
            directory=root / f"dovecot-{label}",
            cert=certs[label],
            ca_file=ca_file,
            users=users_by_backend.get(label, {}),
        )
        for label, host in hosts.items()
    }
