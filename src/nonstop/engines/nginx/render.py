"""Render the frozen ``Config`` as a complete nginx.conf, byte for byte the same each time.

Pure: no files, no clock, no environment.  The engine passes what changes at run time —
the servers active health checks took out — and gets back the text of every file, so it
can compare bytes and reload only on change.

A deploy does not change the render, so it never reloads nginx (every reload makes the
old workers close their idle client connections, which a client reusing one sees as a
failed request).  Each ``[apps.NAME]`` becomes two upstreams, one per slot
(``NAME__slot0`` blue, ``NAME__slot1`` green), whose servers are the slot's fixed ports
with the other slot's as ``backup`` where the method allows it.  Every server that passes
to an app picks the slot per request from a flag file the engine writes::

    set $nonstop_app_NAME NAME__slot0;
    if (-f STATE/nginx/slots/NAME.slot1) { set $nonstop_app_NAME NAME__slot1; }

and its locations ``proxy_pass http://$nonstop_app_NAME`` -- a variable naming a declared
upstream, so nginx balances and keeps connections alive exactly as with a literal name.
The switch is a rename or an unlink; each worker caches the flag's state for
``SLOT_SEEN`` (``open_file_cache``: a stat() per request would cost ~20% more CPU), so
every worker sends to the new slot within that second, and the engine counts the switch
applied only after it.  A pass
with a URI part (``http://NAME/base/``) becomes the ``rewrite ... break`` nginx applies
for it, as a ``proxy_pass`` with variables passes the request URI unchanged.

Semantics follow nonstop's embedded engine where the two could differ:

* ``Connection: close`` is sent upstream only without keep-alive, so a location passing to
  an upstream with ``keepalive N`` gets ``proxy_http_version 1.1`` and
  ``proxy_set_header Connection ""`` (``ngx_http_upstream_keepalive_module.c`` needs both);
* nginx's own default ``Host $proxy_host`` is left implicit, as the model leaves it --
  except for an app, whose upstream name the slot would otherwise leak into it;
* an app slot keeps an idle upstream connection at most ``SLOT_IDLE`` seconds: the drain
  after a switch ends when the old slot has no connection left;
* ``worker_shutdown_timeout`` is the longest app ``drain_timeout``, so an old worker never
  outlives the drain the deployer waits for.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

from nonstop.config.model import (
    CHARSET_TYPES,
    DEFAULT_TYPES,
    AccessLog,
    AccessRule,
    AddHeader,
    AppSpec,
    BreakSpec,
    Condition,
    Config,
    ErrorPage,
    FilesSpec,
    GzipSpec,
    HeaderRewrite,
    IfSpec,
    Limits,
    LimitZone,
    LocationSpec,
    LogFormat,
    MapSpec,
    ProxyBuffering,
    ProxyPass,
    ProxySsl,
    RawDirective,
    ResolverSpec,
    ReturnSpec,
    RewriteSpec,
    ServerBlock,
    ServerSpec,
    SetSpec,
    Step,
    TlsSpec,
    UpstreamSpec,
)
from nonstop.config.rewrite import walk_steps
from nonstop.config.vocabulary import BACKUP_METHODS
from nonstop.servers import server_spec, slot_ports

__all__ = [
    "MAIN_FILE",
    "SLOT_IDLE",
    "SLOT_SEEN",
    "STATS_FORMAT",
    "RenderOptions",
    "Rendered",
    "duration",
    "quote",
    "render",
    "seconds",
    "size",
    "slot_flag",
    "slot_upstream",
    "slot_variable",
    "stats_log",
]

MAIN_FILE = "nginx.conf"
STATS_FORMAT = "nonstop_upstream"
STATS_FIELDS = "$upstream_addr $upstream_status"
SLOT_IDLE = 0.25
SLOT_SEEN = 1.0  # open_file_cache_valid: a worker sees a new slot flag within this

_TEMP_PATHS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
_BARE = re.compile(r"^[^\s;{}\"'\\#]+$")
_MAP_SPECIAL = {"default", "hostnames", "include", "volatile"}


@dataclass(frozen=True, slots=True)
class RenderOptions:
    """What the render needs beyond the config: run-time state, all passed in.

    ``home`` is nginx's own directory under the state dir (pid, logs, temp paths, slot
    flags); ``down`` the ``(upstream, address)`` pairs an active health check failed;
    ``user`` the ``user`` directive's words (only meaningful when nginx starts as root); ``pid``
    the pid file of a system nginx nonstop drives (a reload must not move it).
    """

    home: str
    down: frozenset[tuple[str, str]] = frozenset()
    user: tuple[str, ...] = ()
    pid: str | None = None  # the pid file; None = HOME/nginx.pid
    worker_connections: int = 1024


@dataclass(frozen=True, slots=True)
class Rendered:
    """Every file of one render: relative path -> text.  ``main`` is the ``-c`` file."""

    files: Mapping[str, str]

    @property
    def main(self) -> str:
        return self.files[MAIN_FILE]


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
    """Every file nginx needs for ``config`` (one: ``nginx.conf``)."""
    w = _Writer()
    _main(w, config, options)
    w.open("events")
    w.line("worker_connections", str(options.worker_connections))
    _raw(w, config.raw_events)
    w.close()
    w.blank()
    w.open("http")
    _http(w, config, options)
    w.close()
    for block in (d for d in config.raw_main if d.block is not None):
        w.blank()
        _raw(w, (block,))
    return Rendered({MAIN_FILE: w.text()})


def slot_upstream(app: str, slot: int) -> str:
    """The upstream holding ``app``'s servers of ``slot``."""
    return f"{app}__slot{slot}"


def slot_variable(app: str) -> str:
    """The variable naming ``app``'s live slot upstream, per request."""
    return "nonstop_app_" + re.sub(r"[^A-Za-z0-9_]", "_", app)


def slot_flag(home: str, app: str) -> str:
    """The file whose existence makes slot 1 (green) ``app``'s live slot."""
    return os.path.join(home, "slots", f"{app}.slot1")


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _main(w: _Writer, config: Config, options: RenderOptions) -> None:
    home = options.home
    w.lines.append("# Rendered by nonstop from " + config.path + "; edits are overwritten.")
    if options.user:
        w.line("user", *(quote(word) for word in options.user))
    w.line("worker_processes", str(config.workers))  # worker_processes / workers
    if config.cpu_affinity:
        w.line("worker_cpu_affinity", *config.cpu_affinity)
    if config.worker_priority:
        w.line("worker_priority", str(config.worker_priority))
    w.line("pid", quote(options.pid or os.path.join(home, "nginx.pid")))
    w.line("error_log", quote(os.path.join(home, "logs", "error.log")), "notice")
    drain = max((app.drain_timeout for app in config.apps), default=None)
    if drain is not None:
        w.line("worker_shutdown_timeout", duration(drain))
    _raw(w, tuple(d for d in config.raw_main if d.block is None))  # load_module first
    w.blank()


def _http(w: _Writer, config: Config, options: RenderOptions) -> None:
    home = options.home
    for kind in _TEMP_PATHS:
        w.line(f"{kind}_temp_path", quote(os.path.join(home, "temp", kind)))
    w.line("access_log", quote(os.path.join(home, "logs", "access.log")), "combined")
    for fmt in _log_formats(config):
        escape = () if fmt.escape == "default" else (f"escape={fmt.escape}",)
        w.line("log_format", fmt.name, *escape, quote(fmt.template.raw))
    stats = stats_log(home) if config.apps else None
    if stats is not None:
        w.line("log_format", STATS_FORMAT, quote(STATS_FIELDS))
        _stats_line(w, stats)
    _raw(w, config.raw_http)
    w.blank()
    for spec in config.maps:
        _map(w, spec)
        w.blank()
    for zone in config.zones:
        _zone(w, zone)
    if config.zones:
        w.blank()
    apps = {app.name: app for app in config.apps}
    for up in config.upstreams:
        if up.implicit:
            continue
        if up.app and up.name in apps:
            for slot in (0, 1):
                _slot_upstream(w, up, apps[up.name], slot)
                w.blank()
        else:
            _upstream(w, up, options.down)
            w.blank()
    keepalive = {up.name for up in config.upstreams if up.keepalive > 0}
    for server in config.servers:
        passes = _Passes(
            keepalive, set(apps), options.home, server.files, server.gzip, server.text_types
        )
        _server(w, server, passes, stats)
        w.blank()


def _map(w: _Writer, spec: MapSpec) -> None:
    w.open("map", "$" + spec.source, "$" + spec.target)
    for key, value in spec.entries:
        escaped = "\\" + key if key in _MAP_SPECIAL or key.startswith("~") else key
        w.line(quote(escaped), quote(value.raw))
    for regex, value in spec.regexes:
        w.line(quote(("~*" if regex.caseless else "~") + regex.pattern), quote(value.raw))
    w.line("default", quote(spec.default.raw))
    w.close()


def _upstream(w: _Writer, up: UpstreamSpec, down: frozenset[tuple[str, str]]) -> None:
    w.open("upstream", up.name)
    method = _method(up)
    if method:
        w.line(*method)
    for server in up.servers:
        w.line(_server_line(server, (up.name, server.address) in down).rstrip(";"))
    _keepalive(w, up, up.keepalive_timeout)
    _raw(w, up.raw)
    w.close()


def _raw(w: _Writer, directives: tuple[RawDirective, ...]) -> None:
    """What nonstop does not model, as written (``nginx -t`` judges it)."""
    for d in directives:
        words = (d.name, *(quote(arg) for arg in d.args))
        if d.block is None:
            w.line(*words)
        else:
            w.open(*words)
            _raw(w, d.block)
            w.close()


def _slot_upstream(w: _Writer, up: UpstreamSpec, app: AppSpec, slot: int) -> None:
    """One slot of an app: its ports, then the other slot's as backups.

    A request that chose this slot just before a switch and reaches the upstream after
    the old release stopped (its body took that long) is refused there and retried on
    the backup -- the release that is live by then -- instead of failing.
    """
    w.open("upstream", slot_upstream(up.name, slot))
    method = _method(up)
    if method:
        w.line(*method)
    for port in slot_ports(app, slot):
        w.line(_server_line(server_spec(app, port), False).rstrip(";"))
    if up.method in BACKUP_METHODS:  # nginx refuses backup with the others
        for port in slot_ports(app, 1 - slot):
            w.line(_server_line(server_spec(app, port, backup=True), False).rstrip(";"))
    _keepalive(w, up, min(up.keepalive_timeout, SLOT_IDLE))
    w.close()


def _keepalive(w: _Writer, up: UpstreamSpec, idle: float) -> None:
    if up.keepalive > 0:
        w.line("keepalive", str(up.keepalive))
        w.line("keepalive_requests", str(up.keepalive_requests))
        w.line("keepalive_timeout", duration(idle))


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


@dataclass(frozen=True, slots=True)
class _Passes:
    """What a ``proxy_pass`` line needs to know about the upstreams it may name."""

    keepalive: set[str]
    apps: set[str]
    home: str
    files: FilesSpec | None = None  # the server's, which its locations' types repeat
    gzip: GzipSpec | None = None  # the server's, which its locations inherit
    # the server's types and default_type as its locations inherit them (return's text)
    text_types: tuple[tuple[tuple[str, str], ...], str] = (DEFAULT_TYPES, "text/plain")

    def apps_of(self, server: ServerBlock) -> list[str]:
        """The apps ``server``'s locations pass to, in order, each once."""
        locations: list[LocationSpec | None] = [*server.locations]
        for loc in server.locations:
            locations += [s.location for s in walk_steps(loc.steps) if isinstance(s, IfSpec)]
        names = [loc.proxy_pass.upstream for loc in locations if loc and loc.proxy_pass]
        return list(dict.fromkeys(n for n in names if n in self.apps))


def _server(w: _Writer, server: ServerBlock, passes: _Passes, stats: str | None) -> None:
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
    _charset(w, server.charset, server.charset_types)
    _add_headers(w, server.add_headers)
    _error_pages(w, server.error_pages)
    if server.files is not None:
        _files(w, server.files, None)
    elif server.text_types != (DEFAULT_TYPES, "text/plain"):
        _types(w, *server.text_types)  # what a return's text is typed by
    _gzip(w, server.gzip, inherits_off=True)
    _access(w, server.access)
    _limits(w, server.limits, None)
    apps = passes.apps_of(server)
    if apps:
        # The flag is looked up per request; a stat() per request would cost nginx ~20%
        # more CPU, so each worker caches the answer (a missing file too) SLOT_SEEN.
        w.line("open_file_cache", "max=64", "inactive=60s")
        w.line("open_file_cache_valid", seconds(SLOT_SEEN))
        w.line("open_file_cache_errors", "on")
    for app in apps:
        variable = "$" + slot_variable(app)
        w.line("set", variable, slot_upstream(app, 0))
        w.open("if", f"(-f {quote(slot_flag(passes.home, app))})")
        w.line("set", variable, slot_upstream(app, 1))
        w.close()
    if server.steps:
        _steps(w, server.steps, None, passes)
    else:
        for name, value in server.sets:
            w.line("set", "$" + name, quote(value.raw))
        if server.ret is not None:
            _return(w, server.ret)
    _raw(w, server.raw)
    for location in server.locations:
        w.blank()
        _location(w, location, passes, stats, server.limits)
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
    if tls.dhparam is not None:
        w.line("ssl_dhparam", quote(tls.dhparam))
    if tls.ecdh_curve != "auto":
        w.line("ssl_ecdh_curve", tls.ecdh_curve)
    if not tls.session_tickets:
        w.line("ssl_session_tickets", "off")


def _log_formats(config: Config) -> list[LogFormat]:
    """The formats the config's logs use besides nginx's own ``combined``, by name."""
    found: dict[str, LogFormat] = {}
    for block in config.servers:
        for logs in (block.access_log, *(loc.access_log for loc in block.locations)):
            for log in logs or ():
                if log.format.name != "combined":
                    found.setdefault(log.format.name, log.format)
    return [found[name] for name in sorted(found)]


def _access_log(w: _Writer, logs: tuple[AccessLog, ...] | None, stats: str | None) -> None:
    """The logs the config names, or ``off``; with none named, the state dir's applies.

    A level with its own ``access_log`` inherits none from above, so the upstream
    answers log nonstop counts is named again beside it (alone, for ``off``: nginx's
    ``access_log off`` would silence it too).
    """
    if logs is None:
        return
    for log in logs:
        words = [quote(log.path), log.format.name]
        if log.buffer:
            words.append(f"buffer={log.buffer}")
        if log.gzip:
            words.append(f"gzip={log.gzip}")
        if log.flush:
            words.append(f"flush={duration(log.flush)}")
        if log.condition is not None:
            words.append(quote("if=" + log.condition.raw))
        w.line("access_log", *words)
    if not logs and stats is None:
        w.line("access_log", "off")
    if stats is not None:
        _stats_line(w, stats)


def _charset(w: _Writer, charset: str | None, types: tuple[str, ...]) -> None:
    if charset is not None:
        w.line("charset", quote(charset))
        if types != CHARSET_TYPES:
            w.line("charset_types", *(quote(t) for t in types))


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


def _location(
    w: _Writer, loc: LocationSpec, passes: _Passes, stats: str | None, server: Limits
) -> None:
    modifier = loc.modifier if loc.modifier != "@" else ""
    w.open("location", *((modifier,) if modifier else ()), quote(loc.path))
    if not loc.steps:
        for name, value in loc.sets:
            w.line("set", "$" + name, quote(value.raw))
    w.line("client_max_body_size", size(loc.client_max_body_size))
    _access_log(w, loc.access_log, stats)
    _charset(w, loc.charset, loc.charset_types)
    if loc.keepalive_timeout is not None:
        w.line("keepalive_timeout", duration(loc.keepalive_timeout))
    _add_headers(w, loc.add_headers)
    _error_pages(w, loc.error_pages)
    if loc.intercept_errors:
        w.line("proxy_intercept_errors", "on")
    if loc.internal:
        w.line("internal")
    if loc.stub_status:
        w.line("stub_status")
    if loc.gzip != passes.gzip:
        _gzip(w, loc.gzip)
    _access(w, loc.access)
    _limits(w, loc.limits, server)
    if loc.files is not None:
        _files(w, loc.files, passes.files)
    elif loc.text_types != passes.text_types:
        _types(w, *loc.text_types)  # what a return's text is typed by
    if loc.steps:
        _steps(w, loc.steps, loc, passes)
    elif loc.ret is not None:
        _return(w, loc.ret)
    if loc.proxy_pass is not None:
        _proxy(w, loc, passes)
    _raw(w, loc.raw)
    w.close()


def _steps(w: _Writer, steps: tuple[Step, ...], loc: LocationSpec | None, passes: _Passes) -> None:
    """The rewrite directives in their order; an ``if`` with what its block set itself."""
    for step in steps:
        if isinstance(step, SetSpec):
            w.line("set", "$" + step.name, quote(step.value.raw))
        elif isinstance(step, ReturnSpec):
            _return(w, step)
        elif isinstance(step, BreakSpec):
            w.line("break")
        elif isinstance(step, RewriteSpec):
            words = ["rewrite", quote(step.regex.pattern), quote(step.replacement.raw)]
            w.line(*words, *((step.flag,) if step.flag else ()))
        else:
            w.open("if", _condition(step.condition))
            inner = step.location
            if inner is not None and loc is not None:
                if inner.add_headers != loc.add_headers:
                    _add_headers(w, inner.add_headers)
                if inner.access_log != loc.access_log and inner.access_log is not None:
                    _access_log(w, inner.access_log, None)
                if inner.gzip != loc.gzip:
                    _gzip(w, inner.gzip)
                own = inner.proxy_pass
                if own is not None and (loc.proxy_pass is None or own.url != loc.proxy_pass.url):
                    w.line("proxy_pass", _pass_url(own, passes))
            _steps(w, step.steps, None, passes)
            _raw(w, step.raw)
            w.close()


def _files(w: _Writer, files: FilesSpec, server: FilesSpec | None) -> None:
    """root or alias and the rest; the types only where they differ from the server's."""
    if files.alias is not None:
        w.line("alias", quote(files.alias))
    else:
        w.line("root", quote(files.root))
    w.line("index", *(quote(name) for name in files.index))
    if files.try_files:
        w.line("try_files", *(quote(t.raw) for t in files.try_files))
    if files.expires == "time":
        w.line(
            "expires",
            duration(files.expires_time)
            if files.expires_time >= 0
            else "-" + duration(-files.expires_time),
        )
    elif files.expires != "off":
        w.line("expires", files.expires)
    if not files.etag:
        w.line("etag", "off")
    if server is None or files.types != server.types or files.default_type != server.default_type:
        _types(w, files.types, files.default_type)


def _types(w: _Writer, types: tuple[tuple[str, str], ...], default_type: str) -> None:
    w.line("default_type", quote(default_type))
    w.open("types")
    for ext, mime in types:
        w.line(quote(mime), quote(ext))
    w.close()


def _gzip(w: _Writer, gzip: GzipSpec | None, inherits_off: bool = False) -> None:
    """gzip and its family where it differs from the level above (which inherits
    "off" unless told; a level below "on" says "off")."""
    if gzip is None:
        if not inherits_off:
            w.line("gzip", "off")
        return
    w.line("gzip", "on")
    types = sorted(gzip.types - {"text/html"})
    if types:
        w.line("gzip_types", *(quote(t) for t in types))
    w.line("gzip_comp_level", str(gzip.comp_level))
    w.line("gzip_min_length", str(gzip.min_length))
    w.line("gzip_proxied", *sorted(gzip.proxied))
    w.line("gzip_vary", "on" if gzip.vary else "off")
    disable = [quote(r.pattern) for r in gzip.disable]
    if gzip.disable_msie6:
        disable.insert(0, "msie6")
    if disable:
        w.line("gzip_disable", *disable)
    w.line("gzip_http_version", gzip.http_version)


def _rewrite_rule(rule: HeaderRewrite) -> tuple[str, str]:
    if rule.regex is not None:
        pattern = ("~*" if rule.regex.caseless else "~") + rule.regex.pattern
    else:
        assert rule.pattern is not None
        pattern = rule.pattern.raw
    return quote(pattern), quote(rule.replacement.raw)


def _access(w: _Writer, rules: tuple[AccessRule, ...]) -> None:
    for rule in rules:
        w.line("allow" if rule.allow else "deny", rule.network)


def _zone(w: _Writer, zone: LimitZone) -> None:
    """``limit_req_zone``/``limit_conn_zone`` (``sync`` is nginx Plus's: left out)."""
    spec = f"zone={zone.name}:{size(zone.size)}"
    if not zone.rate:
        w.line("limit_conn_zone", quote(zone.key.raw), spec)
    elif zone.rate % 1000 == 0:
        w.line("limit_req_zone", quote(zone.key.raw), spec, f"rate={zone.rate // 1000}r/s")
    else:
        w.line("limit_req_zone", quote(zone.key.raw), spec, f"rate={round(zone.rate * 0.06)}r/m")


def _limits(w: _Writer, limits: Limits, server: Limits | None) -> None:
    """satisfy, auth_basic and the limits of a level: a server's that differ from nginx's
    defaults, a location's that differ from its server's (inherited from it otherwise)."""
    base = server if server is not None else Limits()
    if limits.satisfy_any != base.satisfy_any:
        w.line("satisfy", "any" if limits.satisfy_any else "all")
    if limits.auth != base.auth:
        if limits.auth is None or limits.auth.realm is None:
            w.line("auth_basic", "off")
        else:
            w.line("auth_basic", quote(limits.auth.realm))
            w.line("auth_basic_user_file", quote(limits.auth.user_file))
    if limits.reqs != base.reqs:
        for req in limits.reqs:
            words = ["limit_req", f"zone={req.zone}"]
            if req.burst:
                words.append(f"burst={req.burst // 1000}")
            if req.delay >= 2**62:
                words.append("nodelay")
            elif req.delay:
                words.append(f"delay={req.delay // 1000}")
            w.line(*words)
    if limits.conns != base.conns:
        for zone, most in limits.conns:
            w.line("limit_conn", zone, str(most))
    for name, value, default in (
        ("limit_req_status", str(limits.req_status), str(base.req_status)),
        ("limit_req_log_level", limits.req_log_level, base.req_log_level),
        ("limit_req_dry_run", _on(limits.req_dry_run), _on(base.req_dry_run)),
        ("limit_conn_status", str(limits.conn_status), str(base.conn_status)),
        ("limit_conn_log_level", limits.conn_log_level, base.conn_log_level),
        ("limit_conn_dry_run", _on(limits.conn_dry_run), _on(base.conn_dry_run)),
    ):
        if value != default:
            w.line(name, value)


def _on(flag: bool) -> str:
    return "on" if flag else "off"


def _error_pages(w: _Writer, pages: tuple[ErrorPage, ...]) -> None:
    for page in pages:
        response = () if page.overwrite < 0 else ("=" + (str(page.overwrite or "")),)
        w.line("error_page", *map(str, page.codes), *response, quote(page.target.raw))


def _condition(cond: Condition) -> str:
    subject = quote(cond.subject.raw)
    if cond.op.lstrip("!").startswith("-"):
        return f"({cond.op} {subject})"
    if not cond.op:
        return f"({subject})"
    if cond.regex is not None:
        return f"({subject} {cond.op} {quote(cond.regex.pattern)})"
    assert cond.operand is not None
    return f"({subject} {cond.op} {quote(cond.operand.raw)})"


def _pass_url(proxy: ProxyPass, passes: _Passes) -> str:
    if proxy.upstream in passes.apps:
        return quote(f"{proxy.scheme}://${slot_variable(proxy.upstream)}")
    return quote(proxy.url.raw)


def _proxy(w: _Writer, loc: LocationSpec, passes: _Passes) -> None:
    proxy = loc.proxy_pass
    assert proxy is not None
    keepalive = proxy.upstream in passes.keepalive
    app = proxy.upstream if proxy.upstream in passes.apps else None
    if app is None:
        w.line("proxy_pass", quote(proxy.url.raw))
    else:
        if proxy.uri is not None:
            # What nginx does for a literal pass with a URI part: the location's prefix
            # of the normalized URI becomes that part (ngx_http_proxy_create_request).
            pattern = "^" + re.escape(loc.path) + ("$" if loc.exact else "(.*)$")
            target = proxy.uri + ("" if loc.exact else "$1")
            w.line("rewrite", quote(pattern), quote(target), "break")
        w.line("proxy_pass", quote(f"{proxy.scheme}://${slot_variable(app)}"))
    w.line("proxy_http_version", "1.1" if keepalive else loc.http_version)
    named = set()
    for header in loc.set_headers:
        named.add(header.name.lower())
        w.line("proxy_set_header", quote(header.name), quote(header.value.raw))
    if app is not None and "host" not in named:
        w.line("proxy_set_header", "Host", quote(proxy.proxy_host or app))
    if keepalive and "connection" not in named:
        w.line("proxy_set_header", "Connection", '""')
    if "x-request-id" not in named:
        w.line("proxy_set_header", "X-Request-ID", "$request_id")  # as the embedded proxy
    for name in loc.hide_headers:
        w.line("proxy_hide_header", quote(name))
    for name in loc.pass_headers:
        w.line("proxy_pass_header", quote(name))
    # the rules as resolved ("default" made literal, so an app's pass through a slot
    # variable keeps them); none: off where nginx would otherwise add its default
    for rule in loc.redirects:
        w.line("proxy_redirect", *_rewrite_rule(rule))
    if not loc.redirects and app is None and proxy.url.is_constant:
        w.line("proxy_redirect", "off")
    for rule in loc.cookie_paths:
        w.line("proxy_cookie_path", *_rewrite_rule(rule))
    for rule in loc.cookie_domains:
        w.line("proxy_cookie_domain", *_rewrite_rule(rule))
    masks = sorted(loc.next_upstream)
    w.line("proxy_next_upstream", *(masks or ["off"]))
    w.line("proxy_next_upstream_tries", str(loc.next_upstream_tries))
    w.line("proxy_next_upstream_timeout", duration(loc.next_upstream_timeout))
    w.line("proxy_connect_timeout", duration(loc.connect_timeout))
    w.line("proxy_read_timeout", duration(loc.read_timeout))
    w.line("proxy_send_timeout", duration(loc.send_timeout))
    _buffering(w, loc.buffering)
    if proxy.scheme == "https":
        _proxy_ssl(w, loc.proxy_ssl)
    if loc.resolver is not None:
        _resolver(w, loc.resolver)


def _resolver(w: _Writer, spec: ResolverSpec) -> None:
    words = [_address(host, port) for host, port in spec.addresses]
    if spec.valid is not None:
        words.append(f"valid={duration(spec.valid)}")
    if not spec.ipv6:
        words.append("ipv6=off")
    w.line("resolver", *words)
    w.line("resolver_timeout", duration(spec.timeout))


def _buffering(w: _Writer, spec: ProxyBuffering) -> None:
    """proxy_buffering and its sizes, when they are not nginx's defaults."""
    default = ProxyBuffering()
    if spec.enabled != default.enabled:
        w.line("proxy_buffering", "on" if spec.enabled else "off")
    if spec.buffer_size != default.buffer_size:
        w.line("proxy_buffer_size", size(spec.buffer_size))
    if (spec.buffers, spec.buffer) != (default.buffers, default.buffer):
        w.line("proxy_buffers", str(spec.buffers), size(spec.buffer))
    if spec.busy_buffers_size != 2 * max(spec.buffer_size, spec.buffer):
        w.line("proxy_busy_buffers_size", size(spec.busy_buffers_size))
    if spec.temp_file_write_size != 2 * max(spec.buffer_size, spec.buffer):
        w.line("proxy_temp_file_write_size", size(spec.temp_file_write_size))
    if spec.max_temp_file_size != default.max_temp_file_size:
        w.line("proxy_max_temp_file_size", size(spec.max_temp_file_size))
    if not spec.accel_buffering:
        w.line("proxy_ignore_headers", "X-Accel-Buffering")


def _proxy_ssl(w: _Writer, spec: ProxySsl) -> None:
    """proxy_ssl_* of an https:// pass, as written (nginx's defaults left implicit)."""
    default = ProxySsl()
    if spec.verify:
        w.line("proxy_ssl_verify", "on")
    if spec.trusted_certificate:
        w.line("proxy_ssl_trusted_certificate", quote(spec.trusted_certificate))
    if spec.verify_depth != default.verify_depth:
        w.line("proxy_ssl_verify_depth", str(spec.verify_depth))
    if spec.server_name:
        w.line("proxy_ssl_server_name", "on")
    if spec.name is not None:
        w.line("proxy_ssl_name", quote(spec.name.raw))
    if spec.protocols != default.protocols:
        w.line("proxy_ssl_protocols", *spec.protocols)
    if spec.ciphers != default.ciphers:
        w.line("proxy_ssl_ciphers", quote(spec.ciphers))
    if spec.certificate and spec.certificate_key:
        w.line("proxy_ssl_certificate", quote(spec.certificate))
        w.line("proxy_ssl_certificate_key", quote(spec.certificate_key))
    if not spec.session_reuse:
        w.line("proxy_ssl_session_reuse", "off")
