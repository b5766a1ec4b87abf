"""Configuration errors name the file, the key and the fix; good files give typed objects."""

from __future__ import annotations

from pathlib import Path

import pytest

from axigen_fe.cli import main
from axigen_fe.config.load import ConfigError, load
from axigen_fe.config.model import MailboxServiceConfig, OnMultiple, TLSMode, UserMapType

GOOD = """
[node]
name = "fe7"

[[ldap_connector]]
name = "directory"
uris = ["ldap://127.0.0.1:389", "ldaps://127.0.0.2:636"]
start_tls = true
bind_dn = "cn=proxy,dc=example,dc=com"
bind_password_file = "secret.txt"
base_dn = "ou=people,dc=example,dc=com"
on_multiple = "first"

[[usermap]]
name = "main"
type = "ldap-password"
connector = "directory"

[[usermap]]
name = "local"
type = "file"
path = "map.txt"
cache_ttl = 0

[imap]
usermap = "main"
backend_tls = "starttls"

[[imap.listener]]
endpoint = "tcp:port=1143:interface=127.0.0.1"
"""


def _files(tmp_path: Path, text: str) -> Path:
    (tmp_path / "secret.txt").write_text("s3cret\n")
    (tmp_path / "map.txt").write_text("a@b.c h\n")
    p = tmp_path / "node.toml"
    p.write_text(text)
    return p


def test_a_good_file_gives_frozen_typed_objects_with_paths_resolved(tmp_path: Path) -> None:
    cfg = load(_files(tmp_path, GOOD))
    c = cfg.connectors["directory"]
    assert c.bind_password == "s3cret" and c.on_multiple is OnMultiple.FIRST and c.timeout == 4.0
    assert (
        cfg.usermaps["local"].type is UserMapType.FILE
        and cfg.usermaps["local"].path == tmp_path / "map.txt"
    )
    imap = cfg.services["imap"]
    assert isinstance(imap, MailboxServiceConfig)
    assert (
        imap.backend_tls is TLSMode.STARTTLS
        and imap.backend_port == 143
        and imap.idle_timeout >= 1800
    )
    assert imap.listeners[0].endpoint.startswith("tcp:port=1143")
    assert "s3cret" not in repr(c)


def test_every_problem_is_reported_with_file_key_and_fix(tmp_path: Path) -> None:
    bad = GOOD.replace('on_multiple = "first"', 'on_multiple = "any"\ntimout = 3').replace(
        'usermap = "main"\nbackend_tls', 'usermap = "mian"\nbackend_tls'
    )
    with pytest.raises(ConfigError) as e:
        load(_files(tmp_path, bad))
    text = str(e.value)
    assert f"{tmp_path / 'node.toml'}: ldap_connector[0].on_multiple: 'any' is not allowed" in text
    assert "ldap_connector[0].timout: unknown key" in text
    assert "imap.usermap: no [[usermap]] named 'mian' (known: local, main)" in text


def test_check_config_exits_2_and_prints_each_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    p = _files(tmp_path, GOOD + "\n[pop3]\nusermap = 3\n")
    assert main(["check-config", str(p)]) == 2
    out = capsys.readouterr().out
    assert "pop3.usermap: expected a string" in out
    good = _files(tmp_path, GOOD)
    assert main(["check-config", str(good)]) == 0


def test_broken_toml_is_one_clear_problem(tmp_path: Path) -> None:
    p = tmp_path / "x.toml"
    p.write_text("[imap\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load(p)


def test_a_service_that_does_not_exist_yet_is_refused_clearly(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"webmail: the webmail proxy is not available in this version"
    ):
        load(_files(tmp_path, GOOD + '\n[webmail]\nusermap = "main"\n'))
