"""A real OpenLDAP slapd for the integration tests.

L{start_slapd} writes a C{slapd.conf} (not cn=config), a small Active-Directory-like schema
and an mdb database into a directory of its own, seeds the directory with L{USERS} via
C{slapadd} (offline, fast) and runs C{slapd -d stats} in the foreground on two free loopback
ports (C{ldap://} with StartTLS and C{ldaps://}), with a certificate from the test CA.

L{Slapd.stop} and L{Slapd.start} keep the ports and the data, so a test can take the
directory away in the middle of a run and bring it back.
"""

from __future__ import annotations

import base64
import hashlib
import os
import signal
import subprocess
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tests.integration.directory_data import (
    AD_DN,
    ADMIN_DN,
    ADMIN_PASSWORD,
    BASE_DN,
    PEOPLE_DN,
    PROXY_DN,
    PROXY_PASSWORD,
    SERVICES_DN,
    USERS,
    User,
    stored_password,
)
from tests.integration.servers.pki import TestCA
from tests.integration.servers.ports import free_port

__all__ = ["AD_ATTRIBUTES", "AD_OBJECT_CLASS", "Slapd", "SlapdError", "seed_ldif", "start_slapd"]

SLAPD = "/usr/sbin/slapd"
SLAPADD = "/usr/sbin/slapadd"
SCHEMA_DIR = Path("/etc/ldap/schema")
MODULE_DIR = Path("/usr/lib/ldap")

#: test-only auxiliary class carrying the Active-Directory-like attributes below
AD_OBJECT_CLASS = "axigenTestADUser"
AD_ATTRIBUTES = ("sAMAccountName", "userPrincipalName")

# Made-up OIDs under 1.3.6.1.4.1.99999 (test use only).
AD_SCHEMA = f"""\
# Active-Directory-like attributes for the axigen-fe integration tests (test-only OIDs).
attributetype ( 1.3.6.1.4.1.99999.1.1.1 NAME 'sAMAccountName'
\tDESC 'AD-like logon name (test schema)'
\tEQUALITY caseIgnoreMatch
\tSUBSTR caseIgnoreSubstringsMatch
\tSYNTAX 1.3.6.1.4.1.1466.115.121.1.15{{256}}
\tSINGLE-VALUE )

attributetype ( 1.3.6.1.4.1.99999.1.1.2 NAME 'userPrincipalName'
\tDESC 'AD-like user principal name, user@realm (test schema)'
\tEQUALITY caseIgnoreIA5Match
\tSUBSTR caseIgnoreIA5SubstringsMatch
\tSYNTAX 1.3.6.1.4.1.1466.115.121.1.26{{1024}}
\tSINGLE-VALUE )

objectclass ( 1.3.6.1.4.1.99999.1.2.1 NAME '{AD_OBJECT_CLASS}'
\tDESC 'entry carrying AD-like logon attributes (test schema)'
\tSUP top AUXILIARY
\tMAY ( sAMAccountName $ userPrincipalName ) )
"""


class SlapdError(RuntimeError):
    """slapd (or slapadd) failed; the message carries the end of its log."""


def _ssha(password: str) -> str:
    salt = os.urandom(8)
    digest = hashlib.sha1(password.encode("utf-8") + salt).digest()
    return "{SSHA}" + base64.b64encode(digest + salt).decode("ascii")


def _ldif_line(attr: str, value: str) -> str:
    """C{attr: value}, or C{attr:: base64} when the value is not a SAFE-STRING (RFC 2849)."""
    raw = value.encode("utf-8")
    unsafe = (
        not value
        or not value.isascii()
        or value[0] in " :<"
        or value[-1] == " "
        or any(c in value for c in "\0\r\n")
    )
    if unsafe:
        return f"{attr}:: {base64.b64encode(raw).decode('ascii')}"
    return f"{attr}: {value}"


def _entry(dn: str, attrs: Iterable[tuple[str, str]]) -> str:
    lines = [_ldif_line("dn", dn)]
    lines += [_ldif_line(a, v) for a, v in attrs]
    return "\n".join(lines) + "\n"


def user_entry(user: User, backend_hosts: Mapping[str, str]) -> str:
    """The LDIF entry of one test user."""
    classes = ["top", "person", "organizationalPerson", "inetOrgPerson", "inetLocalMailRecipient"]
    if any(a in user.extra for a in AD_ATTRIBUTES):
        classes.append(AD_OBJECT_CLASS)
    attrs: list[tuple[str, str]] = [("objectClass", c) for c in classes]
    attrs += [
        ("uid", user.uid),
        ("cn", user.uid),
        ("sn", user.uid),
        ("mail", user.address),
        ("userPassword", stored_password(user)),
    ]
    if user.backend is not None:
        attrs.append(("mailHost", backend_hosts[user.backend]))
    for name, values in user.extra.items():
        attrs += [(name, v) for v in values]
    return _entry(user.dn, attrs)


def seed_ldif(backend_hosts: Mapping[str, str], users: Iterable[User] = USERS) -> str:
    """LDIF for the whole test directory: tree, service account, users."""
    dc = BASE_DN.split(",")[0].split("=", 1)[1]
    entries = [
        _entry(
            BASE_DN,
            [
                ("objectClass", "top"),
                ("objectClass", "dcObject"),
                ("objectClass", "organization"),
                ("dc", dc),
                ("o", "Example"),
            ],
        ),
    ]
    for ou_dn in (PEOPLE_DN, AD_DN, SERVICES_DN):
        ou = ou_dn.split(",")[0].split("=", 1)[1]
        entries.append(
            _entry(
                ou_dn, [("objectClass", "top"), ("objectClass", "organizationalUnit"), ("ou", ou)]
            )
        )
    proxy_cn = PROXY_DN.split(",")[0].split("=", 1)[1]
    entries.append(
        _entry(
            PROXY_DN,
            [
                ("objectClass", "top"),
                ("objectClass", "organizationalRole"),
                ("objectClass", "simpleSecurityObject"),
                ("cn", proxy_cn),
                ("description", "axigen-fe service account"),
                ("userPassword", _ssha(PROXY_PASSWORD)),
            ],
        )
    )
    entries += [user_entry(u, backend_hosts) for u in users]
    return "\n".join(entries)


@dataclass
class Slapd:
    """One slapd instance living in C{directory}; C{start}/C{stop} keep ports and data."""

    directory: Path
    ldap_port: int
    ldaps_port: int
    ca_file: Path
    cert_file: Path
    key_file: Path
    host: str = "127.0.0.1"
    base_dn: str = BASE_DN
    admin_dn: str = ADMIN_DN
    admin_password: str = ADMIN_PASSWORD
    proxy_dn: str = PROXY_DN
    proxy_password: str = PROXY_PASSWORD
    users: tuple[User, ...] = field(default=USERS, repr=False)
    pid: int | None = None
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    # -- paths and addresses -------------------------------------------------------------------

    @property
    def ldap_uri(self) -> str:
        return f"ldap://{self.host}:{self.ldap_port}"

    @property
    def ldaps_uri(self) -> str:
        return f"ldaps://{self.host}:{self.ldaps_port}"

    @property
    def config_file(self) -> Path:
        return self.directory / "slapd.conf"

    @property
    def data_dir(self) -> Path:
        return self.directory / "data"

    @property
    def log_file(self) -> Path:
        return self.directory / "slapd.log"

    @property
    def schema_file(self) -> Path:
        return self.directory / "axigen-test-ad.schema"

    def user_dn(self, uid: str) -> str:
        for u in self.users:
            if u.uid == uid:
                return u.dn
        raise KeyError(uid)

    # -- configuration -------------------------------------------------------------------------

    def write_config(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.schema_file.write_text(AD_SCHEMA)
        schemas = [
            SCHEMA_DIR / f"{n}.schema" for n in ("core", "cosine", "inetorgperson", "nis", "misc")
        ]
        schemas.append(self.schema_file)
        modules = ["back_mdb"]
        if (MODULE_DIR / "pw-sha2.so").exists():
            modules.append("pw-sha2")  # {SSHA256}, {SSHA512}, ... (not built into slapd)
        lines = [f"include {s}" for s in schemas]
        lines += [
            f"pidfile {self.directory / 'slapd.pid'}",
            f"argsfile {self.directory / 'slapd.args'}",
            f"modulepath {MODULE_DIR}",
            *(f"moduleload {m}" for m in modules),
            f"TLSCACertificateFile {self.ca_file}",
            f"TLSCertificateFile {self.cert_file}",
            f"TLSCertificateKeyFile {self.key_file}",
            "TLSVerifyClient never",
            "sizelimit 1000",
            "",
            "database mdb",
            f'suffix "{self.base_dn}"',
            f'rootdn "{self.admin_dn}"',
            f"rootpw {_ssha(self.admin_password)}",
            f"directory {self.data_dir}",
            "maxsize 67108864",
            "dbnosync",
            "index objectClass eq",
            "index uid,mail,cn,sAMAccountName,userPrincipalName eq,sub",
            "",
            # only the service account may read password hashes; anyone may simple-bind
            "access to attrs=userPassword",
            f'    by dn.exact="{self.proxy_dn}" read',
            "    by anonymous auth",
            "    by self write",
            "    by * none",
            "access to *",
            "    by * read",
            "",
        ]
        self.config_file.write_text("\n".join(lines))

    def load(self, ldif: str) -> None:
        """Load entries with slapadd (only while slapd is stopped)."""
        if self.is_running():
            raise SlapdError("slapadd needs slapd stopped; use add_entry()")
        ldif_file = self.directory / "seed.ldif"
        ldif_file.write_text(ldif, encoding="utf-8")
        r = subprocess.run(
            [SLAPADD, "-q", "-f", str(self.config_file), "-l", str(ldif_file)],
            capture_output=True,
            text=True,
        )
        if r.returncode != 0:
            raise SlapdError(f"slapadd failed ({r.returncode}):\n{r.stdout}{r.stderr}")

    # -- process -------------------------------------------------------------------------------

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 15.0) -> None:
        """Start slapd in the foreground and wait until an anonymous search answers."""
        if self.is_running():
            return
        with open(self.log_file, "ab") as log:
            log.write(f"\n=== start {time.strftime('%H:%M:%S')} ===\n".encode())
            log.flush()
            self._proc = subprocess.Popen(
                [
                    SLAPD,
                    "-d",
                    "stats",
                    "-f",
                    str(self.config_file),
                    "-h",
                    f"{self.ldap_uri}/ {self.ldaps_uri}/",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C to pytest does not hit it first
            )
        self.pid = self._proc.pid
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self._proc is None or self._proc.poll() is not None:
                code = None if self._proc is None else self._proc.returncode
                raise SlapdError(f"slapd exited with {code}:\n{self.log_tail()}")
            r = subprocess.run(
                [
                    "ldapsearch",
                    "-x",
                    "-LLL",
                    "-o",
                    "nettimeout=1",
                    "-H",
                    self.ldap_uri,
                    "-b",
                    self.base_dn,
                    "-s",
                    "base",
                    "1.1",
                ],
                capture_output=True,
                env=self.client_env(),
                timeout=5,
            )
            if r.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise SlapdError(f"slapd not answering after {timeout}s:\n{self.log_tail()}")
            time.sleep(0.02)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the slapd this object started, wait, SIGKILL if it lingers."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        self._proc = None
        self.pid = None

    def freeze(self, timeout: float = 10.0) -> None:
        """SIGSTOP slapd and wait until every one of its threads has stopped.

        C{kill} returns before the threads stop: a worker still running on the other CPU
        could answer one more request, so a test that expects silence must wait here.
        """
        assert self.pid is not None, "slapd is not running"
        os.kill(self.pid, signal.SIGSTOP)
        tasks = Path(f"/proc/{self.pid}/task")
        deadline = time.monotonic() + timeout
        while True:
            states = []
            for task in tasks.iterdir():
                try:
                    # "PID (comm) STATE ...": comm may hold spaces, so split after ")".
                    states.append((task / "stat").read_text().rsplit(")", 1)[1].split()[0])
                except (FileNotFoundError, IndexError):
                    continue
            if states and all(state in ("T", "t") for state in states):
                return
            if time.monotonic() > deadline:
                raise SlapdError(f"slapd threads not stopped after {timeout}s: {states}")
            time.sleep(0.005)

    def thaw(self) -> None:
        """Undo L{freeze}; harmless if slapd has gone."""
        if self.pid is not None:
            try:
                os.kill(self.pid, signal.SIGCONT)
            except ProcessLookupError:
                pass

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    # -- clients -------------------------------------------------------------------------------

    def client_env(self, ca_file: Path | str | None = None) -> dict[str, str]:
        """Environment for the ldap-utils tools: no system ldap.conf, trust C{ca_file}
        (default: the CA that signed slapd's certificate)."""
        env = dict(os.environ)
        for k in list(env):
            if k.startswith("LDAP"):
                del env[k]
        env["LDAPCONF"] = os.devnull
        env["LDAPRC"] = os.devnull
        env["LDAPTLS_CACERT"] = str(ca_file if ca_file is not None else self.ca_file)
        env["LDAPTLS_REQCERT"] = "demand"
        return env

    def _admin_tool(self, tool: str, ldif: str, *args: str) -> None:
        r = subprocess.run(
            [
                tool,
                "-x",
                "-H",
                self.ldap_uri,
                "-D",
                self.admin_dn,
                "-w",
                self.admin_password,
                *args,
            ],
            input=ldif.encode("utf-8"),
            capture_output=True,
            env=self.client_env(),
            timeout=30,
        )
        if r.returncode != 0:
            raise SlapdError(f"{tool} failed ({r.returncode}): {r.stderr.decode(errors='replace')}")

    def add_entry(self, ldif: str) -> None:
        """ldapadd C{ldif} (one or more entries) as the rootdn."""
        self._admin_tool("ldapadd", ldif)

    def modify(self, ldif: str) -> None:
        """ldapmodify C{ldif} (changetype records) as the rootdn."""
        self._admin_tool("ldapmodify", ldif)

    def delete(self, *dns: str) -> None:
        """ldapdelete C{dns} as the rootdn."""
        self._admin_tool("ldapdelete", "\n".join(dns) + "\n")


def _bind_failed(s: Slapd) -> bool:
    log = s.log_tail(20).lower()
    return "bind" in log and ("address already in use" in log or "failed" in log)


def start_slapd(
    directory: Path,
    ca: TestCA,
    backend_hosts: Mapping[str, str],
    users: Iterable[User] = USERS,
) -> Slapd:
    """Configure, seed and start a slapd in C{directory} (created if missing)."""
    directory.mkdir(parents=True, exist_ok=True)
    users = tuple(users)
    cert = ca.issue(
        f"slapd-{directory.name}-{os.urandom(4).hex()}", ips=("127.0.0.1",), dns=("localhost",)
    )
    s = Slapd(
        directory=directory,
        ldap_port=free_port(),
        ldaps_port=free_port(),
        ca_file=ca.cert_file,
        cert_file=cert.cert_file,
        key_file=cert.key_file,
        users=users,
    )
    while s.ldaps_port == s.ldap_port:
        s.ldaps_port = free_port()
    s.write_config()
    s.load(seed_ldif(backend_hosts, users))
    for attempt in range(3):
        try:
            s.start()
            return s
        except SlapdError:
            # another process took a port between free_port() and slapd's bind: pick again
            if attempt == 2 or not _bind_failed(s):
                raise
            s.ldap_port, s.ldaps_port = free_port(), free_port()
    raise AssertionError("unreachable")
