"""nginx's mail proxy as the peer line in the IMAP and POP3 benches.

Debian's nginx-light + libnginx-mod-mail, ``proxy_buffer 64k``, and an ``auth_http``
that nginx answers itself with a fixed back-end: nginx routes without a directory, so
its line is the cost of the proxy alone.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tests.integration.servers.ports import free_port, wait_for_port

NGINX_MAIL_MODULE = Path("/usr/lib/nginx/modules/ngx_mail_module.so")
AUTH_METHODS = {"imap": "imap_auth login plain;", "pop3": "pop3_auth plain;"}


def start_nginx_mail(
    directory: Path, protocol: str, backend_host: str, backend_port: int, port: int
) -> subprocess.Popen[bytes] | None:
    """nginx proxying C{protocol} on 127.0.0.1:C{port} to the back-end; None if not installed."""
    nginx = shutil.which("nginx", path="/usr/sbin:/usr/bin")
    if nginx is None or not NGINX_MAIL_MODULE.exists():
        return None
    directory.mkdir(parents=True, exist_ok=True)
    auth_port = free_port()
    (directory / "nginx.conf").write_text(
        f"""
load_module {NGINX_MAIL_MODULE};
worker_processes 1;
daemon off;
pid {directory}/nginx.pid;
error_log {directory}/error.log warn;
events {{ worker_connections 16384; }}
http {{
    access_log off;
    client_body_temp_path {directory}/tmp;
    server {{
        listen 127.0.0.1:{auth_port};
        location /auth {{
            add_header Auth-Status OK;
            add_header Auth-Server {backend_host};
            add_header Auth-Port {backend_port};
            return 204;
        }}
    }}
}}
mail {{
    auth_http 127.0.0.1:{auth_port}/auth;
    proxy_buffer 64k;
    server {{
        listen 127.0.0.1:{port} backlog=1024;
        protocol {protocol};
        {AUTH_METHODS[protocol]}
        proxy on;
    }}
}}
"""
    )
    proc = subprocess.Popen(
        [nginx, "-p", str(directory), "-c", str(directory / "nginx.conf")],
        stdout=subprocess.DEVNULL,
        stderr=open(directory / "stderr", "wb"),
    )
    wait_for_port("127.0.0.1", port, timeout=10)
    return proc
