"""The Local File map: exact beats wildcard, reload on change, keep the old table on errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from twisted.internet.task import Clock

from axigen_fe.usermap.file import FileMapError, FileUserMap, parse_map
from axigen_fe.usermap.interface import LookupResult, Outcome
from axigen_fe.usermap.results import unless_password_checked


def _answer(m: FileUserMap, address: str, password: bytes | None = None) -> LookupResult:
    results: list[LookupResult] = []
    m.lookup(address, password).addCallback(results.append)
    return results[0]


def _write(path: Path, text: str, bump: int) -> None:
    path.write_text(text)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + bump * 1_000_000_000))


def test_exact_address_beats_domain_wildcard_and_case_is_ignored(tmp_path: Path) -> None:
    p = tmp_path / "map.txt"
    p.write_text("# comment\n*@example.com  10.0.0.1\nAlice@Example.com 10.0.0.2:1143\n\n")
    m = FileUserMap("f", p, Clock())
    alice = _answer(m, "ALICE@example.COM")
    assert (alice.outcome, alice.host, alice.port) == (Outcome.ROUTED, "10.0.0.2", 1143)
    other = _answer(m, "zed@example.com")
    assert (other.host, other.port) == ("10.0.0.1", None)
    assert _answer(m, "x@example.org").outcome is Outcome.UNKNOWN_USER


def test_password_field_is_checked_when_a_password_is_given(tmp_path: Path) -> None:
    p = tmp_path / "map.txt"
    p.write_text("bob@example.com b.example.com {PLAIN}hunter2\nu@example.com h {FOO}x\n")
    m = FileUserMap("f", p, Clock())
    assert _answer(m, "bob@example.com", b"hunter2").outcome is Outcome.ROUTED
    assert _answer(m, "bob@example.com", b"wrong").outcome is Outcome.BAD_PASSWORD
    assert _answer(m, "bob@example.com").outcome is Outcome.ROUTED  # route only
    assert _answer(m, "u@example.com", b"x").outcome is Outcome.BAD_PASSWORD


def test_only_a_verified_password_counts_as_checked(tmp_path: Path) -> None:
    """A line without a hash routes any password, and says it did not check it."""
    p = tmp_path / "map.txt"
    p.write_text("bob@example.com b {PLAIN}hunter2\ncarol@example.com c\n")
    m = FileUserMap("f", p, Clock())
    assert _answer(m, "bob@example.com", b"hunter2").password_checked
    assert not _answer(m, "bob@example.com").password_checked  # routing only
    carol = _answer(m, "carol@example.com", b"anything")
    assert carol.outcome is Outcome.ROUTED and not carol.password_checked
    assert carol.detail == "file, no password stored"
    refused = unless_password_checked(carol)
    assert refused.outcome is Outcome.BAD_PASSWORD and "stores no password" in refused.detail
    bob = _answer(m, "bob@example.com", b"hunter2")
    assert unless_password_checked(bob) is bob


def test_changed_file_is_reread_and_a_broken_one_keeps_the_old_table(tmp_path: Path) -> None:
    p = tmp_path / "map.txt"
    p.write_text("a@example.com host1\n")
    clock = Clock()
    m = FileUserMap("f", p, clock)
    assert _answer(m, "a@example.com").host == "host1"
    _write(p, "a@example.com host2\n", 1)
    clock.advance(2)
    assert _answer(m, "a@example.com").host == "host2"
    _write(p, "a@example.com\n", 2)  # missing host: invalid
    clock.advance(2)
    assert _answer(m, "a@example.com").host == "host2"
    _write(p, "a@example.com host3\n", 3)
    clock.advance(2)
    assert _answer(m, "a@example.com").host == "host3"


def test_bad_lines_are_named_with_file_and_line() -> None:
    with pytest.raises(FileMapError, match="m.txt:2"):
        parse_map("a@b.c h\nnot-an-address h\n", "m.txt")
    with pytest.raises(FileMapError, match="wildcards"):
        parse_map("a*@b.c h\n", "m.txt")
