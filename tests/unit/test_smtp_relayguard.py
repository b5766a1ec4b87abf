"""The submission relay guard: commands filtered, message content untouched, DATA waited for."""

from __future__ import annotations

from axigen_fe.smtp.relayguard import MAX_COMMAND_LINE, REFUSED_LINE, CommandGuard, Mode


def test_plain_commands_pass_and_identity_changing_ones_are_replaced() -> None:
    g = CommandGuard()
    f = g.from_client(
        b"NOOP\r\nxclient LOGIN=bob@example.com\r\nXFORWARD ADDR=10.1.1.1\r\nSTARTTLS\r\nRSET\r\n"
    )
    assert f.data == b"NOOP\r\n" + REFUSED_LINE * 3 + b"RSET\r\n"
    assert f.refused == ["XCLIENT", "XFORWARD", "STARTTLS"]
    assert f.held == b""


def test_bytes_after_data_wait_for_the_answer_then_a_354_makes_them_the_body() -> None:
    g = CommandGuard()
    # a client that does not wait for 354 cannot have its body read as commands (or back)
    f = g.from_client(b"MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\nXCLIENT LOGIN=bob\r\n.\r\n")
    assert f.data == b"MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\n"
    assert f.held == b"XCLIENT LOGIN=bob\r\n.\r\n" and g.mode is Mode.WAITING
    assert not g.from_backend(b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n")  # MAIL, RCPT
    assert g.from_backend(b"354 End data with <CR><LF>.<CR><LF>\r\n")
    body = g.from_client(f.held)
    assert body.data == b"XCLIENT LOGIN=bob\r\n.\r\n" and body.refused == []  # content
    assert g.mode is Mode.COMMANDS
    assert g.from_client(b"XCLIENT LOGIN=bob\r\n").data == REFUSED_LINE


def test_a_refused_data_leaves_the_held_bytes_commands() -> None:
    g = CommandGuard()
    f = g.from_client(b"DATA\r\nXCLIENT LOGIN=bob\r\n")
    assert g.from_backend(b"554 5.5.1 Error: no valid recipients\r\n")
    assert g.from_client(f.held).data == REFUSED_LINE


def test_multiline_replies_count_once_and_may_arrive_in_pieces() -> None:
    g = CommandGuard()
    g.from_client(b"EHLO x\r\nDATA\r\n")
    assert not g.from_backend(b"250-mx\r\n250-PIPEL")
    assert not g.from_backend(b"INING\r\n250 8BITMIME\r\n")
    assert g.from_backend(b"354 go\r\n") and g.mode is Mode.BODY


def test_the_end_of_a_body_is_found_across_reads_and_an_empty_body_ends_at_once() -> None:
    g = CommandGuard()
    g.from_client(b"DATA\r\n")
    g.from_backend(b"354 go\r\n")
    assert g.from_client(b"line one\r").data == b"line one\r"
    assert g.from_client(b"\n.").data == b"\n."
    f = g.from_client(b"\r\nXCLIENT LOGIN=bob\r\n")
    assert f.data == b"\r\n" + REFUSED_LINE  # the body ended at the lone dot
    g.from_client(b"DATA\r\n")
    g.from_backend(b"250 2.0.0 queued\r\n502 5.5.2 refused\r\n354 go\r\n")
    assert g.from_client(b".\r\nXFORWARD ADDR=1.2.3.4\r\n").data == b".\r\n" + REFUSED_LINE


def test_dot_stuffed_lines_do_not_end_the_body() -> None:
    g = CommandGuard()
    g.from_client(b"DATA\r\n")
    g.from_backend(b"354 go\r\n")
    g.from_client(b"..\r\n.. x\r\n")
    assert g.mode is Mode.BODY


def test_bdat_chunks_pass_by_size() -> None:
    g = CommandGuard()
    chunk = b"XCLIENT LOGIN=bob\r\n"
    f = g.from_client(b"BDAT %d LAST\r\n" % len(chunk) + chunk + b"XCLIENT LOGIN=bob\r\n")
    assert f.data == b"BDAT %d LAST\r\n" % len(chunk) + chunk + REFUSED_LINE
    assert g.from_client(b"BDAT many\r\n").data == REFUSED_LINE


def test_an_over_long_command_line_is_refused_whole() -> None:
    g = CommandGuard()
    f = g.from_client(b"XCLIENT LOGIN=" + b"b" * MAX_COMMAND_LINE)
    assert f.data == REFUSED_LINE
    assert g.from_client(b"bbb\r\nNOOP\r\n").data == b"NOOP\r\n"
