"""Escaping for LDAP search filters (RFC 4515) and DNs (RFC 4514); filter templates.

The address a client types ends up inside the operator's search filter. Without
escaping, C{*@example.com} would match every user and C{a)(uid=*} would rewrite the
filter (LDAP injection). Every client-supplied value therefore goes through
L{escape_filter_value} before substitution, and the result is parsed into ldaptor's
filter objects here, so the rest of the code never builds filter strings by hand.
"""

from __future__ import annotations

import copy
import os
import re
from functools import lru_cache
from typing import Any

from axigen_fe.ldap._ldaptor import InvalidLDAPFilter, parse_filter_text, pureldap
from axigen_fe.usermap.interface import normalize_address

__all__ = [
    "FilterError",
    "build_filter",
    "escape_dn_value",
    "escape_filter_value",
    "expand_filter",
    "filter_text",
    "parse_filter",
    "validate_template",
]


class FilterError(ValueError):
    """A filter (template or expanded) that is not a valid RFC 4515 filter."""


# RFC 4515 section 3 requires escaping NUL, "(", ")", "*" and "\". Other control
# characters are escaped too: they never belong in an address, and escaped they are
# harmless and visible in logs.
_FILTER_ESCAPES = {chr(c): f"\\{c:02x}" for c in (*range(0x20), 0x7F)}
_FILTER_ESCAPES.update({"*": r"\2a", "(": r"\28", ")": r"\29", "\\": r"\5c"})


def escape_filter_value(value: str) -> str:
    """Escape C{value} for use as an assertion value inside a filter (RFC 4515).

    Non-ASCII characters stay as they are: RFC 4515 allows UTF-8 in values, and
    L{parse_filter} makes sure they reach the server as UTF-8 bytes.
    """
    return "".join(_FILTER_ESCAPES.get(c, c) for c in value)


_DN_SPECIALS = frozenset('"+,;<>\\=')


def escape_dn_value(value: str) -> str:
    """Escape C{value} as an attribute value of a DN's RDN (RFC 4514 section 2.4)."""
    out: list[str] = []
    last = len(value) - 1
    for i, c in enumerate(value):
        if c == "\0":
            out.append(r"\00")
        elif c in _DN_SPECIALS:
            out.append("\\" + c)
        elif (i == 0 and c in " #") or (i == last and c == " "):
            out.append("\\" + c)
        else:
            out.append(c)
    return "".join(out)


_PLACEHOLDER = re.compile(r"%(.?)", re.DOTALL)


def expand_filter(template: str, address: str) -> str:
    """Substitute C{%e} (address), C{%u} (local part), C{%d} (domain); C{%%} is C{%}.

    The address is normalised (L{normalize_address}) and every substituted value is
    escaped. The local part is what precedes the I{last} C{@}; without C{@}, C{%u} is
    the whole address and C{%d} is empty.

    @raise FilterError: the template has an unknown or dangling C{%} placeholder.
    """
    address = normalize_address(address)
    local, at, domain = address.rpartition("@")
    if not at:
        local, domain = address, ""
    values = {"e": address, "u": local, "d": domain, "%": "%"}

    def substitute(match: re.Match[str]) -> str:
        key = match.group(1)
        if key not in values:
            shown = f"%{key}" if key else "a lone '%' at the end"
            raise FilterError(
                f"filter template {template!r}: unknown placeholder {shown}; "
                "use %e (address), %u (local part), %d (domain) or %% (a percent sign)"
            )
        return "%" if key == "%" else escape_filter_value(values[key])

    return _PLACEHOLDER.sub(substitute, template)


_ESCAPE_RUN = re.compile(r"(?:\\[0-9A-Fa-f]{2})+")


def _utf8_as_escapes(text: str) -> str:
    """Turn every non-ASCII character of a filter string into its UTF-8 C{\\xx} escapes.

    ldaptor's parser turns C{\\c3\\a4} into the two characters U+00C3 U+00A4 and then
    encodes each as UTF-8 again, sending four wrong bytes, while a literal C{ä} is sent
    right. After this rewrite every value character above U+007F comes from an escape
    and stands for one byte, which L{_fix_values} turns back into the intended bytes.
    """
    if text.isascii():
        return text
    return "".join(c if c.isascii() else "".join(f"\\{b:02x}" for b in c.encode()) for c in text)


def _as_sent(value: Any) -> Any:
    """The parsed value (one code point per byte) as the text or bytes to send."""
    if not isinstance(value, str) or value.isascii():
        return value
    raw = value.encode("latin-1")
    try:
        return raw.decode("utf-8")  # ldaptor encodes str values as UTF-8: same bytes
    except UnicodeDecodeError:
        return raw  # binary assertion (e.g. objectGUID): send the bytes as written


def _fix_values(node: Any) -> None:
    """Walk a parsed filter and make each assertion value send the right bytes."""
    if isinstance(node, (pureldap.LDAPFilter_and, pureldap.LDAPFilter_or)):
        for child in node:
            _fix_values(child)
    elif isinstance(node, pureldap.LDAPFilter_not):
        _fix_values(node.value)
    elif isinstance(node, pureldap.LDAPAttributeValueAssertion):
        node.assertionValue.value = _as_sent(node.assertionValue.value)
    elif isinstance(node, pureldap.LDAPFilter_substrings):
        for part in node.substrings:
            part.value = _as_sent(part.value)
    elif isinstance(node, pureldap.LDAPFilter_extensibleMatch):
        node.matchValue.value = _as_sent(node.matchValue.value)


def parse_filter(text: str) -> Any:
    """Parse an RFC 4515 filter string into an ldaptor filter object (C{LDAPFilter_*}).

    Unlike a bare C{ldaptor.ldapfilter.parseFilter}, escaped UTF-8 (C{\\c3\\a4}) and
    literal non-ASCII characters both reach the server as the same UTF-8 bytes.

    @raise FilterError: C{text} is not a valid filter.
    """
    try:
        parsed = parse_filter_text(_utf8_as_escapes(text))
    except InvalidLDAPFilter as e:
        raise FilterError(f"invalid LDAP filter {text!r}: {e.msg} at position {e.loc}") from e
    except (NotImplementedError, ValueError) as e:
        raise FilterError(f"invalid LDAP filter {text!r}: {e}") from e
    _fix_values(parsed)
    return parsed


def build_filter(template: str, address: str) -> Any:
    """The filter object to search with: C{parse_filter(expand_filter(template, address))}.

    Parsing with ldaptor's pyparsing grammar costs milliseconds, more than the search
    itself, so each template is parsed once (L{_compiled}) with sentinels where the
    placeholders stand, and a lookup only copies that tree and puts the address parts
    in. The values go into the parsed tree as raw strings, never through the parser,
    so they need no escaping there and cannot change the filter's structure.
    """
    tree = _compiled(template)
    address = normalize_address(address)
    local, at, domain = address.rpartition("@")
    if not at:
        local, domain = address, ""
    values = {_SENTINELS["e"]: address, _SENTINELS["u"]: local, _SENTINELS["d"]: domain}
    built = copy.deepcopy(tree)
    _substitute(built, values)
    return built


# Random per process, so no operator's literal filter text can collide with them.
_SENTINELS = {k: f"axfe{os.urandom(6).hex()}{k}" for k in "eud"}
_SENTINEL_RE = re.compile("|".join(_SENTINELS.values()))


@lru_cache(maxsize=64)
def _compiled(template: str) -> Any:
    """The template parsed once, with each placeholder replaced by its sentinel."""

    def placeholder(match: re.Match[str]) -> str:
        key = match.group(1)
        if key == "%":
            return "%"
        if key not in _SENTINELS:
            expand_filter(template, "probe@example.com")  # raises the FilterError that names it
        return _SENTINELS[key]

    return parse_filter(_PLACEHOLDER.sub(placeholder, template))


def _put(value: Any, values: dict[str, str]) -> Any:
    if isinstance(value, str) and "axfe" in value:
        value = _SENTINEL_RE.sub(lambda m: values[m.group(0)], value)
        if not value:
            # what the text path's parser refuses too: "(dc=)" is no filter
            raise FilterError("the address leaves a filter value empty; it cannot be searched")
    return value


def _substitute(node: Any, values: dict[str, str]) -> None:
    """Replace the sentinels in a copied template tree by the address parts."""
    if isinstance(node, (pureldap.LDAPFilter_and, pureldap.LDAPFilter_or)):
        for child in node:
            _substitute(child, values)
    elif isinstance(node, pureldap.LDAPFilter_not):
        _substitute(node.value, values)
    elif isinstance(node, pureldap.LDAPAttributeValueAssertion):
        node.assertionValue.value = _put(node.assertionValue.value, values)
    elif isinstance(node, pureldap.LDAPFilter_substrings):
        for part in node.substrings:
            part.value = _put(part.value, values)
    elif isinstance(node, pureldap.LDAPFilter_extensibleMatch):
        node.matchValue.value = _put(node.matchValue.value, values)


def validate_template(template: str) -> None:
    """Check a configured filter template once, before any client depends on it.

    @raise FilterError: with a message that names the template and the problem.
    """
    if not template.startswith("(") or not template.endswith(")"):
        raise FilterError(
            f"filter template {template!r} must be a parenthesised LDAP filter, e.g. '(mail=%e)'"
        )
    expanded = expand_filter(template, "probe@example.com")  # unknown placeholders first
    if not any(p in template.replace("%%", "") for p in ("%e", "%u", "%d")):
        raise FilterError(
            f"filter template {template!r} has no %e, %u or %d: "
            "it would return the same entries for every address"
        )
    parse_filter(expanded)


def filter_text(filter_obj: Any) -> str:
    """The filter as RFC 4515 text, for logs (C{str()} of ldaptor filters is broken)."""
    try:
        return str(filter_obj.asText())
    except Exception:  # a binary value ldaptor's asText cannot escape: still log something
        return repr(filter_obj)
