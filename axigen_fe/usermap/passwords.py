"""Verify a password against a stored userPassword value ({SSHA}, {CRYPT}, ...).

Every comparison goes through C{hmac.compare_digest} so the time taken does not tell
an attacker how much of a guess was right.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import hmac

import crypt_r


class Verdict(enum.Enum):
    MATCH = "match"
    MISMATCH = "mismatch"
    UNKNOWN_SCHEME = "unknown-scheme"


_SALTED = {
    "SSHA": ("sha1", 20),
    "SSHA256": ("sha256", 32),
    "SSHA512": ("sha512", 64),
    "SMD5": ("md5", 16),
}
_UNSALTED = {"SHA": "sha1", "SHA256": "sha256", "SHA512": "sha512", "MD5": "md5"}
_CRYPT_PREFIXES = ("$1$", "$5$", "$6$", "$2a$", "$2b$", "$2y$")


def scheme_of(stored: str) -> str:
    """The scheme name of C{stored} (upper case), or "CLEARTEXT" when it has none."""
    if stored.startswith("{"):
        end = stored.find("}")
        if end > 1:
            return stored[1:end].upper()
    return "CLEARTEXT"


def _b64(value: str) -> bytes | None:
    try:
        return base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None


def verify(stored: str, password: bytes) -> Verdict:
    """Check C{password} (UTF-8 bytes as the client sent them) against C{stored}."""
    scheme = scheme_of(stored)
    body = stored[len(scheme) + 2 :] if scheme != "CLEARTEXT" else stored
    if scheme in _SALTED:
        algo, size = _SALTED[scheme]
        raw = _b64(body)
        if raw is None or len(raw) < size:
            return Verdict.MISMATCH
        digest, salt = raw[:size], raw[size:]
        return _same(hashlib.new(algo, password + salt).digest(), digest)
    if scheme in _UNSALTED:
        raw = _b64(body)
        if raw is None:
            return Verdict.MISMATCH
        return _same(hashlib.new(_UNSALTED[scheme], password).digest(), raw)
    if scheme == "CRYPT":
        if not body.startswith(_CRYPT_PREFIXES):
            return Verdict.UNKNOWN_SCHEME
        try:
            computed = crypt_r.crypt(password.decode("utf-8", "surrogateescape"), body)
        except (OSError, ValueError, UnicodeError):
            return Verdict.MISMATCH
        if not computed:
            return Verdict.MISMATCH
        return _same(computed.encode(), body.encode())
    if scheme in ("PLAIN", "CLEARTEXT"):
        return _same(password, body.encode("utf-8"))
    return Verdict.UNKNOWN_SCHEME


def _same(a: bytes, b: bytes) -> Verdict:
    return Verdict.MATCH if hmac.compare_digest(a, b) else Verdict.MISMATCH
