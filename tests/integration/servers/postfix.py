"""A real Postfix 3.x back-end MTA for the integration tests.

One L{Postfix} per back-end address, each a separate Postfix instance (own
config_directory, queue_directory, data_directory) whose C{master} runs in the
foreground as a child of the test process (C{master -d}, after C{postfix check} has
created the queue directories with the right owners), so stopping it is a SIGTERM to
a PID we own.

    <directory>/etc/main.cf, master.cf, vmailbox   configuration (vmailbox: texthash)
    <directory>/queue/                             queue_directory (pid/master.pid)
    <directory>/data/                              data_directory
    <directory>/postfix.log                        maillog_file (via the postlog service)

Listeners, both bound to the back-end address explicitly in master.cf (C{inet_interfaces}
must be an address on an interface, so it stays 127.0.0.1 and is otherwise unused):

    smtp_port        smtpd; STARTTLS offered
    submission_port  smtpd; STARTTLS offered, "-o syslog_name=<name>/submission"

Mail for the back-end's own users (C{virtual_mailbox_maps}) goes over LMTP to the
Dovecot of the same back-end; unknown users of example.com / ad.example.com get
"550 5.1.1" at RCPT; everything else is relayed only for SASL-authenticated clients and
then thrown away by the C{discard} transport, so nothing leaves the machine.

XCLIENT LOGIN=<name> authenticates the session (C{permit_sasl_authenticated} honours it,
logged as C{sasl_method=XCLIENT, sasl_username=<name>}) only while
C{smtpd_sasl_auth_enable = yes}, which needs a working SASL server: the fixtures point
C{smtpd_sasl_type = dovecot} at an auth-client socket of the same back-end's Dovecot,
which also gives real AUTH PLAIN/LOGIN on both ports.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.integration.directory_data import User
from tests.integration.servers.dovecot import die_with_parent
from tests.integration.servers.pki import IssuedCert
from tests.integration.servers.process import ServerProcess

POSTFIX_BIN = "/usr/sbin/postfix"
MASTER_BIN = "/usr/lib/postfix/sbin/master"


@dataclass
class Postfix(ServerProcess):
    """One Postfix instance bound to C{host}; see the module docstring."""

    label: str
    host: str
    smtp_port: int
    submission_port: int
    directory: Path
    cert: IssuedCert
    ca_file: Path
    #: LMTP address of the Dovecot this instance delivers to
    lmtp_host: str
    lmtp_port: int
    #: Dovecot auth-client socket (smtpd_sasl_type = dovecot)
    sasl_socket: Path
    users: dict[str, User] = field(default_factory=dict, repr=False)
    virtual_domains: tuple[str, ...] = ("example.com", "ad.example.com")
    process: subprocess.Popen | None = field(default=None, repr=False)
    stop_timeout = 15.0  # master stops its own children first

    @property
    def name(self) -> str:
        return f"postfix {self.label}"

    # ----------------------------------------------------------------- paths

    @property
    def config_directory(self) -> Path:
        return self.directory / "etc"

    @property
    def queue_directory(self) -> Path:
        return self.directory / "queue"

    @property
    def data_directory(self) -> Path:
        return self.directory / "data"

    @property
    def log_file(self) -> Path:
        return self.directory / "postfix.log"

    @property
    def stderr_file(self) -> Path:
        return self.directory / "master.stderr"

    @property
    def syslog_name(self) -> str:
        """Prefix of this instance's log lines (C{<syslog_name>/smtpd[pid]: ...})."""
        return f"postfix-{self.label}"

    @property
    def myhostname(self) -> str:
        return f"backend-{self.label}.test"

    @property
    def pid(self) -> int | None:
        """PID of C{master} (our child), None when not started."""
        return self.process.pid if self.process is not None else None

    @property
    def ports(self) -> dict[str, int]:
        return {"smtp": self.smtp_port, "submission": self.submission_port}

    # ---------------------------------------------------------------- set-up

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MAIL_")}
        env["MAIL_CONFIG"] = str(self.config_directory)
        env["PATH"] = "/usr/sbin:/usr/bin:/sbin:/bin:" + env.get("PATH", "")
        return env

    def prepare(self) -> None:
        """Write main.cf, master.cf and the recipient map; create the queue with owners."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self.directory.chmod(0o755)
        self.config_directory.mkdir(exist_ok=True)
        (self.config_directory / "vmailbox").write_text(
            "".join(f"{address} OK\n" for address in sorted(self.users)) or "# nobody\n"
        )
        (self.config_directory / "main.cf").write_text(self._main_cf())
        (self.config_directory / "master.cf").write_text(self._master_cf())
        # Postfix rereads a configuration file modified within the last ~2 seconds until it
        # is older (6 x 300 ms at start-up): backdate them to start at once.
        old = time.time() - 60
        for f in self.config_directory.iterdir():
            os.utime(f, (old, old))
        self.log_file.touch()
        self._create_queue()

    def _create_queue(self) -> None:
        """Queue and data directories with the owners and modes of /etc/postfix/postfix-files.

        (What "postfix check" / "post-install create-missing" would do, minus their seconds of
        integrity checks; master refuses a data_directory not owned by mail_owner.)
        """
        owner = pwd.getpwnam("postfix")
        postdrop = grp.getgrnam("postdrop").gr_gid
        specs = [
            (self.data_directory, owner.pw_uid, owner.pw_gid, 0o700),
            (self.queue_directory, 0, 0, 0o755),
            (self.queue_directory / "pid", 0, 0, 0o755),
        ]
        for sub in (
            "active",
            "bounce",
            "corrupt",
            "defer",
            "deferred",
            "flush",
            "hold",
            "incoming",
            "private",
            "saved",
            "trace",
        ):
            specs.append((self.queue_directory / sub, owner.pw_uid, 0, 0o700))
        specs.append((self.queue_directory / "maildrop", owner.pw_uid, postdrop, 0o730))
        specs.append((self.queue_directory / "public", owner.pw_uid, postdrop, 0o710))
        for path, uid, gid, mode in specs:
            path.mkdir(exist_ok=True)
            os.chown(path, uid, gid)
            path.chmod(mode)

    def _postfix(self, *args: str) -> subprocess.CompletedProcess:
        res = subprocess.run(
            [POSTFIX_BIN, "-c", str(self.config_directory), *args],
            env=self._env(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if res.returncode != 0:
            raise RuntimeError(
                f"postfix {self.label} {' '.join(args)} failed ({res.returncode}):\n"
                f"{res.stdout}{res.stderr}\n{self.log_text()}"
            )
        return res

    def _main_cf(self) -> str:
        return f"""\
# generated by tests/integration/servers/postfix.py -- back-end {self.label}
compatibility_level = 3.6
config_directory = {self.config_directory}
queue_directory = {self.queue_directory}
data_directory = {self.data_directory}
command_directory = /usr/sbin
daemon_directory = /usr/lib/postfix/sbin
shlib_directory = /usr/lib/postfix
meta_directory = /etc/postfix
mail_owner = postfix
setgid_group = postdrop
multi_instance_enable = no
multi_instance_directories =

syslog_name = {self.syslog_name}
maillog_file = {self.log_file}
maillog_file_prefixes = {self.directory}

myhostname = {self.myhostname}
mydomain = test
myorigin = $myhostname
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.1/32
smtpd_banner = $myhostname ESMTP Postfix back-end {self.label}
biff = no
append_dot_mydomain = no
readme_directory = no
smtputf8_enable = yes
# the SMTP tests send 30 MB messages; the default limit is 10 MB
message_size_limit = 104857600

# no DNS at all
smtp_dns_support_level = disabled
lmtp_host_lookup = native
smtp_host_lookup = native
smtpd_peername_lookup = no

# no local delivery, no aliases
local_recipient_maps =
local_transport = error:5.1.1 no local delivery on this test back-end
alias_maps =
alias_database =
relay_domains =

# the back-end's own users: LMTP to the Dovecot of the same back-end
virtual_mailbox_domains = {" ".join(self.virtual_domains)}
virtual_mailbox_maps = texthash:{self.config_directory / "vmailbox"}
virtual_transport = lmtp:inet:{self.lmtp_host}:{self.lmtp_port}
lmtp_destination_recipient_limit = 50
# anything else (relayed for authenticated clients only) is thrown away
default_transport = discard:relayed mail is discarded on this test back-end
relay_transport = $default_transport

# the proxy forwards the client address / login name
smtpd_authorized_xclient_hosts = 127.0.0.0/8
smtpd_authorized_xforward_hosts = 127.0.0.0/8
smtpd_sasl_auth_enable = yes
smtpd_sasl_type = dovecot
smtpd_sasl_path = {self.sasl_socket}
smtpd_sasl_security_options = noanonymous
smtpd_sasl_authenticated_header = no
broken_sasl_auth_clients = no
smtpd_relay_restrictions = permit_sasl_authenticated, reject_unauth_destination
smtpd_recipient_restrictions =
smtpd_client_restrictions =
smtpd_helo_required = no

# TLS (STARTTLS offered on both listeners, never required)
smtpd_tls_cert_file = {self.cert.cert_file}
smtpd_tls_key_file = {self.cert.key_file}
smtpd_tls_CAfile = {self.ca_file}
smtpd_tls_security_level = may
smtpd_tls_auth_only = no
smtpd_tls_loglevel = 1
smtpd_tls_received_header = yes
smtpd_tls_session_cache_database =
smtp_tls_security_level = none
tls_random_source = dev:/dev/urandom

# fast, and no limits the tests could trip over
smtpd_error_sleep_time = 0
smtpd_soft_error_limit = 1000
smtpd_hard_error_limit = 1000
smtpd_client_connection_count_limit = 0
smtpd_client_connection_rate_limit = 0
smtpd_client_message_rate_limit = 0
smtpd_client_recipient_rate_limit = 0
smtpd_client_new_tls_session_rate_limit = 0
smtpd_client_auth_rate_limit = 0
anvil_rate_time_unit = 60s
default_process_limit = 200
in_flow_delay = 0
queue_run_delay = 2s
minimal_backoff_time = 2s
maximal_backoff_time = 10s
maximal_queue_lifetime = 1h
bounce_queue_lifetime = 1h
delay_warning_time = 0
"""

    def _master_cf(self) -> str:
        h = self.host
        # no chroot anywhere (the "n" in the 5th column): nothing to copy into the queue dir
        return f"""\
# generated by tests/integration/servers/postfix.py -- back-end {self.label}
# service type  private unpriv  chroot  wakeup  maxproc command + args
{h}:{self.smtp_port} inet n - n - - smtpd
  -o syslog_name={self.syslog_name}/smtp
{h}:{self.submission_port} inet n - n - - smtpd
  -o syslog_name={self.syslog_name}/submission
  -o smtpd_tls_security_level=may
  -o smtpd_relay_restrictions=permit_sasl_authenticated,reject_unauth_destination
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""

    # ------------------------------------------------------------- lifecycle

    def start(self, timeout: float = 30.0) -> None:
        if self.is_running():
            return
        if not (self.config_directory / "main.cf").exists():
            self.prepare()
        out = open(self.stderr_file, "ab")
        try:
            self.process = subprocess.Popen(
                [MASTER_BIN, "-c", str(self.config_directory), "-d"],
                env=self._env(),
                cwd=str(self.queue_directory),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                preexec_fn=die_with_parent,
            )
        finally:
            out.close()
        deadline = time.monotonic() + timeout
        for port in (self.smtp_port, self.submission_port):
            while True:
                if self.process.poll() is not None:
                    rc = self.process.returncode
                    self.process = None
                    raise RuntimeError(
                        f"postfix {self.label} master exited with {rc}:{self._ports_in_use()}\n"
                        f"{self.stderr_file.read_text(errors='replace')}\n{self.log_text()}"
                    )
                if self._greets(port):
                    break
                if time.monotonic() > deadline:
                    self.stop()
                    raise TimeoutError(
                        f"postfix {self.label}: no SMTP greeting on {self.host}:{port}\n"
                        + self.log_text()
                    )
                time.sleep(0.05)

    def _ports_in_use(self) -> str:
        """Why master died at start-up, when a listener could not bind: its fatal message
        is lost (it goes to postlogd, which master had not spawned yet)."""
        busy = []
        for port in (self.smtp_port, self.submission_port):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    s.bind((self.host, port))
                except OSError:
                    busy.append(f"{self.host}:{port}")
        return f" Address already in use: {', '.join(busy)}" if busy else ""

    def _greets(self, port: int) -> bool:
        """True once smtpd answers with a 220 greeting on C{port}."""
        try:
            with socket.create_connection((self.host, port), timeout=2) as s:
                s.settimeout(5)
                banner = s.recv(512)
                try:
                    s.sendall(b"QUIT\r\n")
                    s.recv(512)
                except OSError:
                    pass
                return banner.startswith(b"220")
        except OSError:
            return False

    # ----------------------------------------------------------- inspection

    def flush(self) -> None:
        """Retry deferred mail now (C{postfix flush})."""
        self._postfix("flush")

    def queue_ids(self) -> list[str]:
        """IDs of the messages still in this instance's queue (C{postqueue -j})."""
        res = subprocess.run(
            ["/usr/sbin/postqueue", "-c", str(self.config_directory), "-j"],
            env=self._env(),
            capture_output=True,
            text=True,
            timeout=30,
        )
        return [json.loads(line)["queue_id"] for line in res.stdout.splitlines() if line.strip()]


def make_postfixes(
    hosts: dict[str, str],
    users_by_backend: dict[str, dict[str, User]],
    certs: dict[str, IssuedCert],
    ca_file: Path,
    dovecots: dict,
    root: Path,
) -> dict[str, Postfix]:
    """One (not yet started) L{Postfix} per label, each delivering to C{dovecots[label]}."""
    from tests.integration.servers.ports import free_port_on_all

    addresses = list(hosts.values())
    smtp = free_port_on_all(addresses)
    submission = smtp
    while submission == smtp:
        submission = free_port_on_all(addresses)
    return {
        label: Postfix(
            label=label,
            host=host,
            smtp_port=smtp,
            submission_port=submission,
            directory=root / f"postfix-{label}",
            cert=certs[label],
            ca_file=ca_file,
            lmtp_host=dovecots[label].host,
            lmtp_port=dovecots[label].lmtp_port,
            sasl_socket=dovecots[label].auth_socket,
            users=users_by_backend.get(label, {}),
        )
        for label, host in hosts.items()
    }
