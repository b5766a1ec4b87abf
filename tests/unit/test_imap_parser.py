"""The pre-auth IMAP command reader: what clients really send before login."""

from __future__ import annotations

from axigen_fe.imap.parser import Atom, BadCommand, Command, CommandReader, Continue


def events(reader: CommandReader) -> list[object]:
    out: list[object] = []
    while (e := reader.next_command()) is not None:
        out.append(e)
    return out


def one(data: bytes, **kw: int) -> object:
    r = CommandReader(**kw)
    r.feed(data)
    got = events(r)
    assert len(got) == 1, got
    return got[0]


def test_atoms_and_quoted_strings() -> None:
    cmd = one(b'a1 LOGIN alice "se cr\\"et\\\\"\r\n')
    assert cmd == Command(b"a1", "LOGIN", (b"alice", b'se cr"et\\'))
    assert isinstance(cmd, Command) and isinstance(cmd.args[0], Atom)
    assert not isinstance(cmd.args[1], Atom)


def test_command_name_is_case_insensitive_and_bare_lf_accepted() -> None:
    assert one(b"x capability\n") == Command(b"x", "CAPABILITY", ())


def test_utf8_in_quoted_strings_and_atoms() -> None:
    cmd = one('t LOGIN jürgen "pässwörd"\r\n'.encode())
    assert cmd == Command(b"t", "LOGIN", ("jürgen".encode(), "pässwörd".encode()))


def test_synchronizing_literal_asks_for_continuation_then_completes() -> None:
    r = CommandReader()
    r.feed(b"a LOGIN {5}\r\n")
    assert r.next_command() == Continue()
    assert r.next_command() is None
    r.feed(b"alice {6}\r\n")
    assert r.next_command() == Continue()
    r.feed(b"p w\r\nd\r\n")
    assert r.next_command() == Command(b"a", "LOGIN", (b"alice", b"p w\r\nd"))


def test_non_synchronizing_literal_needs_no_continuation() -> None:
    r = CommandReader()
    r.feed(b"a LOGIN {5+}\r\nalice {3+}\r\npwd\r\nb NOOP\r\n")
    assert events(r) == [Command(b"a", "LOGIN", (b"alice", b"pwd")), Command(b"b", "NOOP", ())]


def test_literal_split_across_packets() -> None:
    r = CommandReader()
    for chunk in (b"a LOG", b"IN {5+}\r\nal", b'ice "x"', b"\r", b"\n"):
        r.feed(chunk)
        got = events(r)
    assert got == [Command(b"a", "LOGIN", (b"alice", b"x"))]


def test_id_with_list_and_nil() -> None:
    cmd = one(b'a ID ("name" "Thunderbird" "version" NIL)\r\n')
    assert cmd == Command(b"a", "ID", ([b"name", b"Thunderbird", b"version", b"NIL"],))
    assert isinstance(cmd, Command)
    args = cmd.args[0]
    assert isinstance(args, list) and isinstance(args[3], Atom)
    nil = one(b"a ID NIL\r\n")
    assert isinstance(nil, Command) and isinstance(nil.args[0], Atom)
    assert one(b"a ID ()\r\n") == Command(b"a", "ID", ([],))


def test_authenticate_with_initial_response() -> None:
    assert one(b"a AUTHENTICATE PLAIN AGFsaWNlAHNlY3JldA==\r\n") == Command(
        b"a", "AUTHENTICATE", (b"PLAIN", b"AGFsaWNlAHNlY3JldA==")
    )


def test_trailing_space_tolerated() -> None:
    assert one(b"a NOOP \r\n") == Command(b"a", "NOOP", ())


def test_empty_lines_between_commands_are_ignored() -> None:
    r = CommandReader()
    r.feed(b"\r\n\r\na NOOP\r\n")
    assert events(r) == [Command(b"a", "NOOP", ())]


def test_syntax_errors_name_the_tag_when_there_is_one() -> None:
    assert one(b'a LOGIN "unterminated\r\n') == BadCommand(b"a", "Unterminated quoted string.")
    assert one(b'a LOGIN "bad\\escape"\r\n') == BadCommand(b"a", "Invalid escape in quoted string.")
    assert one(b"a LOGIN x  y\r\n") == BadCommand(b"a", "Expected an atom.")
    bad = one(b"(oops\r\n")
    assert isinstance(bad, BadCommand) and bad.tag is None and not bad.fatal
    assert one(b"+tag NOOP\r\n") == BadCommand(None, "Missing or invalid tag.")
    assert one(b"a\r\n") == BadCommand(b"a", "Expected a space between arguments.")


def test_reader_recovers_after_a_bad_command() -> None:
    r = CommandReader()
    r.feed(b'a LOGIN "x\r\nb NOOP\r\n')
    got = events(r)
    assert isinstance(got[0], BadCommand)
    assert got[1] == Command(b"b", "NOOP", ())


def test_bad_prefix_before_sync_literal_is_refused_without_waiting() -> None:
    r = CommandReader()
    r.feed(b'a LOGIN "x {5}\r\n')
    bad = r.next_command()
    assert isinstance(bad, BadCommand) and bad.tag == b"a" and not bad.fatal
    r.feed(b"b NOOP\r\n")  # the client did not send the literal: next line is a command
    assert r.next_command() == Command(b"b", "NOOP", ())


def test_bad_prefix_before_non_sync_literal_swallows_the_literal() -> None:
    r = CommandReader()
    r.feed(b'a LOGIN "x {5+}\r\nb NOO\r\nc NOOP\r\n')
    got = events(r)
    assert len(got) == 2 and isinstance(got[0], BadCommand) and got[0].tag == b"a"
    assert got[1] == Command(b"c", "NOOP", ())


def test_oversized_sync_literal_is_refused_but_not_fatal() -> None:
    r = CommandReader(max_literal=10)
    r.feed(b"a LOGIN {11}\r\n")
    bad = r.next_command()
    assert bad == BadCommand(b"a", "Literal too large.")
    r.feed(b"b NOOP\r\n")
    assert r.next_command() == Command(b"b", "NOOP", ())


def test_oversized_non_sync_literal_is_fatal() -> None:
    bad = one(b"a LOGIN {11+}\r\n", max_literal=10)
    assert bad == BadCommand(b"a", "Literal too large.", fatal=True)


def test_line_too_long_is_fatal_even_without_newline() -> None:
    r = CommandReader(max_line=20)
    r.feed(b"a NOOP " + b"x" * 30)
    bad = r.next_command()
    assert isinstance(bad, BadCommand) and bad.fatal
    assert r.buffered == 0


def test_total_command_size_is_bounded() -> None:
    r = CommandReader(max_literal=100, max_command=150)
    r.feed(b"a LOGIN {100+}\r\n" + b"x" * 100 + b" {100+}\r\n")
    bad = r.next_command()
    assert isinstance(bad, BadCommand) and bad.fatal


def test_discard_drops_pipelined_bytes() -> None:
    r = CommandReader()
    r.feed(b"a STARTTLS\r\nb LOGIN evil pw\r\n")
    assert r.next_command() == Command(b"a", "STARTTLS", ())
    assert r.discard() == len(b"b LOGIN evil pw\r\n")
    assert r.next_command() is None


def test_take_buffer_returns_what_follows() -> None:
    r = CommandReader()
    r.feed(b"a LOGIN u p\r\nb SELECT INBOX\r\nc FET")
    assert r.next_command() == Command(b"a", "LOGIN", (b"u", b"p"))
    assert r.take_buffer() == b"b SELECT INBOX\r\nc FET"


def test_sasl_lines() -> None:
    r = CommandReader(max_line=16)
    r.feed(b"AGEAYg==\r\n*\r\n")
    assert r.next_line() == b"AGEAYg=="
    assert r.next_line() == b"*"
    assert r.next_line() is None
    r.feed(b"y" * 20)
    bad = r.next_line()
    assert isinstance(bad, BadCommand) and bad.fatal


def test_deeply_nested_lists_are_refused() -> None:
    bad = one(b"a ID (((((x)))))\r\n")
    assert isinstance(bad, BadCommand)
