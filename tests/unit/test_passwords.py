"""Stored password schemes are verified the way OpenLDAP and Dovecot write them."""

from __future__ import annotations

import base64
import hashlib

import crypt_r
import pytest

from axigen_fe.usermap.passwords import Verdict, scheme_of, verify


def _salted(prefix: str, algo: str, pw: bytes, salt: bytes = b"saltsalt") -> str:
    return prefix + base64.b64encode(hashlib.new(algo, pw + salt).digest() + salt).decode()


CASES = [
    _salted("{SSHA}", "sha1", b"secret"),
    _salted("{SSHA256}", "sha256", b"secret"),
    _salted("{SSHA512}", "sha512", b"secret"),
    _salted("{SMD5}", "md5", b"secret"),
    "{SHA}" + base64.b64encode(hashlib.sha1(b"secret").digest()).decode(),
    "{MD5}" + base64.b64encode(hashlib.md5(b"secret").digest()).decode(),
    "{CRYPT}" + crypt_r.crypt("secret", "$1$abcdefgh"),
    "{CRYPT}" + crypt_r.crypt("secret", "$5$abcdefgh"),
    "{CRYPT}" + crypt_r.crypt("secret", "$6$abcdefgh"),
    "{CRYPT}" + crypt_r.crypt("secret", "$2y$04$" + "a" * 22),
    "{crypt}" + crypt_r.crypt("secret", "$2b$04$" + "b" * 22),
    "{PLAIN}secret",
    "secret",
]


@pytest.mark.parametrize(
    "stored", CASES, ids=[c.split("}")[0].lstrip("{") if "}" in c else "clear" for c in CASES]
)
def test_each_scheme_matches_the_right_password_only(stored: str) -> None:
    assert verify(stored, b"secret") is Verdict.MATCH
    assert verify(stored, b"Secret") is Verdict.MISMATCH
    assert verify(stored, b"") is Verdict.MISMATCH


def test_non_ascii_passwords_are_compared_as_utf8_bytes() -> None:
    pw = "pässwörd-€".encode()
    assert verify(_salted("{SSHA}", "sha1", pw), pw) is Verdict.MATCH
    assert verify("{CRYPT}" + crypt_r.crypt("pässwörd-€", "$6$x"), pw) is Verdict.MATCH
    assert verify("{PLAIN}pässwörd-€", pw) is Verdict.MATCH


def test_unknown_scheme_is_reported_not_guessed() -> None:
    assert verify("{FOO}c2VjcmV0", b"secret") is Verdict.UNKNOWN_SCHEME
    assert verify("{CRYPT}$9$whatever", b"secret") is Verdict.UNKNOWN_SCHEME
    assert scheme_of("{ssha}x") == "SSHA"
    assert scheme_of("plain") == "CLEARTEXT"


def test_corrupt_hashes_never_match() -> None:
    assert verify("{SSHA}not base64!", b"secret") is Verdict.MISMATCH
    assert verify("{SSHA}" + base64.b64encode(b"short").decode(), b"secret") is Verdict.MISMATCH
