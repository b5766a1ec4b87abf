"""The demo node's configuration, as TOML text: the same text C{etc/demo.toml} holds.

The node parses this text with the ordinary loader, so the demo exercises the same code
path as a real deployment, and C{etc/demo.toml} (rendered with the default layout; a unit
test keeps it identical) lets C{axigen-fe lookup --config etc/demo.toml ADDRESS} ask the
running demo's directory.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable
from pathlib import Path
from string import Template

from axigen_fe.config.load import parse
from axigen_fe.config.model import NodeConfiguration
from axigen_fe.demo.layout import DOMAIN, PEOPLE_DN, PROXY_DN, PROXY_PASSWORD, DemoLayout

SERVICE_KINDS = ("imap", "pop3", "smtp", "submission")

_HEAD = Template("""\
# The embedded demo's configuration: what `twistd -n axigen-fe --demo` runs.
#
# `--demo` builds this same configuration in code (axigen_fe/demo/config.py) and starts,
# all in one process and with no external servers:
#   - an LDAP directory (ldaptor, in memory) on $ldap_uri, base dc=demo,dc=test
#   - two mail back-ends, on $backend1 and $backend2, each with IMAP $backend_imap_port,
#     POP3 $backend_pop3_port, SMTP $backend_smtp_port and submission $backend_submission_port
#   - the node below, routing users between them.
# While the demo runs, ask its directory with this file:
#
#   axigen-fe lookup --config etc/demo.toml alice@demo.test
#   echo alice | axigen-fe lookup --config etc/demo.toml --password-stdin alice@demo.test
#
# Users: alice@demo.test / alice (mailHost $backend1), bob@demo.test / bob ($backend2).
# Plaintext logins are allowed on every listener: demo passwords, no certificates needed.
# Do not copy that into production (see etc/axigen-fe.toml).

[node]
name = "demo"
""")

_LDAP = Template("""
[[ldap_connector]]
name = "demo-directory"
uris = ["$ldap_uri"]
start_tls = false                 # the demo directory speaks plain LDAP on loopback
bind_dn = "$proxy_dn"
bind_password = "$proxy_password"
base_dn = "$people_dn"
filter = "(mail=%e)"
host_attribute = "mailHost"
password_attribute = "userPassword"
timeout = 4.0
pool_size = 2

[[usermap]]
name = "main"
type = "ldap-password"
connector = "demo-directory"
cache_ttl = 60
negative_cache_ttl = 10
""")

_SERVICES = {
    "imap": Template("""
[imap]
usermap = "main"
backend_port = $backend_imap_port
backend_tls = "none"
forward_client_address = true     # the demo back-ends log the ID x-originating-ip

[[imap.listener]]
endpoint = "tcp:port=$imap_port:interface=$host"
tls = "none"
allow_plaintext_without_tls = true
"""),
    "pop3": Template("""
[pop3]
usermap = "main"
backend_port = $backend_pop3_port
backend_tls = "none"
forward_client_address = true     # XCLIENT ADDR/PORT, logged by the demo back-ends

[[pop3.listener]]
endpoint = "tcp:port=$pop3_port:interface=$host"
tls = "none"
allow_plaintext_without_tls = true
"""),
    "smtp": Template("""
[smtp]
usermap = "main"
backend_port = $backend_smtp_port
backend_tls = "none"
hostname = "mx.$domain"
domains = ["$domain"]

[[smtp.listener]]
endpoint = "tcp:port=$smtp_port:interface=$host"
tls = "none"
"""),
    "submission": Template("""
[submission]
usermap = "main"
backend_port = $backend_submission_port
backend_tls = "none"
hostname = "smtp.$domain"

[[submission.listener]]
endpoint = "tcp:port=$submission_port:interface=$host"
tls = "none"
allow_plaintext_without_tls = true
"""),
}


def render(layout: DemoLayout, services: Iterable[str] = SERVICE_KINDS) -> str:
    """The TOML text: the ldap-password map on the demo directory, then C{services}."""
    values = {
        "host": layout.host,
        "domain": DOMAIN,
        "ldap_uri": layout.ldap_uri,
        "proxy_dn": PROXY_DN,
        "proxy_password": PROXY_PASSWORD,
        "people_dn": PEOPLE_DN,
        "backend1": layout.backend_hosts[0],
        "backend2": layout.backend_hosts[1],
        "imap_port": layout.imap_port,
        "pop3_port": layout.pop3_port,
        "smtp_port": layout.smtp_port,
        "submission_port": layout.submission_port,
        "backend_imap_port": layout.backend_imap_port,
        "backend_pop3_port": layout.backend_pop3_port,
        "backend_smtp_port": layout.backend_smtp_port,
        "backend_submission_port": layout.backend_submission_port,
    }
    parts = [_HEAD.substitute(values)]
    parts.append(_LDAP.substitute(values))
    parts += [_SERVICES[kind].substitute(values) for kind in SERVICE_KINDS if kind in services]
    return "".join(parts)


def demo_configuration(
    layout: DemoLayout, services: Iterable[str] = SERVICE_KINDS
) -> NodeConfiguration:
    """Parse L{render}'s text with the ordinary loader (a mistake here fails loudly)."""
    return parse(tomllib.loads(render(layout, services)), "<demo>", Path.cwd())
