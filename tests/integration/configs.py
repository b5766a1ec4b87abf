"""TOML fragments the integration tests' nodes share."""

from __future__ import annotations

from typing import Any

from tests.integration.directory_data import PEOPLE_DN, PROXY_DN, PROXY_PASSWORD


def ldap_usermap(slapd: Any, *, cache_ttl: float = 60, negative_ttl: float = 10) -> str:
    """An ldap-password user map named "main" against C{slapd} (StartTLS, verified)."""
    return f"""
[[ldap_connector]]
name = "dir"
uris = ["{slapd.ldap_uri}"]
start_tls = true
ca_file = "{slapd.ca_file}"
bind_dn = "{PROXY_DN}"
bind_password = "{PROXY_PASSWORD}"
base_dn = "{PEOPLE_DN}"
timeout = 2

[[usermap]]
name = "main"
type = "ldap-password"
connector = "dir"
cache_ttl = {cache_ttl}
negative_cache_ttl = {negative_ttl}
"""
