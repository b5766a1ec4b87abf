"""RFC 4515 / RFC 4514 escaping and filter templates: a client's address can never change
the meaning of the operator's filter, and non-ASCII reaches the server as UTF-8."""

from __future__ import annotations

from typing import Any

import pytest

from axigen_fe.ldap import (
    FilterError,
    build_filter,
    escape_dn_value,
    escape_filter_value,
    expand_filter,
    filter_text,
    parse_filter,
    validate_template,
)
from axigen_fe.ldap._ldaptor import pureldap


def wire(filter_obj: Any) -> bytes:
    return bytes(filter_obj.toWire())


def equality(attribute: str, value: str | bytes) -> bytes:
    """The BER of (attribute=value) as ldaptor sends it, built without any parser."""
    return bytes(
        pureldap.LDAPFilter_equalityMatch(
            attributeDesc=pureldap.LDAPAttributeDescription(attribute),
            assertionValue=pureldap.LDAPAssertionValue(value),
        ).toWire()
    )


@pytest.mark.parametrize(
    ("raw", "escaped"),
    [
        ("*", r"\2a"),
        ("(", r"\28"),
        (")", r"\29"),
        ("\\", r"\5c"),
        ("\0", r"\00"),
        ("a*b(c)d\\e\0f", r"a\2ab\28c\29d\5ce\00f"),
        ("\n\x7f", r"\0a\7f"),
        ("plain.user+tag@example.com", "plain.user+tag@example.com"),
        ("jörg@exämple.com", "jörg@exämple.com"),
    ],
)
def test_filter_value_escaping(raw: str, escaped: str) -> None:
    assert escape_filter_value(raw) == escaped


@pytest.mark.parametrize(
    "address",
    [
        "*@example.com",
        "*",
        "alice@example.com)(uid=*",
        "*)(uid=*))(|(uid=*",
        "alice@example.com\0",
        "\\2a@example.com",
        "alice@example.com)(|(objectClass=*)",
    ],
)
def test_injection_attempts_stay_one_literal_equality_match(address: str) -> None:
    """Whatever the address holds, the filter is still exactly (mail=<that text>)."""
    f = build_filter("(mail=%e)", address)
    assert isinstance(f, pureldap.LDAPFilter_equalityMatch)
    assert wire(f) == equality("mail", address.lower())


def test_injection_inside_a_compound_template_keeps_its_shape() -> None:
    f = build_filter("(&(objectClass=person)(|(uid=%u)(mail=%e)))", "*)(uid=*))(|(uid=*@x")
    assert isinstance(f, pureldap.LDAPFilter_and)
    parts = list(f)
    assert len(parts) == 2
    assert isinstance(parts[1], pureldap.LDAPFilter_or)
    uid, mail = list(parts[1])
    assert wire(uid) == equality("uid", "*)(uid=*))(|(uid=*")
    assert wire(mail) == equality("mail", "*)(uid=*))(|(uid=*@x")


def test_placeholders_and_normalisation() -> None:
    assert expand_filter("(mail=%e)", "  Alice@Example.COM ") == "(mail=alice@example.com)"
    assert (
        expand_filter("(&(uid=%u)(dc=%d)(x=100%%))", "a@b@example.com")
        == "(&(uid=a@b)(dc=example.com)(x=100%))"
    )
    assert expand_filter("(uid=%u)", "no-domain") == "(uid=no-domain)"


@pytest.mark.parametrize("template", ["(mail=%x)", "(mail=%e%)", "(mail=%e)%"])
def test_unknown_placeholders_are_refused(template: str) -> None:
    with pytest.raises(FilterError, match="placeholder"):
        expand_filter(template, "a@b")


@pytest.mark.parametrize(
    ("template", "complaint"),
    [
        ("mail=%e", "parenthesised"),
        ("(mail=%e", "parenthesised"),
        ("(mail=fixed@example.com)", "same entries for every address"),
        ("(mail=%%e)", "same entries for every address"),
        ("(mail=%e)(uid=%u)", "invalid LDAP filter"),
        ("(mail=%q)", "placeholder"),
    ],
)
def test_template_validation_names_the_problem(template: str, complaint: str) -> None:
    with pytest.raises(FilterError, match=complaint):
        validate_template(template)


@pytest.mark.parametrize(
    "template",
    [
        "(mail=%e)",
        "(|(sAMAccountName=%u)(userPrincipalName=%e))",
        "(&(objectClass=user)(!(userAccountControl:1.2.840.113556.1.4.803:=2))(sAMAccountName=%u))",
        "(&(mail=%e)(mailHost=*))",
        "(|(mail=%e)(mailAlternateAddress=%e))",
    ],
)
def test_real_world_templates_validate(template: str) -> None:
    validate_template(template)


def test_an_empty_value_cannot_be_searched() -> None:
    """ldaptor's grammar has no empty values; the map turns this into unknown-user."""
    with pytest.raises(FilterError):
        build_filter("(&(uid=%u)(dc=%d))", "no-domain")


def test_non_ascii_is_sent_as_utf8_whether_literal_or_escaped() -> None:
    expected = equality("cn", "jörg".encode())
    assert wire(parse_filter("(cn=jörg)")) == expected
    assert wire(parse_filter(r"(cn=j\c3\b6rg)")) == expected  # bare ldaptor double-encodes this
    assert wire(build_filter("(cn=%u)", "JÖRG@example.com")) == expected


def test_escaped_bytes_that_are_not_utf8_are_sent_as_written() -> None:
    assert wire(parse_filter(r"(objectGUID=\e9\00\ff)")) == equality("objectGUID", b"\xe9\x00\xff")


def test_substring_and_extensible_values_are_fixed_too() -> None:
    f = parse_filter(r"(&(cn=a*\c3\a4*ö)(cn:caseExactMatch:=\c3\a4))")
    substrings, extensible = list(f)
    assert [p.value for p in substrings.substrings] == ["a", "ä", "ö"]
    assert extensible.matchValue.value == "ä"


def test_filter_text_for_logs() -> None:
    f = build_filter("(|(mail=%e)(uid=%u))", "a*b@example.com")
    assert filter_text(f) == r"(|(mail=a\2ab@example.com)(uid=a\2ab))"
    # a binary value ldaptor cannot render still gives some text rather than an error
    assert "objectGUID" in filter_text(parse_filter(r"(objectGUID=\e9)"))


@pytest.mark.parametrize(
    ("raw", "escaped"),
    [
        ("Smith, John", r"Smith\, John"),
        ('a+b"c\\d<e>f;g=h', r"a\+b\"c\\d\<e\>f\;g\=h"),
        (" lead", r"\ lead"),
        ("#hash", r"\#hash"),
        ("trail ", r"trail\ "),
        ("mid # dle", "mid # dle"),
        ("nul\0", r"nul\00"),
        ("jörg", "jörg"),
    ],
)
def test_dn_value_escaping(raw: str, escaped: str) -> None:
    assert escape_dn_value(raw) == escaped
