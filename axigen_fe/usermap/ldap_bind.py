"""The LDAP Bind user map: search with the service account, then bind as the user.

For Active Directory and other directories that never show password hashes: the
proxy finds the user's DN (with any filter, e.g.
C{(|(sAMAccountName=%u)(userPrincipalName=%e))}), then asks the directory itself
whether the password is right by binding as that DN on a fresh connection. The
search and the none/one/several rules are those of L{DirectorySearchMap}.

Without a password the map only routes (SMTP recipients, a proxy that lets the
back-end authenticate); C{checks_passwords_always} tells proxies to pass the
password whenever they have one.
"""

from __future__ import annotations

from zope.interface import implementer

from axigen_fe.usermap import results
from axigen_fe.usermap.interface import IUserMap, LookupResult
from axigen_fe.usermap.ldap_password import DirectorySearchMap

__all__ = ["LDAPBindUserMap"]


@implementer(IUserMap)
class LDAPBindUserMap(DirectorySearchMap):
    """Routes from LDAP and checks passwords by binding as the user's DN."""

    checks_passwords_always = True

    async def check_password(
        self, address: str, dn: str, entry: dict[str, list[bytes]], password: bytes
    ) -> LookupResult | None:
        # an empty password is refused by check_bind without asking the server: an
        # empty simple bind would be an anonymous bind that "succeeds"
        if await self._connector.check_bind(dn, password):
            return None
        return results.bad_password(address, "the directory refused the bind")
