"""The configs the benchmarks run: backend nginx, the proxy nginx.conf, the HAProxy equivalent,
and the same proxy nginx.conf as nonstop's nginx engine renders it.

One nginx.conf template serves nginx and nonstop alike (nonstop reads a ``.conf`` file as
nginx.conf and reports the process-model directives as having no effect); the HAProxy config
says the same things in HAProxy's words: one thread, round robin over the same two backends,
server connections reused, no logging.

With a :class:`TlsFiles` the same configs terminate TLS on the listen port (the backends stay
plain HTTP): nginx.conf gains ``ssl`` on the ``listen`` plus ``ssl_certificate`` and
``ssl_certificate_key``, HAProxy ``ssl crt FILE`` on its ``bind`` (one PEM holding certificate
and key). Both name the same protocol range, TLS 1.2 and 1.3, and offer ALPN ``http/1.1``
(nginx without http2 does so on its own).

Both sides raise ``keepalive_requests`` far above a run's request count: nginx's default
(1000 per connection) would otherwise close every wrk connection ~50 times a second and the
benchmark would measure reconnects, which HAProxy (no such limit) does not do.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "BACKEND_BODY",
    "TlsFiles",
    "render_backend_conf",
    "render_driven_conf",
    "render_haproxy_cfg",
    "render_proxy_conf",
]

BACKEND_BODY = "hello from the backend\n"

# (client_max_body_size 0: bench/post_bench.py posts bodies of up to 10 MiB; no effect on GET)
_TEMP_PATHS = """\
    client_max_body_size 0;
    client_body_temp_path temp/client_body;
    proxy_temp_path temp/proxy;
    fastcgi_temp_path temp/fastcgi;
    uwsgi_temp_path temp/uwsgi;
    scgi_temp_path temp/scgi;
"""


@dataclass(frozen=True)
class TlsFiles:
    """The certificate a TLS run serves, as each proxy wants it."""

    certificate: Path  # PEM certificate (nginx, nonstop)
    key: Path  # PEM private key, unencrypted (nginx, nonstop)
    combined: Path  # certificate followed by key in one PEM (HAProxy's ``crt``)
    kind: str  # what the key is, e.g. "ECDSA P-256", for the report


def render_backend_conf(ports: Sequence[int]) -> str:
    """A one-worker nginx answering ``200`` with a small body on every port in ``ports``."""
    listens = "".join(f"        listen 127.0.0.1:{port};\n" for port in ports)
    return f"""\
# The fast backend every proxy forwards to.
worker_processes 1;
pid nginx.pid;

events {{
    worker_connections 4096;
}}

http {{
    access_log off;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
{_TEMP_PATHS}
    server {{
{listens}        default_type text/plain;
        location / {{
            return 200 "{BACKEND_BODY.rstrip()}\\n";
        }}
    }}
}}
"""


def render_proxy_conf(
    listen_port: int, backend_ports: Sequence[int], keepalive: int, tls: TlsFiles | None = None
) -> str:
    """The proxy under test, as nginx.conf: nginx and nonstop both run this file.

    With ``tls`` the listen port speaks TLS with that certificate; without it, plain HTTP.
    """
    servers = "".join(f"        server 127.0.0.1:{port};\n" for port in backend_ports)
    listen = f"listen 127.0.0.1:{listen_port};\n"
    if tls is not None:
        listen = (
            f"listen 127.0.0.1:{listen_port} ssl;\n"
            f"        ssl_certificate {tls.certificate};\n"
            f"        ssl_certificate_key {tls.key};\n"
            "        ssl_protocols TLSv1.2 TLSv1.3;\n"
        )
    return f"""\
# The proxy under test; nginx and nonstop run this same file.
worker_processes 1;
pid nginx.pid;

events {{
    worker_connections 4096;
}}

http {{
    keepalive_requests 1000000;
    keepalive_timeout 75s;
{_TEMP_PATHS}
    upstream backends {{
{servers}        keepalive {keepalive};
        keepalive_requests 1000000;
    }}

    server {{
        {listen}        access_log off;

        location / {{
            proxy_pass http://backends;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""


def render_haproxy_cfg(
    listen_port: int, backend_ports: Sequence[int], pidfile: str, tls: TlsFiles | None = None
) -> str:
    """The HAProxy equivalent of :func:`render_proxy_conf` (keep-alive both sides, no log)."""
    servers = "".join(
        f"    server b{i} 127.0.0.1:{port}\n" for i, port in enumerate(backend_ports, 1)
    )
    bind = f"bind 127.0.0.1:{listen_port}"
    if tls is not None:
        bind += f" ssl crt {tls.combined} alpn http/1.1 ssl-min-ver TLSv1.2"
    return f"""\
# The proxy under test, HAProxy's equivalent of the nginx.conf the others run.
global
    nbthread 1
    maxconn 4096
    pidfile {pidfile}

defaults
    mode http
    option http-keep-alive
    http-reuse always
    timeout connect 5s
    timeout client 75s
    timeout server 75s
    timeout http-keep-alive 75s

frontend proxy
    {bind}
    default_backend backends

backend backends
    balance roundrobin
{servers}"""


def render_driven_conf(
    listen_port: int, backend_ports: Sequence[int], spare_ports: Sequence[int], prefix: Path
) -> str:
    """nginx256's nginx.conf as nonstop's nginx engine renders it, its upstream an app.

    The two backend ports are the app's blue slot and ``spare_ports`` (nothing listens
    there) its green one, so the render has everything a deploy needs: the two slot
    upstreams, the per-request slot flag check, ``proxy_pass`` through a variable, and the
    buffered upstream log nonstop counts 5xx from.  What it costs beside the hand-written
    file is what "nginx driven by nonstop" costs.
    """
    from nonstop.config import load
    from nonstop.config.model import AppSpec
    from nonstop.engines.nginx.render import RenderOptions, render

    hand = prefix / "hand.conf"
    hand.write_text(render_proxy_conf(listen_port, backend_ports, 256))
    config = load(str(hand))
    ports = tuple(port for pair in zip(backend_ports, spare_ports, strict=True) for port in pair)
    upstreams = tuple(
        dataclasses.replace(up, app=True, servers=()) if up.name == "backends" else up
        for up in config.upstreams
    )
    config = dataclasses.replace(
        config, upstreams=upstreams, apps=(AppSpec(name="backends", command="-", ports=ports),)
    )
    for sub in ("logs", "slots", "temp"):
        (prefix / sub).mkdir(parents=True, exist_ok=True)
    options = RenderOptions(home=str(prefix), worker_connections=4096)  # workers: the config's 1
    return render(config, options).main
