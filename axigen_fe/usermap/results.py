"""Shorthands for building L{LookupResult}s, so every map words outcomes alike."""

from __future__ import annotations

from axigen_fe.usermap.interface import LookupResult, Outcome, split_host_port


def routed(address: str, host_value: str, detail: str = "") -> LookupResult:
    host, port = split_host_port(host_value)
    return LookupResult(address, Outcome.ROUTED, host, port, detail)


def unknown(address: str, detail: str = "no such user") -> LookupResult:
    return LookupResult(address, Outcome.UNKNOWN_USER, detail=detail)


def bad_password(address: str, detail: str = "password mismatch") -> LookupResult:
    return LookupResult(address, Outcome.BAD_PASSWORD, detail=detail)


def tempfail(address: str, detail: str) -> LookupResult:
    return LookupResult(address, Outcome.TEMPFAIL, detail=detail)
