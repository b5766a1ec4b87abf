#!/usr/bin/env bash
# Run the whole axigen-fe test suite on a fresh Debian 12 machine.
#
# 1. installs the real servers and clients the integration tests start (slapd, Dovecot,
#    Postfix, HAProxy, nginx mail, swaks, ...) when any is missing (needs root),
# 2. makes a virtualenv in .venv and installs the project with its test extras,
# 3. runs pytest (extra arguments are passed on, e.g. `bash tests/run.sh -k imap`).
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(slapd ldap-utils dovecot-imapd dovecot-pop3d dovecot-lmtpd postfix swaks
          libnet-ssleay-perl openssl haproxy curl libldap2-dev libsasl2-dev)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing system packages: ${missing[*]}"
    echo "slapd slapd/no_configuration boolean true" | debconf-set-selections
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
    made_policy=0
    # keep the distro daemons from starting on the standard ports during the install
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
        made_policy=1
    fi
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
    [ "$made_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d
fi

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/pip install -q --upgrade pip >/dev/null 2>&1 || true
# compat mode puts the checkout on sys.path, so twistd finds twisted/plugins/axigen_fe_plugin.py
.venv/bin/pip install -q -e '.[test]' --config-settings editable_mode=compat

exec .venv/bin/python -m pytest -p no:cacheprovider -n 2 --dist loadgroup "$@"
