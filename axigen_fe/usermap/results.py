"""Shorthands for building L{LookupResult}s, so every map words outcomes alike."""

from __future__ import annotations

from axigen_fe.usermap.interface import LookupResult, Outcome, split_host_port


def routed(
    address: str, host_value: str, detail: str = "", *, password_checked: bool = False
) -> LookupResult:
    host, port = split_host_port(host_value)
    return LookupResult(address, Outcome.ROUTED, host, port, detail, password_checked)


def unless_password_checked(result: LookupResult) -> LookupResult:
    """C{result}, or BAD_PASSWORD when it routes without the map having checked a password.

    For proxies where the node's check is the only one: submission (the back-end takes
    C{XCLIENT LOGIN=} on trust) and master-user logins (the back-end sees the master's
    password, not the user's). A route-only answer there would let any password in.
    """
    if result.outcome is not Outcome.ROUTED or result.password_checked:
        return result
    return bad_password(
        result.address,
        f"{result.detail}: the map stores no password for this user, and no other check "
        "follows (store a hash, or use an LDAP map)",
    )


def unknown(address: str, detail: str = "no such user") -> LookupResult:
    return LookupResult(address, Outcome.UNKNOWN_USER, detail=detail)


def bad_password(address: str, detail: str = "password mismatch") -> LookupResult:
    return LookupResult(address, Outcome.BAD_PASSWORD, detail=detail)


def tempfail(address: str, detail: str) -> LookupResult:
    return LookupResult(address, Outcome.TEMPFAIL, detail=detail)
