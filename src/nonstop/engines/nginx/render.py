"""Render the frozen ``Config`` as a complete nginx.conf, byte for byte the same each time.

Pure: no files, no clock, no environment.  The engine passes what changes at run time —
the servers the deployer set for each app, the servers active health checks took out —
and gets back the text of every file, so it can compare bytes and reload only on change.

The layout keeps a deploy switch small: each ``[apps.NAME]`` upstream includes
``apps/NAME.conf`` (relative to the main file, as nginx resolves ``include`` against the
directory of the ``-c`` file), which holds only that upstream's ``server`` lines.

Semantics follow nonstop's embedded engine where the two could differ:

* ``Connection: close`` is sent upstream only without keep-alive, so a location passing to
  an upstream with ``keepalive N`` gets ``proxy_http_version 1.1`` and
  ``proxy_set_header Connection ""`` (``ngx_http_upstream_keepalive_module.c`` needs both);
* nginx's own default ``Host $proxy_host`` is left implicit, as the model leaves it;
* ``worker_shutdown_timeout`` is the longest app ``drain_timeout``, so an old worker never
  outlives the drain the deployer waits for.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from nonstop.config.model import (
    AccessLog,
    AddHeader,
    Config,
    LocationSpec,
    MapSpec,
    ReturnSpec,
    ServerBlock,
    ServerSpec,
    TlsSpec,
    UpstreamSpec,
)

__all__ = [
    "MAIN_FILE",
    "STATS_FORMAT",
    "RenderOptions",
    "Rendered",
    "app_file",
    "duration",
    "quote",
    "render",
    "render_app_servers",
    "seconds",
    "size",
    "stats_log",
]

MAIN_FILE = "nginx.conf"
STATS_FORMAT = "nonstop_upstream"
STATS_FIELDS = "$upstream_addr $upstream_status"
_TEMP_PATHS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
_BARE = re.compile(r"^[^\s;{}\"'\\#]+$")
_MAP_SPECIAL = {"default", "hostnames", "include", "volatile"}


@dataclass(frozen=True, slots=True)
class RenderOptions:
    """What the render needs beyond the config: run-time state, all passed in.

    ``home`` is nginx's own directory under the state dir (pid, logs, temp paths);
    ``app_servers`` the servers the deployer set per app; ``down`` the ``(upstream,
    address)`` pairs an active health check failed; ``user`` the ``user`` directive
    (only meaningful when nginx starts as root); ``pid`` the pid file of a system nginx
    nonstop drives (a reload must not move it).
    """

    home: str
    app_servers: Mapping[str, tuple[ServerSpec, ...]] = field(default_factory=dict)
    down: frozenset[tuple[str, str]] = frozenset()
    user: str | None = None
    pid: str | None = None  # the pid file; None = HOME/nginx.pid
    worker_processes: str = "auto"
    worker_connections: int = 1024


@dataclass(frozen=True, slots=True)
class Rendered:
    """Every file of one render: relative path -> text.  ``main`` is the ``-c`` file."""

    files: Mapping[str, str]

    @property
    def main(self) -> str:
        return self.files[MAIN_FILE]


def app_file(name: str) -> str:
    return f"apps/{name}.conf"


def quote(value: str) -> str:
    """A directive argument as nginx's parser reads it back (``ngx_conf_file.c``)."""
    if value and _BARE.match(value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def duration(seconds: float) -> str:
    """``10s``, ``500ms``: nginx's time syntax, exact to the millisecond."""
    ms = round(seconds * 1000)
    if ms % 1000 == 0:
        return f"{ms // 1000}s"
    return f"{ms}ms"


def seconds(value: float) -> str:
    """For the directives nginx reads in whole seconds (``fail_timeout``,
    ``ssl_session_timeout``: ``ngx_parse_time(..., is_sec=1)`` refuses ``ms``); rounded up,
    so a server is never retried sooner than configured."""
    return f"{math.ceil(round(value, 3))}s"


def size(count: int) -> str:
    for unit, scale in (("g", 1 << 30), ("m", 1 << 20), ("k", 1 << 10)):
        if count and count % scale == 0:
            return f"{count // scale}{unit}"
    return str(count)


class _Writer:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.depth = 0

    def line(self, *words: str) -> None:
        self.lines.append("    " * self.depth + " ".join(words) + ";")

    def open(self, *words: str) -> None:
        self.lines.append("    " * self.depth + " ".join(words) + " {")
        self.depth += 1

    def close(self) -> None:
        while self.lines and not self.lines[-1]:
            self.lines.pop()
        self.depth -= 1
        self.lines.append("    " * self.depth + "}")

    def blank(self) -> None:
        if self.lines and self.lines[-1]:
            self.lines.append("")

    def text(self) -> str:
        return "\n".join(self.lines).rstrip("\n") + "\n"


def render(config: Config, options: RenderOptions) -> Rendered:
    """Every file nginx needs for ``config``: ``nginx.conf`` and one include per app."""
    w = _Writer()
    _main(w, config, options)
    w.open("events")
    w.line("worker_connections", str(options.worker_connections))
    w.close()
    w.blank()
    w.open("http")
    _http(w, config, options)
    w.close()
    files = {MAIN_FILE: w.text()}
    for app in config.apps:
        servers = options.app_servers.get(app.name, ())
        down = {a for u, a in options.down if u == app.name}
        files[app_file(app.name)] = render_app_servers(servers, app.host, app.ports[0], down)
    return Rendered(files)


def render_app_servers(
    servers: Iterable[ServerSpec], host: str, idle_port: int, down: Iterable[str] = ()
) -> str:
    """An app's include: its servers, or a ``down`` placeholder while it has none.

    nginx refuses an upstream without servers; a placeholder that is ``down`` makes the
    upstream answer 502 until the first deploy, as the embedded engine does.
    """
    down = set(down)
    lines = [_server_line(s, s.address in down) for s in servers]
    if not lines:
        lines = [_server_line(ServerSpec(_address(host, idle_port), host, idle_port), True)]
    return "\n".join(lines) + "\n"


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _main(w: _Writer, config: Config, options: RenderOptions) -> None:
    home = options.home
    w.lines.append("# Rendered by nonstop from " + config.path + "; edits are overwritten.")
    if options.user:
        w.line("user", quote(options.user))
    w.line("worker_processes", options.worker_processes)
    w.line("pid", quote(options.pid or os.path.join(home, "nginx.pid")))
    w.line("error_log", quote(os.path.join(home, "logs", "error.log")), "notice")
    drain = max((app.drain_timeout for app in config.apps), default=None)
    if drain is not None:
        w.line("worker_shutdown_timeout", duration(drain))
    w.blank()


def _http(w: _Writer, config: Config, options: RenderOptions) -> None:
    home = options.home
    for kind in _TEMP_PATHS:
        w.line(f"{kind}_temp_path", quote(os.path.join(home, "temp", kind)))
    w.line("access_log", quote(os.path.join(home, "logs", "access.log")), "combined")
    stats = stats_log(home) if config.apps else None
    if stats is not None:
        w.line("log_format", STATS_FORMAT, quote(STATS_FIELDS))
        _stats_line(w, stats)
    w.blank()
    for spec in config.maps:
        _map(w, spec)
        w.blank()
    for up in config.upstreams:
        if not up.implicit:
            _upstream(w, up, options.down)
            w.blank()
    keepalive = {up.name for up in config.upstreams if up.keepalive > 0}
    for server in config.servers:
        _server(w, server, keepalive, stats)
        w.blank()


def _map(w: _Writer, spec: MapSpec) -> None:
    w.open("map", "$" + spec.source, "$" + spec.target)
    for key, value in spec.entries:
        escaped = "\\" + key if key in _MAP_SPECIAL or key.startswith("~") else key
        w.line(quote(escaped), quote(value.raw))
    w.line("default", quote(spec.default.raw))
    w.close()


def _upstream(w: _Writer, up: UpstreamSpec, down: frozenset[tuple[str, str]]) -> None:
    w.open("upstream", up.name)
    method = _method(up)
    if method:
        w.line(*method)
    if up.app:
        w.line("include", app_file(up.name))
    else:
        for server in up.servers:
            w.line(_server_line(server, (up.name, server.address) in down).rstrip(";"))
    if up.keepalive > 0:
        w.line("keepalive", str(up.keepalive))
        w.line("keepalive_requests", str(up.keepalive_requests))
        w.line("keepalive_timeout", duration(up.keepalive_timeout))
    w.close()


def _method(up: UpstreamSpec) -> tuple[str, ...]:
    if up.method == "least_conn":
        return ("least_conn",)
    if up.method == "ip_hash":
        return ("ip_hash",)
    if up.method == "hash":
        key = up.hash_key.raw if up.hash_key is not None else "$request_uri"
        return ("hash", quote(key), "consistent") if up.hash_consistent else ("hash", quote(key))
    if up.method == "random":
        if up.random_least_conn:
            return ("random", "two", "least_conn")
        return ("random", "two") if up.random_two else ("random",)
    return ()


def _server_line(server: ServerSpec, down: bool) -> str:
    words = ["server", server.address]
    if server.weight != 1:
        words.append(f"weight={server.weight}")
    if server.max_fails != 1:
        words.append(f"max_fails={server.max_fails}")
    if server.fail_timeout != 10.0:
        words.append(f"fail_timeout={seconds(server.fail_timeout)}")
    if server.max_conns:
        words.append(f"max_conns={server.max_conns}")
    if server.backup:
        words.append("backup")
    if server.down or down:
        words.append("down")
    return " ".join(words) + ";"


def _server(w: _Writer, server: ServerBlock, keepalive: set[str], stats: str | None) -> None:
    w.open("server")
    for listen in server.listens:
        words = ["listen", _address(listen.host, listen.port)]
        if listen.ssl:
            words.append("ssl")
        if listen.default_server:
            words.append("default_server")
        w.line(*words)
    w.line("server_name", *(quote(n) for n in server.server_names or ("",)))
    if server.tls is not None:
        _tls(w, server.tls)
    w.line("client_max_body_size", size(server.client_max_body_size))
    w.line("keepalive_timeout", duration(server.keepalive_timeout))
    w.line("keepalive_requests", str(server.keepalive_requests))
    w.line("client_header_timeout", duration(server.client_header_timeout))
    w.line("client_body_timeout", duration(server.client_body_timeout))
    w.line("send_timeout", duration(server.send_timeout))
    _access_log(w, server.access_log, stats)
    _add_headers(w, server.add_headers)
    for name, value in server.sets:
        w.line("set", "$" + name, quote(value.raw))
    if server.ret is not None:
        _return(w, server.ret)
    for location in server.locations:
        w.blank()
        _location(w, location, keepalive, stats)
    w.close()


def _tls(w: _Writer, tls: TlsSpec) -> None:
    w.line("ssl_certificate", quote(tls.certificate))
    w.line("ssl_certificate_key", quote(tls.certificate_key))
    w.line("ssl_protocols", *tls.protocols)
    if tls.ciphers:
        w.line("ssl_ciphers", quote(tls.ciphers))
    w.line("ssl_prefer_server_ciphers", "on" if tls.prefer_server_ciphers else "off")
    if tls.session_cache:
        w.line("ssl_session_cache", *(quote(p) for p in tls.session_cache.split()))
    w.line("ssl_session_timeout", seconds(tls.session_timeout))


def _access_log(w: _Writer, log: AccessLog | None, stats: str | None) -> None:
    """Only a log the config names; otherwise the one under the state dir applies.

    A level with its own ``access_log`` inherits none from above, so the upstream
    answers log nonstop counts is named again beside it.
    """
    if log is not None and log.path is not None:
        w.line("access_log", quote(log.path), log.format)
        if stats is not None:
            _stats_line(w, stats)


def stats_log(home: str) -> str:
    """Where nginx writes one line per request for nonstop's per-server counts."""
    return os.path.join(home, "logs", "upstream.log")


def _stats_line(w: _Writer, path: str) -> None:
    # Buffered: one write() per 16 KiB of lines, or within 100 ms of the first one.
    w.line("access_log", quote(path), STATS_FORMAT, "buffer=16k", "flush=100ms")


def _add_headers(w: _Writer, headers: tuple[AddHeader, ...]) -> None:
    for header in headers:
        words = ["add_header", quote(header.name), quote(header.value.raw)]
        if header.always:
            words.append("always")
        w.line(*words)


def _return(w: _Writer, ret: ReturnSpec) -> None:
    if ret.text is None:
        w.line("return", str(ret.code))
    else:
        w.line("return", str(ret.code), quote(ret.text.raw))


def _location(w: _Writer, loc: LocationSpec, keepalive: set[str], stats: str | None) -> None:
    w.open("location", *(("=", quote(loc.path)) if loc.exact else (quote(loc.path),)))
    for name, value in loc.sets:
        w.line("set", "$" + name, quote(value.raw))
    w.line("client_max_body_size", size(loc.client_max_body_size))
    _access_log(w, loc.access_log, stats)
    _add_headers(w, loc.add_headers)
    if loc.ret is not None:
        _return(w, loc.ret)
    if loc.proxy_pass is not None:
        _proxy(w, loc, loc.proxy_pass.upstream in keepalive)
    w.close()


def _proxy(w: _Writer, loc: LocationSpec, keepalive: bool) -> None:
    assert loc.proxy_pass is not None
    w.line("proxy_pass", quote(loc.proxy_pass.url.raw))
    w.line("proxy_http_version", "1.1" if keepalive else loc.http_version)
    named = set()
    for header in loc.set_headers:
        named.add(header.name.lower())
        w.line("proxy_set_header", quote(header.name), quote(header.value.raw))
    if keepalive and "connection" not in named:
        w.line("proxy_set_header", "Connection", '""')
    masks = sorted(loc.next_upstream)
    w.line("proxy_next_upstream", *(masks or ["off"]))
    w.line("proxy_next_upstream_tries", str(loc.next_upstream_tries))
    w.line("proxy_next_upstream_timeout", duration(loc.next_upstream_timeout))
    w.line("proxy_connect_timeout", duration(loc.connect_timeout))
    w.line("proxy_read_timeout", duration(loc.read_timeout))
    w.line("proxy_send_timeout", duration(loc.send_timeout))
