"""Smoke tests of the real-slapd fixtures, checked with the ldap-utils command-line tools."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.integration.directory_data import PROXY_DN, PROXY_PASSWORD, USERS, user
from tests.integration.servers.pki import TestCA
from tests.integration.servers.slapd import Slapd

pytestmark = pytest.mark.integration


def run(slapd: Slapd, *args: str, ca_file: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(args), capture_output=True, text=True, env=slapd.client_env(ca_file), timeout=30
    )


def search(
    slapd: Slapd, *args: str, uri: str | None = None, ca_file: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return run(
        slapd,
        "ldapsearch",
        "-x",
        "-LLL",
        "-o",
        "ldif-wrap=no",
        "-H",
        uri or slapd.ldap_uri,
        "-b",
        slapd.base_dn,
        *args,
        ca_file=ca_file,
    )


def test_anonymous_search_finds_mailhost(slapd: Slapd, backend_hosts: dict[str, str]) -> None:
    r = search(slapd, "(mail=alice@example.com)", "mailHost", "userPassword")
    assert r.returncode == 0, r.stderr
    assert f"dn: {user('alice@example.com').dn}" in r.stdout
    assert f"mailHost: {backend_hosts['a']}" in r.stdout
    # anonymous must not see password hashes
    assert "userPassword" not in r.stdout


def test_nohost_user_has_no_mailhost(slapd: Slapd) -> None:
    r = search(slapd, "(uid=nohost)", "mailHost", "mail")
    assert r.returncode == 0, r.stderr
    assert "mail: nohost@example.com" in r.stdout
    assert "mailHost" not in r.stdout


def test_user_cannot_read_others_password(slapd: Slapd) -> None:
    alice = user("alice@example.com")
    r = search(slapd, "-D", alice.dn, "-w", alice.password, "(uid=bob)", "userPassword")
    assert r.returncode == 0, r.stderr
    assert "userPassword" not in r.stdout


def test_proxy_reads_user_password(slapd: Slapd) -> None:
    r = search(slapd, "-D", PROXY_DN, "-w", PROXY_PASSWORD, "(uid=alice)", "userPassword")
    assert r.returncode == 0, r.stderr
    assert "userPassword:: " in r.stdout  # ldapsearch base64-encodes it (contains '{')


def test_ad_attributes_searchable(slapd: Slapd) -> None:
    r = search(slapd, "(userPrincipalName=CAROL@ad.example.com)", "sAMAccountName", "mailHost")
    assert r.returncode == 0, r.stderr
    assert f"dn: {user('carol@ad.example.com').dn}" in r.stdout
    assert "sAMAccountName: carol" in r.stdout
    r = search(slapd, "(sAMAccountName=DAV*)", "1.1")
    assert f"dn: {user('dave@ad.example.com').dn}" in r.stdout


def test_starttls_verifies_against_ca(slapd: Slapd, wrong_ca: TestCA) -> None:
    good = search(slapd, "-ZZ", "-s", "base", "1.1")
    assert good.returncode == 0, good.stderr
    bad = search(slapd, "-ZZ", "-s", "base", "1.1", ca_file=wrong_ca.cert_file)
    assert bad.returncode != 0
    # the TLS handshake failed (not e.g. "Can't contact LDAP server")
    assert "ldap_start_tls: Connect error" in bad.stderr, bad.stderr


def test_ldaps(slapd: Slapd, wrong_ca: TestCA) -> None:
    good = search(slapd, "-s", "base", "1.1", uri=slapd.ldaps_uri)
    assert good.returncode == 0, good.stderr
    bad = search(slapd, "-s", "base", "1.1", uri=slapd.ldaps_uri, ca_file=wrong_ca.cert_file)
    assert bad.returncode != 0


@pytest.mark.parametrize("uid", ["alice", "carol", "dave", "umlaut", "spacey", "bob"])
def test_user_binds(slapd: Slapd, uid: str) -> None:
    u = next(u for u in USERS if u.uid == uid)
    r = run(slapd, "ldapwhoami", "-x", "-H", slapd.ldap_uri, "-D", u.dn, "-w", u.password)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"dn:{u.dn}"
    r = run(slapd, "ldapwhoami", "-x", "-H", slapd.ldap_uri, "-D", u.dn, "-w", u.password + "x")
    assert r.returncode == 49, r.stderr


def test_private_slapd_stop_start(private_slapd: Slapd) -> None:
    s = private_slapd
    carol = user("carol@ad.example.com")
    whoami = (
        "ldapwhoami",
        "-x",
        "-o",
        "nettimeout=2",
        "-H",
        s.ldap_uri,
        "-D",
        carol.dn,
        "-w",
        carol.password,
    )
    assert run(s, *whoami).returncode == 0
    s.add_entry(
        "dn: uid=extra,ou=people,dc=example,dc=com\n"
        "objectClass: inetOrgPerson\nuid: extra\ncn: extra\nsn: extra\nmail: extra@example.com\n"
    )
    pid, ports = s.pid, (s.ldap_port, s.ldaps_port)
    s.stop()
    assert not s.is_running()
    assert run(s, *whoami).returncode != 0
    s.start()
    assert s.is_running() and s.pid != pid
    assert (s.ldap_port, s.ldaps_port) == ports
    assert run(s, *whoami).returncode == 0
    r = search(s, "(uid=extra)", "mail")  # data survives the restart
    assert "mail: extra@example.com" in r.stdout
