"""The DATA scanner: the end is found wherever chunks split, the body passes untouched,
lone dots next to bare CR/LF (SMTP smuggling) are caught before they are forwarded."""

from __future__ import annotations

import random

import pytest

from axigen_fe.smtp.datastream import DataScanner

BODY = b"Subject: x\r\n\r\n..dot-stuffed\r\n.\tnot the end\r\nline\r\n"


def splits(data: bytes, rng: random.Random) -> list[bytes]:
    cuts = sorted(rng.sample(range(1, len(data)), rng.randint(0, min(12, len(data) - 1))))
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]


def run(chunks: list[bytes]) -> tuple[bytes, bool, bytes, bool, int]:
    s = DataScanner()
    forwarded, smuggling = b"", False
    for i, chunk in enumerate(chunks):
        step = s.feed(chunk)
        forwarded += step.forward
        smuggling |= step.smuggling
        if step.ended:
            return forwarded, True, step.leftover + b"".join(chunks[i + 1 :]), smuggling, s.size
    return forwarded, False, b"", smuggling, s.size


def test_body_passes_through_byte_for_byte_however_it_is_split() -> None:
    rng = random.Random(5321)
    stream = BODY + b".\r\nQUIT\r\n"
    for _ in range(2000):
        forwarded, ended, leftover, smuggling, size = run(splits(stream, rng))
        assert (forwarded, ended, leftover, smuggling) == (
            BODY + b".\r\n",
            True,
            b"QUIT\r\n",
            False,
        )
        assert size == len(BODY)


def test_empty_message_and_leading_dot_lines() -> None:
    assert run([b".\r\n"])[:3] == (b".\r\n", True, b"")
    assert run([b"..\r\n.\r\n"])[:2] == (b"..\r\n.\r\n", True)
    assert run([b"\r\n", b".", b"\r", b"\n"])[:2] == (b"\r\n.\r\n", True)


def test_not_ended_without_the_terminator() -> None:
    forwarded, ended, *_ = run([BODY, b".x\r\n", b"tail"])
    assert not ended
    assert forwarded == BODY + b".x\r\ntail"


def test_a_held_dot_is_forwarded_once_its_line_goes_on() -> None:
    s = DataScanner()
    assert s.feed(b"a\r\n.").forward == b"a\r\n"
    assert s.feed(b"b\r\n").forward == b".b\r\n"


@pytest.mark.parametrize(
    "bad",
    [
        b"a\n.\nMAIL",
        b"a\r\n.\nMAIL",
        b"a\n.\r\nMAIL",
        b"a\r.\rMAIL",
        b"a\r.\r\nMAIL",
        b".\nMAIL",
        b"a\r\n.\rX",
    ],
)
def test_smuggling_sequences_are_caught_and_never_forwarded(bad: bytes) -> None:
    rng = random.Random(2023)
    stream = bad + b" FROM:<x@y>\r\n.\r\nQUIT\r\n"
    for _ in range(300):
        forwarded, ended, leftover, smuggling, _ = run(splits(stream, rng))
        assert smuggling and ended and leftover == b"QUIT\r\n"
        assert b"MAIL" not in forwarded
        assert b".\n" not in forwarded and b".\r" not in forwarded


def test_discard_finds_the_real_end() -> None:
    s = DataScanner()
    assert s.feed(b"abc\r\n").forward == b"abc\r\n"
    s.discard()
    assert s.feed(b"more\r\n.").forward == b""
    step = s.feed(b"\r\nNOOP\r\n")
    assert (step.forward, step.ended, step.leftover) == (b"", True, b"NOOP\r\n")


def test_size_counts_body_octets_only() -> None:
    s = DataScanner()
    s.feed(b"x" * 100 + b"\r\n")
    assert s.size == 102
    s.feed(b".\r\n")
    assert s.size == 102
