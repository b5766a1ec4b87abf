"""The LDAP Password user map: search with the service account, read the mail host and
the stored password hash, verify the password on the proxy.

The search itself (filter expansion, none/one/several entries, the host attribute) is
shared with the LDAP Bind map through L{DirectorySearchMap}; only what happens with a
password differs.

Outcomes, and why:
  - no entry -> unknown user. A miss is never routed anywhere by default.
  - several entries -> C{on_multiple}: C{error} is a temporary failure plus an error
    log (nothing is mis-routed, the client retries, the operator is told which DNs
    collide); C{first} routes to the first entry with a warning.
  - an entry without the host attribute -> unknown user (the directory does not say
    where the mailbox is) plus a warning.
  - directory outage -> temporary failure, never "wrong password".
  - a password check with no readable password value -> wrong password plus a
    warning: the usual cause is a service account (or an anonymous connector) that
    may not read C{userPassword}; the fix is the directory's ACL or an C{ldap-bind}
    map.
  - a stored hash in a scheme we cannot verify -> wrong password plus an error log
    naming the scheme (never the hash).
  - an address with control characters (NUL, CR, LF, ...) -> unknown user, without a
    search: OpenLDAP truncates some assertion values at a NUL, so even an escaped
    C{alice@example.com\\0} would find alice.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.logger import Logger
from zope.interface import implementer

from axigen_fe.config.model import LDAPConnectorConfig, OnMultiple
from axigen_fe.ldap import (
    DirectoryClient,
    DirectoryUnavailable,
    FilterError,
    SearchEntry,
    build_filter,
    filter_text,
    validate_template,
)
from axigen_fe.usermap import results
from axigen_fe.usermap.interface import IUserMap, LookupResult
from axigen_fe.usermap.passwords import Verdict, scheme_of, verify

__all__ = ["DirectorySearchMap", "LDAPPasswordUserMap"]


class DirectorySearchMap:
    """What both LDAP maps do: find the user's one entry and its mail host.

    Subclasses say which attributes to fetch (L{attributes}) and what a password means
    (L{check_password}). L{lookup} never errbacks (except when the caller cancels it).

    @raise ValueError: the connector's filter template is unusable (at construction,
        so that a typo stops the node from starting instead of failing every login).
    """

    log = Logger()
    checks_passwords_always = False

    def __init__(self, name: str, connector: DirectoryClient, config: LDAPConnectorConfig) -> None:
        try:
            validate_template(config.filter)
        except FilterError as e:
            raise ValueError(f"LDAP connector {config.name!r}: {e}") from e
        self.name = name
        self._connector = connector
        self._config = config
        self._host_key = config.host_attribute.lower()

    def attributes(self) -> list[str]:
        """The attributes the search asks for."""
        return [self._config.host_attribute]

    async def check_password(
        self, address: str, dn: str, entry: dict[str, list[bytes]], password: bytes
    ) -> LookupResult | None:
        """None when C{password} is right; otherwise the result to return."""
        raise NotImplementedError

    def lookup(self, address: str, password: bytes | None = None) -> Deferred[LookupResult]:
        return Deferred.fromCoroutine(self._lookup(address, password))

    async def _lookup(self, address: str, password: bytes | None) -> LookupResult:
        try:
            return await self._resolve(address, password)
        except DirectoryUnavailable as e:
            return results.tempfail(address, f"directory unavailable: {e.reason}")
        except CancelledError:
            raise  # the caller gave up; it does not want a result
        except Exception:
            self.log.failure(
                "usermap {name}: unexpected error looking up {address}",
                name=self.name,
                address=address,
            )
            return results.tempfail(address, "internal error in the LDAP map")

    async def _resolve(self, address: str, password: bytes | None) -> LookupResult:
        if _has_control_characters(address):
            # escaped or not, slapd cuts some values at a NUL (IA5String "mail"): the
            # filter for "alice@example.com\0x" would find alice. No real address has
            # control characters, so none reaches the directory.
            return results.unknown(address, "the address contains control characters")
        try:
            search_filter = build_filter(self._config.filter, address)
        except FilterError:
            # the template was validated at start, so it is this address (e.g. an empty
            # local part or domain where the filter needs one): nothing can match it
            return results.unknown(address, "the address cannot be searched for")
        entries = await self._connector.search(search_filter, self.attributes())
        chosen = self._choose(address, search_filter, entries)
        if isinstance(chosen, LookupResult):
            return chosen
        dn, entry = chosen
        host = _first_text(entry.get(self._host_key, []))
        if host is None:
            self.log.warn(
                "usermap {name}: {address} ({dn}) has no {attribute}; not routed",
                name=self.name,
                address=address,
                dn=dn,
                attribute=self._config.host_attribute,
            )
            return results.unknown(address, f"entry has no {self._config.host_attribute}")
        if password is not None:
            refused = await self.check_password(address, dn, entry, password)
            if refused is not None:
                return refused
        return results.routed(address, host, f"ldap {dn}", password_checked=password is not None)

    def _choose(
        self, address: str, search_filter: Any, entries: list[SearchEntry]
    ) -> SearchEntry | LookupResult:
        if not entries:
            return results.unknown(address, "no directory entry")
        if len(entries) == 1:
            return entries[0]
        dns = ", ".join(dn for dn, _ in entries)
        if self._config.on_multiple is OnMultiple.FIRST:
            self.log.warn(
                "usermap {name}: {filter} matches several entries ({dns}); using the first "
                "(on_multiple = first)",
                name=self.name,
                filter=filter_text(search_filter),
                dns=dns,
            )
            return entries[0]
        self.log.error(
            "usermap {name}: {filter} matches several entries ({dns}); refusing to guess "
            "(on_multiple = error): make the entries unique or narrow the filter",
            name=self.name,
            filter=filter_text(search_filter),
            dns=dns,
        )
        return results.tempfail(address, f"several directory entries match ({dns})")


@implementer(IUserMap)
class LDAPPasswordUserMap(DirectorySearchMap):
    """Routes from LDAP and verifies passwords against the stored hash, on the proxy."""

    checks_passwords_always = False

    def attributes(self) -> list[str]:
        return [self._config.host_attribute, self._config.password_attribute]

    async def check_password(
        self, address: str, dn: str, entry: dict[str, list[bytes]], password: bytes
    ) -> LookupResult | None:
        stored = [
            v.decode("utf-8", "replace")
            for v in entry.get(self._config.password_attribute.lower(), [])
        ]
        if not stored:
            self.log.warn(
                "usermap {name}: no readable {attribute} for {dn}: may the connector's bind "
                "DN read it? (use an ldap-bind map if the directory never shows hashes)",
                name=self.name,
                attribute=self._config.password_attribute,
                dn=dn,
            )
            return results.bad_password(address, "no stored password readable")
        unknown_schemes: list[str] = []
        for value in stored:  # several values: any one may match (e.g. during a migration)
            verdict = verify(value, password)
            if verdict is Verdict.MATCH:
                return None
            if verdict is Verdict.UNKNOWN_SCHEME:
                unknown_schemes.append(scheme_of(value))
        if unknown_schemes:
            self.log.error(
                "usermap {name}: {dn} has a password in a scheme this proxy cannot verify "
                "({schemes}); store it as {{SSHA512}}, {{SSHA256}}, {{SSHA}} or {{CRYPT}} "
                "or use an ldap-bind map",
                name=self.name,
                dn=dn,
                schemes=", ".join(sorted(set(unknown_schemes))),
            )
            return results.bad_password(address, "unknown password scheme")
        return results.bad_password(address)


def _has_control_characters(address: str) -> bool:
    return any(ord(c) < 0x20 or c == "\x7f" for c in address)


def _first_text(values: list[bytes]) -> str | None:
    """The first non-empty value as text (surrounding blanks removed), if any."""
    for value in values:
        text = value.decode("utf-8", "replace").strip()
        if text:
            return text
    return None
