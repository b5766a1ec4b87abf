"""`axigen-fe lookup` against the real slapd: one JSON object, sysexits-style codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.integration.directory_data import PEOPLE_DN, PROXY_DN, PROXY_PASSWORD, user

pytestmark = pytest.mark.integration


def _cli() -> str:
    candidate = Path(sys.executable).parent / "axigen-fe"
    return str(candidate) if candidate.exists() else "axigen-fe"


def _config(tmp_path: Path, slapd: Any, *, uris: list[str] | None = None, extra: str = "") -> Path:
    (tmp_path / "proxy.secret").write_text(PROXY_PASSWORD + "\n")
    (tmp_path / "map.txt").write_text("*@example.net 192.0.2.7:1143\n")
    uri_list = ", ".join(f'"{u}"' for u in (uris or [slapd.ldap_uri]))
    p = tmp_path / "node.toml"
    p.write_text(
        f"""
[[ldap_connector]]
name = "dir"
uris = [{uri_list}]
start_tls = true
ca_file = "{slapd.ca_file}"
bind_dn = "{PROXY_DN}"
bind_password_file = "proxy.secret"
base_dn = "{PEOPLE_DN}"
timeout = 2.0

[[usermap]]
name = "main"
type = "ldap-password"
connector = "dir"

[[usermap]]
name = "bind"
type = "ldap-bind"
connector = "dir"

[[usermap]]
name = "local"
type = "file"
path = "map.txt"

[imap]
usermap = "main"
[smtp]
usermap = "local"
domains = ["example.net"]
{extra}
"""
    )
    return p


def _lookup(config: Path, *args: str, password: str | None = None) -> tuple[int, dict[str, Any]]:
    cmd = [_cli(), "lookup", "--config", str(config), *args]
    if password is not None:
        cmd.insert(-1, "--password-stdin")
    done = subprocess.run(
        cmd,
        input=(password + "\n").encode() if password is not None else None,
        capture_output=True,
        timeout=60,
    )
    out = done.stdout.decode().strip()
    return done.returncode, (json.loads(out) if out else {"stderr": done.stderr.decode()})


def test_routes_and_checks_passwords_with_the_documented_exit_codes(
    tmp_path: Path, slapd: Any, backend_hosts: dict[str, str]
) -> None:
    cfg = _config(tmp_path, slapd)
    code, out = _lookup(cfg, "alice@example.com")
    assert code == 0
    assert out == {
        "address": "alice@example.com",
        "usermap": "main",
        "result": "routed",
        "host": backend_hosts["a"],
        "port": None,
        "detail": out["detail"],
    }
    alice = user("alice@example.com")
    assert _lookup(cfg, "Alice@Example.COM", password=alice.password)[0] == 0
    code, out = _lookup(cfg, "alice@example.com", password="wrong")
    assert (code, out["result"]) == (1, "bad-password")
    code, out = _lookup(cfg, "nobody@example.com", password="x")
    assert (code, out["result"], out["host"]) == (1, "unknown-user", None)


def test_non_ascii_password_from_stdin(tmp_path: Path, slapd: Any) -> None:
    cfg = _config(tmp_path, slapd)
    umlaut = user("umlaut@example.com")
    assert _lookup(cfg, "umlaut@example.com", password=umlaut.password)[1]["result"] == "routed"


def test_usermap_and_service_selection(
    tmp_path: Path, slapd: Any, backend_hosts: dict[str, str]
) -> None:
    cfg = _config(tmp_path, slapd)
    code, out = _lookup(cfg, "--service", "smtp", "x@example.net")
    assert (code, out["usermap"], out["host"], out["port"]) == (0, "local", "192.0.2.7", 1143)
    carol = user("carol@ad.example.com")
    cfg_ad = (
        _config(tmp_path, slapd)
        .read_text()
        .replace(f'base_dn = "{PEOPLE_DN}"', 'base_dn = "dc=example,dc=com"')
    )
    cfg_ad = cfg_ad.replace(
        "timeout = 2.0", 'timeout = 2.0\nfilter = "(|(sAMAccountName=%u)(userPrincipalName=%e))"'
    )
    (tmp_path / "ad.toml").write_text(cfg_ad)
    code, out = _lookup(
        tmp_path / "ad.toml", "--usermap", "bind", "carol@ad.example.com", password=carol.password
    )
    assert (code, out["result"], out["host"]) == (0, "routed", backend_hosts["b"])
    assert (
        _lookup(tmp_path / "ad.toml", "--usermap", "bind", "carol@ad.example.com", password="")[1][
            "result"
        ]
        == "bad-password"
    )


def test_directory_down_is_tempfail_75_never_bad_password(
    tmp_path: Path, private_slapd: Any
) -> None:
    cfg = _config(tmp_path, private_slapd)
    private_slapd.stop()
    code, out = _lookup(cfg, "alice@example.com", password="alice-secret")
    assert (code, out["result"]) == (75, "tempfail")
    private_slapd.start()
    assert _lookup(cfg, "alice@example.com", password="alice-secret")[0] == 0


def test_config_and_usage_errors_exit_2(tmp_path: Path, slapd: Any) -> None:
    cfg = _config(tmp_path, slapd)
    code, out = _lookup(cfg, "--usermap", "nope", "alice@example.com")
    assert code == 2 and "no [[usermap]] named 'nope'" in out["stderr"]
    broken = tmp_path / "broken.toml"
    broken.write_text(cfg.read_text().replace('type = "file"', 'type = "files"'))
    code, out = _lookup(broken, "alice@example.com")
    assert code == 2 and "usermap[2].type: 'files' is not allowed" in out["stderr"]
