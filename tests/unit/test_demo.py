# mypy: disable-error-code="no-untyped-call"
# (twisted.mail and twisted.internet.testing are untyped: calling into them is not an error here)
"""The embedded demo's parts, in memory: mail store, back-end logins, directory, config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.mail import imap4
from twisted.python.failure import Failure

from axigen_fe.config.model import UserMapType
from axigen_fe.demo.accounts import DemoPasswords, POP3View
from axigen_fe.demo.backend_imap import DemoIMAPServer
from axigen_fe.demo.backends import make_backends
from axigen_fe.demo.config import demo_configuration, render
from axigen_fe.demo.directory import build_tree
from axigen_fe.demo.layout import DEMO_USERS, PROXY_DN, PROXY_PASSWORD, DemoLayout
from axigen_fe.demo.mailstore import Mailbox
from axigen_fe.demo.node import banner

REPO = Path(__file__).resolve().parents[2]


def _result(d: Deferred[Any]) -> Any:
    out: list[Any] = []
    d.addBoth(out.append)
    assert out, "the Deferred has not fired"
    return out[0]


def _box(*subjects: str) -> Mailbox:
    box = Mailbox("INBOX")
    for s in subjects:
        box.deliver(f"Subject: {s}\r\n\r\nbody {s}\r\n".encode())
    return box


# --- layout and configuration ---------------------------------------------------------


def test_ports_derive_from_the_base_port() -> None:
    layout = DemoLayout(base_port=20000)
    assert (layout.imap_port, layout.pop3_port, layout.smtp_port, layout.submission_port) == (
        20143,
        20110,
        20025,
        20587,
    )
    assert (layout.backend_imap_port, layout.ldap_uri) == (21143, "ldap://127.0.0.1:20389")


@pytest.mark.parametrize("hosts", [("127.0.0.11", "127.0.0.11"), ("127.0.0.11", ""), ("x", "y")])
def test_layout_refuses_unusable_backend_addresses(hosts: tuple[str, str]) -> None:
    with pytest.raises(ValueError, match="--demo-backends"):
        DemoLayout(backend_hosts=hosts)


def test_checked_in_demo_toml_is_the_default_rendering() -> None:
    """etc/demo.toml is exactly what --demo runs with the default layout."""
    assert (REPO / "etc" / "demo.toml").read_text(encoding="utf-8") == render(DemoLayout())


def test_demo_config_has_only_the_services_asked_for() -> None:
    config = demo_configuration(DemoLayout(), ["imap"])
    assert list(config.services) == ["imap"]
    listener = config.services["imap"].listeners[0]
    assert listener.endpoint == "tcp:port=10143:interface=127.0.0.1"
    assert listener.allow_plaintext_without_tls
    assert config.usermaps["main"].type is UserMapType.LDAP_PASSWORD
    assert config.connectors["demo-directory"].bind_dn == PROXY_DN


def test_banner_names_ports_users_and_commands_for_the_services_given() -> None:
    lines = banner(DemoLayout(), ["imap"])
    assert lines[0] == (
        "axigen-fe demo: IMAP 127.0.0.1:10143; users alice@demo.test/alice, bob@demo.test/bob"
    )
    text = "\n".join(lines)
    assert "import imaplib" in text and "import poplib" not in text
    assert "axigen-fe lookup --config etc/demo.toml" in text


def test_banner_for_other_ports_does_not_point_at_etc_demo_toml() -> None:
    text = "\n".join(banner(DemoLayout(base_port=30000), ["imap"]))
    assert "etc/demo.toml matches the default ports" in text


# --- directory ----------------------------------------------------------------------


def test_directory_binds_the_service_account_with_its_password() -> None:
    root = build_tree(DemoLayout(), DEMO_USERS)
    entry = _result(root.lookup(PROXY_DN))
    assert _result(entry.bind(PROXY_PASSWORD.encode())) is entry
    assert isinstance(_result(entry.bind(b"wrong")), Failure)


def test_directory_users_carry_mail_host_and_ssha_password() -> None:
    root = build_tree(DemoLayout(), DEMO_USERS)
    bob = _result(root.lookup("uid=bob,ou=people,dc=demo,dc=test"))
    assert list(bob["mailHost"]) == ["127.0.0.12"]
    assert next(iter(bob["userPassword"])).startswith(b"{SSHA}")


# --- mail store ----------------------------------------------------------------------


def test_fetch_star_means_the_last_message() -> None:
    box = _box("a", "b", "c")
    assert [seq for seq, _ in box.fetch(imap4.parseIdList(b"2:*"), uid=False)] == [2, 3]
    assert [m.uid for _, m in box.fetch(imap4.parseIdList(b"3:*"), uid=True)] == [3]
    assert [m.uid for _, m in box.fetch(imap4.parseIdList(b"9:*"), uid=True)] == [3]


def test_store_and_expunge_report_highest_sequence_first() -> None:
    box = _box("a", "b", "c")
    assert box.store(imap4.parseIdList(b"1,3"), ["\\Deleted"], 1, uid=False) == {
        1: ["\\Deleted"],
        3: ["\\Deleted"],
    }
    assert box.expunge() == [3, 1]
    assert [m.uid for m in box.messages] == [2]


def test_message_headers_and_body() -> None:
    box = _box("hello")
    message = box.messages[0]
    assert message.getHeaders(False, "subject") == {"subject": "hello"}
    assert message.getHeaders(True, "subject") == {}
    assert message.getBodyFile().read() == b"body hello\r\n"
    assert message.open().read() == message.raw


def test_pop3_deletes_reach_the_inbox_only_on_sync() -> None:
    box = _box("a", "b")
    view = POP3View(box)
    view.deleteMessage(0)
    assert view.listMessages() == [0, box.messages[1].getSize()]
    assert box.getMessageCount() == 2
    view.sync()
    assert [m.getHeaders(False, "subject")["subject"] for m in box.messages] == ["b"]


def test_pop3_hands_out_lf_lines_for_twisted_to_turn_into_crlf() -> None:
    view = POP3View(_box("a"))
    assert b"\r" not in view.getMessage(0).read()


# --- back-end logins ------------------------------------------------------------------


def test_backend_passwords_ignore_address_case_but_not_password_case() -> None:
    checker = DemoPasswords({"alice@demo.test": "alice"})
    assert _result(checker.requestAvatarId(UsernamePassword(b"Alice@Demo.Test", b"alice"))) == (
        b"alice@demo.test"
    )
    failed = _result(checker.requestAvatarId(UsernamePassword(b"alice@demo.test", b"ALICE")))
    assert isinstance(failed, Failure) and failed.check(UnauthorizedLogin)


def test_each_backend_holds_only_its_users_with_a_welcome() -> None:
    first, second = make_backends(Clock(), DemoLayout(), DEMO_USERS)
    assert first.store.account("alice@demo.test") is not None
    assert first.store.account("bob@demo.test") is None
    bob = second.store.account("bob@demo.test")
    assert bob is not None
    welcome = bob.inbox.messages[0].getHeaders(False, "subject")
    assert welcome == {"subject": "Welcome to demo back-end 2"}


def test_backend_imap_greets_with_its_name_and_answers_id() -> None:
    (backend, _) = make_backends(Clock(), DemoLayout(), DEMO_USERS)
    server = DemoIMAPServer(backend.name, backend.portal, backend.cooperator.coiterate)
    transport = StringTransport()
    server.makeConnection(transport)
    assert b"demo back-end 1 IMAP4rev1 ready" in transport.value()
    assert b" ID" in transport.value()
    transport.clear()
    server.dataReceived(b'a1 ID ("x-originating-ip" "192.0.2.7")\r\n')
    assert transport.value() == b'* ID ("name" "demo back-end 1")\r\na1 OK ID completed\r\n'
    assert server.client_fields == {"x-originating-ip": "192.0.2.7"}
    transport.clear()
    server.dataReceived(b"a2 ID (unbalanced\r\n")
    assert transport.value().startswith(b"a2 BAD")
    server.connectionLost(Failure(Exception("done")))
