"""The users every integration test can rely on, in the directory and on the back-ends.

One table so that slapd (stored hashes), the Dovecot back-ends (cleartext passwd-file)
and the tests agree. Hashes are computed here with hashlib/crypt_r, independently of
the product's verifier, so a test of the verifier is not circular.
"""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass, field

import crypt_r

BASE_DN = "dc=example,dc=com"
PEOPLE_DN = f"ou=people,{BASE_DN}"
AD_DN = f"ou=ad,{BASE_DN}"
SERVICES_DN = f"ou=services,{BASE_DN}"
PROXY_DN = f"cn=proxy,{SERVICES_DN}"
PROXY_PASSWORD = "proxy-secret"
ADMIN_DN = f"cn=admin,{BASE_DN}"
ADMIN_PASSWORD = "admin-secret"
MASTER_USER = "fe-master"
MASTER_PASSWORD = "master-secret"


@dataclass(frozen=True)
class User:
    """A mailbox owner. C{backend} is "a" or "b" (None: no mailHost in the directory)."""

    uid: str
    address: str
    password: str
    scheme: str  # how userPassword is stored: SSHA, SHA, ..., CRYPT-6, PLAIN, CLEAR
    backend: str | None = "a"
    subtree: str = PEOPLE_DN
    extra: dict[str, list[str]] = field(default_factory=dict)

    @property
    def dn(self) -> str:
        return f"uid={self.uid},{self.subtree}"


def _salted(algo: str, password: bytes, salt: bytes) -> str:
    return base64.b64encode(hashlib.new(algo, password + salt).digest() + salt).decode()


def stored_password(user: User) -> str:
    """The userPassword value for C{user}, per its scheme."""
    pw = user.password.encode("utf-8")
    salt = os.urandom(8)
    s = user.scheme
    if s == "SSHA":
        return "{SSHA}" + _salted("sha1", pw, salt)
    if s == "SSHA256":
        return "{SSHA256}" + _salted("sha256", pw, salt)
    if s == "SSHA512":
        return "{SSHA512}" + _salted("sha512", pw, salt)
    if s == "SMD5":
        return "{SMD5}" + _salted("md5", pw, salt)
    if s == "SHA":
        return "{SHA}" + base64.b64encode(hashlib.sha1(pw).digest()).decode()
    if s == "MD5":
        return "{MD5}" + base64.b64encode(hashlib.md5(pw).digest()).decode()
    if s.startswith("CRYPT-"):
        method = {
            "CRYPT-1": crypt_r.METHOD_MD5,
            "CRYPT-5": crypt_r.METHOD_SHA256,
            "CRYPT-6": crypt_r.METHOD_SHA512,
            "CRYPT-2Y": None,
        }[s]
        if method is None:
            h = crypt_r.crypt(
                user.password, "$2y$05$" + base64.b64encode(os.urandom(16), b"./")[:22].decode()
            )
        else:
            h = crypt_r.crypt(user.password, crypt_r.mksalt(method))
        return "{CRYPT}" + h
    if s == "PLAIN":
        return "{PLAIN}" + user.password
    if s == "CLEAR":
        return user.password
    if s == "UNKNOWN":
        return "{FOO}" + base64.b64encode(pw).decode()
    raise ValueError(f"unknown scheme {s}")


USERS: tuple[User, ...] = (
    User("alice", "alice@example.com", "alice-secret", "SSHA", "a"),
    User("bob", "bob@example.com", "bob-secret", "SSHA512", "b"),
    User("u-sha", "u-sha@example.com", "pw-sha", "SHA", "a"),
    User("u-ssha256", "u-ssha256@example.com", "pw-ssha256", "SSHA256", "b"),
    User("u-md5", "u-md5@example.com", "pw-md5", "MD5", "a"),
    User("u-smd5", "u-smd5@example.com", "pw-smd5", "SMD5", "b"),
    User("u-crypt1", "u-crypt1@example.com", "pw-crypt1", "CRYPT-1", "a"),
    User("u-crypt5", "u-crypt5@example.com", "pw-crypt5", "CRYPT-5", "b"),
    User("u-crypt6", "u-crypt6@example.com", "pw-crypt6", "CRYPT-6", "a"),
    User("u-bcrypt", "u-bcrypt@example.com", "pw-bcrypt", "CRYPT-2Y", "b"),
    User("u-plain", "u-plain@example.com", "pw-plain", "PLAIN", "a"),
    User("u-clear", "u-clear@example.com", "pw-clear", "CLEAR", "b"),
    User("u-unknown", "u-unknown@example.com", "pw-unknown", "UNKNOWN", "a"),
    # spaces, quotes, a backslash and non-ASCII: LOGIN needs literals/quoting for these
    User("spacey", "spacey@example.com", 'with spaces "quoted" \\ back', "SSHA", "b"),
    User("umlaut", "umlaut@example.com", "pässwörd-€", "SSHA", "a"),
    User("nohost", "nohost@example.com", "nohost-secret", "SSHA", None),
    # two entries with the same mail: on_multiple decides
    User("dup1", "dup@example.com", "dup-secret", "SSHA", "a"),
    User("dup2", "dup@example.com", "dup-secret", "SSHA", "b"),
    # Active-Directory-like subtree for ldap-bind: found by sAMAccountName or userPrincipalName
    User(
        "carol",
        "carol@ad.example.com",
        "carol-secret",
        "SSHA",
        "b",
        subtree=AD_DN,
        extra={"sAMAccountName": ["carol"], "userPrincipalName": ["carol@ad.example.com"]},
    ),
    # a non-ASCII logon name: mail is IA5 in OpenLDAP, sAMAccountName is a directoryString
    User(
        "joerg",
        "joerg@ad.example.com",
        "jörg-secret",
        "SSHA",
        "b",
        subtree=AD_DN,
        extra={"sAMAccountName": ["jörg"], "userPrincipalName": ["joerg@ad.example.com"]},
    ),
    User(
        "dave",
        "dave@ad.example.com",
        "dave-secret",
        "SSHA",
        "a",
        subtree=AD_DN,
        extra={"sAMAccountName": ["dave"], "userPrincipalName": ["dave@ad.example.com"]},
    ),
)

#: users Dovecot knows (everyone with a back-end), by address
MAILBOX_USERS = {
    u.address: u for u in USERS if u.backend is not None and u.address != "dup@example.com"
}


def user(address: str) -> User:
    """The first user with C{address}."""
    for u in USERS:
        if u.address == address:
            return u
    raise KeyError(address)
