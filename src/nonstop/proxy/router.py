"""Routing: which server block answers a connection's request, and which location.

Built once per config from the frozen model (``Router.build``); the hot path only does
dict look-ups and a short prefix scan.  Server selection follows nginx's
ngx_http_find_virtual_server (exact name, then leading wildcard, then trailing wildcard,
then the listen's default server); locations follow ngx_http_core_find_location (``=``
exact, then the longest prefix, then regexes unless that prefix is ``^~``).  A server with
no regex location and no rewrite program routes by a look-up and a prefix scan, cached per
(Host, path) by the protocol; the others go through ``ServerRoutes.dispatch`` per request.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import partial

from nonstop.config.model import (
    AddHeader,
    Config,
    IfSpec,
    LocationSpec,
    Regex,
    ReturnSpec,
    ServerBlock,
    SetSpec,
    Step,
    Template,
)
from nonstop.config.rewrite import compile_regex
from nonstop.proxy.accesslog import LogSink
from nonstop.proxy.charset import Charset
from nonstop.proxy.error_page import Page, compile_pages
from nonstop.proxy.guard import Guard
from nonstop.proxy.logformat import compile_logs
from nonstop.proxy.request import Request
from nonstop.proxy.resolver import Resolver
from nonstop.proxy.response_filter import Filters, compile_filters
from nonstop.proxy.rewrite import ANSWER, Op, compile_steps, run
from nonstop.proxy.static import Files, compile_files
from nonstop.proxy.upstream_tls import UpstreamTls
from nonstop.proxy.uri import escape_uri
from nonstop.proxy.variables import Getter, VariableTable, set_captures

__all__ = ["HOP_BY_HOP", "HeaderOp", "Route", "Router", "VirtualHosts"]

# RFC 9110 section 7.6.1; Proxy-Connection is the pre-standard twin clients still send.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)


@dataclass(slots=True)
class HeaderOp:
    name: bytes
    const: bytes | None  # a constant value, or None when ``fn`` computes it
    fn: Getter | None


class Route:
    """A location, compiled: everything the hot path needs, precomputed."""

    __slots__ = (
        "add_always",
        "add_success",
        "backend",
        "block",
        "body_buffer_size",
        "body_timeout",
        "charset",
        "client_max_body_size",
        "client_send_timeout",
        "connect_timeout",
        "const_head",
        "drop",
        "error_pages",
        "files",
        "filters",
        "guard",
        "hide",
        "intercept",
        "internal",
        "keepalive_requests",
        "keepalive_timeout",
        "keeps_connection_header",
        "logs",
        "next_timeout",
        "next_upstream",
        "ops",
        "owner",
        "pass_hidden",
        "passes",
        "program",
        "proxy_host",
        "read_timeout",
        "request_buffering",
        "resolver",
        "ret_code",
        "ret_text",
        "send_timeout",
        "sends_request_id",
        "server",
        "sets",
        "spec",
        "stops_regex",
        "stub_status",
        "text_default",
        "text_types",
        "tls",
        "tries",
        "upstream",
        "uri_prefix",
        "uri_replace",
        "url_fn",
    )

    def __init__(
        self,
        block: ServerBlock,
        spec: LocationSpec | None,
        table: VariableTable,
        dynamic: bool = False,
    ):
        self.block = block
        self.spec = spec
        where = str(spec.source) if spec is not None and spec.source else ""
        # In a server whose rewrite directives run as programs (``dynamic``), set and
        # return are steps of the program; otherwise they are precomputed here.
        self.program: tuple[Op, ...] = ()
        self.server: ServerRoutes | None = None  # set on a dynamic server's entry route
        self.stops_regex = spec is not None and spec.modifier == "^~"
        self.owner: ServerRoutes | None = None  # the server's routes, for error_page
        pages = spec.error_pages if spec is not None else block.error_pages
        self.error_pages: dict[int, Page] | None = compile_pages(pages, table, where)
        self.intercept = spec is not None and spec.intercept_errors
        self.internal = spec is not None and spec.internal
        self.stub_status = spec is not None and spec.stub_status
        # allow/deny, auth_basic, limit_req, limit_conn: set by the proxy state, which
        # owns the zones (proxy/server.py)
        self.guard: Guard | None = None
        hidden = {name.encode("latin-1") for name in spec.hide_headers} if spec else set()
        self.hide: set[bytes] | None = hidden or None  # proxy_hide_header
        mime, default = spec.text_types if spec is not None else block.text_types
        self.text_types: dict[str, bytes] = _types_table(mime)
        self.text_default = default.encode("latin-1")
        passed = {name.encode("latin-1") for name in spec.pass_headers} if spec else set()
        self.pass_hidden: frozenset[bytes] | None = frozenset(passed) or None  # proxy_pass_header
        # gzip, proxy_redirect, proxy_cookie_*: None when the location has none of them
        gzip = spec.gzip if spec is not None else block.gzip
        self.filters: Filters | None = compile_filters(spec, gzip, table, where)
        files = spec.files if spec is not None else block.files
        prefix = spec.path if spec is not None else "/"
        self.files: Files | None = compile_files(files, prefix, table, where)
        sets = [] if dynamic else [(n, table.compile(v, where)) for n, v in block.sets]
        ret: ReturnSpec | None = None if dynamic else block.ret
        if spec is not None and not dynamic:
            sets += [(name, table.compile(value, where)) for name, value in spec.sets]
            ret = ret or spec.ret
        self.sets = tuple(sets)
        self.ret_code = ret.code if ret else 0
        self.ret_text = table.compile(ret.text, where) if ret and ret.text else None
        adds: tuple[AddHeader, ...] = spec.add_headers if spec is not None else block.add_headers
        self.add_always = tuple(_op(h.name, h.value, table, where) for h in adds if h.always)
        self.add_success = tuple(_op(h.name, h.value, table, where) for h in adds)
        self.client_max_body_size = (
            spec.client_max_body_size if spec is not None else block.client_max_body_size
        )
        self.request_buffering = spec.request_buffering if spec is not None else True
        self.body_buffer_size = spec.client_body_buffer_size if spec is not None else 16384
        # keepalive_timeout 0 disables client keep-alive, as in nginx
        idle = block.keepalive_timeout
        if spec is not None and spec.keepalive_timeout is not None:
            idle = spec.keepalive_timeout  # a location's, after a request that ended in it
        self.keepalive_requests = block.keepalive_requests if idle > 0 else 0
        self.keepalive_timeout = idle
        charset = spec.charset if spec is not None else block.charset
        types = spec.charset_types if spec is not None else block.charset_types
        self.charset: Charset | None = Charset(charset, types) if charset else None
        self.body_timeout = block.client_body_timeout
        self.client_send_timeout = block.send_timeout  # nginx send_timeout (to the client)
        logs = spec.access_log if spec is not None else block.access_log
        self.logs: tuple[LogSink, ...] | None = compile_logs(logs, table, where)
        self.backend: object | None = None  # the run-time upstream, set when installed
        self.tls: UpstreamTls | None = None  # proxy_pass https:// (proxy/upstream_tls.py)
        self.resolver: Resolver | None = None  # a pass with variables (proxy/resolver.py)
        self.passes = spec is not None and spec.proxy_pass is not None and not ret
        self.upstream: str | None = None
        self.url_fn: Getter | None = None
        self.proxy_host = ""
        self.uri_prefix = spec.path if spec is not None else "/"
        self.uri_replace: str | None = None
        self.ops: tuple[HeaderOp, ...] = ()
        self.const_head = b""
        self.drop = HOP_BY_HOP | {b"host", b"expect", b"content-length"}
        self.keeps_connection_header = False
        self.sends_request_id = False
        if spec is not None:
            self.next_upstream = spec.next_upstream
            self.tries = spec.next_upstream_tries
            self.next_timeout = spec.next_upstream_timeout
            self.connect_timeout = spec.connect_timeout
            self.read_timeout = spec.read_timeout
            self.send_timeout = spec.send_timeout
        else:
            self.next_upstream = frozenset()
            self.tries = 0
            self.next_timeout = 0.0
            self.connect_timeout = self.read_timeout = self.send_timeout = 60.0
        if self.passes and spec is not None and spec.proxy_pass is not None:
            self._compile_pass(spec, table, where)

    def text_type(self, path: str) -> bytes:
        """The Content-Type of ``return CODE text``: by the extension of ``$uri``
        (ngx_http_set_content_type), else ``default_type``."""
        name = path.rpartition("/")[2]
        if "." not in name:
            return self.text_default
        return self.text_types.get(name.rpartition(".")[2].lower(), self.text_default)

    def _compile_pass(self, spec: LocationSpec, table: VariableTable, where: str) -> None:
        pp = spec.proxy_pass
        assert pp is not None
        if pp.scheme == "https":
            self.tls = UpstreamTls(spec.proxy_ssl, table, where)
        if pp.upstream is not None:
            self.upstream = pp.upstream
            self.proxy_host = pp.proxy_host
            self.uri_replace = pp.uri
        else:
            self.url_fn = table.compile(pp.url, where)
            if spec.resolver is not None:
                self.resolver = Resolver(spec.resolver)
        names = {h.name.lower().encode("latin-1") for h in spec.set_headers}
        ops: list[HeaderOp] = []
        if b"host" not in names:
            if self.upstream is not None:
                # a static proxy_pass: $proxy_host is a constant
                ops.append(HeaderOp(b"Host", self.proxy_host.encode("latin-1"), None))
            else:
                ops.append(HeaderOp(b"Host", None, _proxy_host))
        for header in spec.set_headers:
            ops.append(_op(header.name, header.value, table, where))
        if b"x-request-id" not in names:
            # the app gets $request_id, the id the JSON access log has (an incoming
            # X-Request-ID is replaced, as nginx's proxy_set_header replaces a header);
            # written by forward_head itself: a getter and its str would cost more
            self.sends_request_id = True
            names.add(b"x-request-id")
        self.keeps_connection_header = b"connection" in names
        self.drop = HOP_BY_HOP | {b"host", b"expect", b"content-length"} | names
        # Constant headers are joined once; only the computed ones cost per request.
        const = b"".join(
            [
                op.name + b": " + op.const + b"\r\n"
                for op in ops
                if op.const is not None and op.const
            ]
        )
        self.const_head = const
        self.ops = tuple(op for op in ops if op.const is None)


def _proxy_host(req: Request) -> str:
    return req.proxy_host


def _op(name: str, value: Template, table: VariableTable, where: str) -> HeaderOp:
    if value.is_constant:
        return HeaderOp(name.encode("latin-1"), "".join(v for _, v in value.parts).encode(), None)
    return HeaderOp(name.encode("latin-1"), None, table.compile(value, where))


def _simple_steps(
    sets: tuple[tuple[str, Template], ...], ret: ReturnSpec | None
) -> tuple[Step, ...]:
    return (*(SetSpec(name, value) for name, value in sets), *((ret,) if ret else ()))


_TABLES: dict[tuple[tuple[str, str], ...], dict[str, bytes]] = {}


def _types_table(types: tuple[tuple[str, str], ...]) -> dict[str, bytes]:
    """One dict per distinct ``types`` list, however many locations share it."""
    table = _TABLES.get(types)
    if table is None:
        table = _TABLES[types] = {ext: mime.encode("latin-1") for ext, mime in types}
    return table


def _with_args(location: str, req: Request) -> str:
    return location + "?" + req.args if req.args else location


def _is_dynamic(block: ServerBlock) -> bool:
    """Whether the server needs the location loop of ``ServerRoutes.dispatch``: it has
    regex locations or rewrite programs.  Others route by a look-up and a prefix scan."""
    return bool(block.steps) or any(loc.is_regex or loc.steps for loc in block.locations)


# ngx_http_core_post_rewrite_phase: a URI may change 10 times, the 11th is a 500
_MAX_URI_CHANGES = 10


class ServerRoutes:
    """One server block's locations, and its rewrite programs when it has any."""

    __slots__ = (
        "all",
        "block",
        "denied",
        "entry",
        "exact",
        "fallback",
        "named",
        "prefixes",
        "program",
        "regexes",
    )

    def __init__(self, block: ServerBlock, table: VariableTable):
        self.block = block
        dynamic = _is_dynamic(block)
        self.exact: dict[str, Route] = {}
        self.named: dict[str, Route] = {}
        self.all: list[Route] = []
        prefixes: list[tuple[str, Route]] = []
        regexes: list[tuple[re.Pattern[str], Route]] = []
        for loc in block.locations:
            route = Route(block, loc, table, dynamic)
            self.all.append(route)
            if dynamic:
                route.program = self._compile(loc, table)
            if loc.is_named:
                self.named[loc.path] = route
            elif loc.is_regex:
                regexes.append((compile_regex(Regex(loc.path, loc.modifier == "~*")), route))
            elif loc.exact:
                self.exact[loc.path] = route
            else:
                prefixes.append((loc.path, route))
        for loc in block.locations:
            self._slash_redirect(block, loc, table, dynamic, prefixes)
        prefixes.sort(key=lambda item: len(item[0]), reverse=True)
        self.prefixes = tuple(prefixes)
        self.regexes = tuple(regexes)
        # No location matched: a server-level return still answers; otherwise 404.
        self.fallback = Route(block, None, table, dynamic)
        self.all.append(self.fallback)
        # an "internal" location asked for from outside: nginx answers 404
        self.denied = Route(block, None, table, dynamic)
        self.denied.ret_code = 404
        self.denied.files = None
        self.all.append(self.denied)
        self.entry: Route | None = None
        self.program: tuple[Op, ...] = ()
        if dynamic:
            where = str(block.source or "")
            steps = block.steps or _simple_steps(block.sets, block.ret)
            self.program = compile_steps(steps, table, where)
            self.entry = Route(block, None, table, True)
            self.entry.server = self
            self.all.append(self.entry)
        for route in self.all:
            route.owner = self

    def _slash_redirect(
        self,
        block: ServerBlock,
        loc: LocationSpec,
        table: VariableTable,
        dynamic: bool,
        prefixes: list[tuple[str, Route]],
    ) -> None:
        """nginx's auto_redirect: a prefix or exact location ending in "/" that proxies
        answers its name without the slash (when no location has that name) with a 301
        to the name and the arguments, before any regex location or rewrite in it."""
        bare = loc.path[:-1]
        if loc.proxy_pass is None or loc.is_regex or loc.is_named or not loc.path.endswith("/"):
            return
        if not bare or bare in self.exact or any(path == bare for path, _ in prefixes):
            return
        route = Route(block, loc, table, dynamic)
        route.ret_code, route.passes, route.files = 301, False, None
        route.ret_text = partial(_with_args, loc.path)
        self.exact[bare] = route
        self.all.append(route)

    def _compile(self, loc: LocationSpec, table: VariableTable) -> tuple[Op, ...]:
        def route_of(step: IfSpec) -> Route:
            route = Route(self.block, step.location, table, True)
            self.all.append(route)
            return route

        steps = loc.steps or _simple_steps(loc.sets, loc.ret)
        return compile_steps(steps, table, str(loc.source or ""), route_of)

    def find(self, path: str, internal: bool = False) -> Route:
        if self.entry is not None:
            return self.entry  # its dispatch() runs per request
        route = self.exact.get(path)
        if route is None:
            route = self.fallback
            for prefix, candidate in self.prefixes:
                if path.startswith(prefix):
                    route = candidate
                    break
        if route.internal and not internal:
            return self.denied
        return route

    def locate(self, req: Request) -> Route:
        """ngx_http_core_find_location: ``=``, then the longest prefix; unless that is
        ``^~``, the first regex in config order that matches; else that prefix."""
        path = req.path
        route = self.exact.get(path)
        if route is not None:
            return route
        best: Route | None = None
        for prefix, candidate in self.prefixes:
            if path.startswith(prefix):
                best = candidate
                break
        if best is not None and best.stops_regex:
            return best
        for pattern, candidate in self.regexes:
            found = pattern.search(path)
            if found is not None:
                set_captures(req, found)
                return candidate
        return best if best is not None else self.fallback

    def dispatch(self, req: Request, named: Route | None = None) -> Route:
        """The server's rewrite program, then the location search and the location's
        program, again while a rewrite changes the URI (nginx's find-config, rewrite and
        post-rewrite phases).  Leaves the answer, if any, in ``req.ret_code``.  A jump
        to a ``named`` location starts at that location's program."""
        req.route = self.fallback
        if named is None and run(self.program, req) == ANSWER:
            return self.fallback
        for _ in range(_MAX_URI_CHANGES + 1):
            route = req.route = named if named is not None else self.locate(req)
            named = None
            if route.internal and not req.internal:
                return self.denied
            req.uri_changed = False
            req.valid_location = True
            if run(route.program, req) == ANSWER or not req.uri_changed:
                break
        else:
            req.ret_code, req.ret_text = 500, None  # "rewrite or internal redirection cycle"
            return self.fallback
        final = req.route
        assert final is not None
        if req.rewritten and (not req.valid_location or final.uri_replace is None):
            # proxy_pass sends the changed $uri, escaped, with $args
            target = escape_uri(req.path) + ("?" + req.args if req.args else "")
            req.forward = target.encode("latin-1")
        return final


class VirtualHosts:
    """The server blocks that share one listen address, with the name index."""

    __slots__ = ("by_name", "cache", "default", "head_wild", "servers", "tail_wild")

    def __init__(self, servers: list[ServerRoutes], default: ServerRoutes):
        self.servers = servers
        # (Host header, path) -> (path, host, server_name, route), filled by the protocol
        self.cache: dict[bytes, tuple[str, str, str, Route]] = {}  # request_head.py
        self.default = default
        self.by_name: dict[str, ServerRoutes] = {}
        self.head_wild: list[tuple[str, ServerRoutes]] = []
        self.tail_wild: list[tuple[str, ServerRoutes]] = []
        for srv in servers:
            for name in srv.block.server_names:
                name = name.lower()
                if name.startswith("."):
                    self.by_name.setdefault(name[1:], srv)
                    self.head_wild.append((name, srv))
                elif name.startswith("*."):
                    self.head_wild.append((name[1:], srv))
                elif name.endswith(".*"):
                    self.tail_wild.append((name[:-1], srv))
                else:
                    self.by_name.setdefault(name, srv)
        # The longest wildcard wins, as in nginx's wildcard hash.
        self.head_wild.sort(key=lambda item: len(item[0]), reverse=True)
        self.tail_wild.sort(key=lambda item: len(item[0]), reverse=True)

    def find(self, host: str) -> ServerRoutes:
        srv = self.by_name.get(host)
        if srv is not None:
            return srv
        for suffix, srv in self.head_wild:
            if host.endswith(suffix):
                return srv
        for prefix, srv in self.tail_wild:
            if host.startswith(prefix):
                return srv
        return self.default


class Router:
    """Every listen address of a config, each with its virtual hosts."""

    def __init__(self, by_listen: dict[tuple[str, int], VirtualHosts], ssl: set[tuple[str, int]]):
        self.by_listen = by_listen
        self.ssl = ssl

    @classmethod
    def build(cls, config: Config, table: VariableTable) -> Router:
        groups: dict[tuple[str, int], list[tuple[ServerRoutes, bool]]] = {}
        ssl: set[tuple[str, int]] = set()
        for block in config.servers:
            routes = ServerRoutes(block, table)
            for listen in block.listens:
                groups.setdefault(listen.key, []).append((routes, listen.default_server))
                if listen.ssl:
                    ssl.add(listen.key)
        by_listen: dict[tuple[str, int], VirtualHosts] = {}
        for key, entries in groups.items():
            servers = [srv for srv, _ in entries]
            default = next((srv for srv, is_default in entries if is_default), servers[0])
            by_listen[key] = VirtualHosts(servers, default)
        return cls(by_listen, ssl)

    def routes(self) -> Iterable[Route]:
        for vhosts in self.by_listen.values():
            for srv in vhosts.servers:
                yield from srv.all

    def vhosts_for(self, local_host: str, port: int) -> VirtualHosts | None:
        """The most specific listen entry for a connection's local address."""
        found = self.by_listen.get((local_host, port))
        if found is not None:
            return found
        wildcard = "::" if ":" in local_host else "0.0.0.0"
        found = self.by_listen.get((wildcard, port))
        if found is None:
            found = self.by_listen.get(("0.0.0.0" if wildcard == "::" else "::", port))
        return found
