"""The shipped example configuration stays true: it parses, and documents every key."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

from axigen_fe.config import model
from axigen_fe.config.load import load

ETC = Path(__file__).resolve().parents[2] / "etc"


def test_example_config_is_valid_given_its_certificate_files(tmp_path: Path) -> None:
    for name in ("axigen-fe.toml", "usermap.txt", "ldap.secret"):
        shutil.copy(ETC / name, tmp_path / name)
    for name in ("fe.pem", "fe.key"):
        (tmp_path / name).write_text("placeholder\n")
    cfg = load(tmp_path / "axigen-fe.toml")
    assert set(cfg.services) == {"imap", "pop3", "smtp", "submission"}


def test_example_config_mentions_every_key_the_loader_knows() -> None:
    text = (ETC / "axigen-fe.toml").read_text()
    classes = [
        model.LDAPConnectorConfig,
        model.UserMapConfig,
        model.ListenerConfig,
        model.MailboxServiceConfig,
        model.SMTPServiceConfig,
    ]
    internal = {
        "name",
        "kind",
        "listeners",
        "require_auth",
        "bind_password",
        "backend_master_password",
    }
    missing = [
        f"{cls.__name__}.{f.name}"
        for cls in classes
        for f in dataclasses.fields(cls)
        if f.name not in internal and f.name not in text
    ]
    assert missing == []
