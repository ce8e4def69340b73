"""nginx variables, compiled once per template into small closures.

A ``Template`` from the config becomes ``fn(request) -> str``; constant templates become
a constant.  Getters follow nginx's definitions (src/http/ngx_http_variables.c and
``$proxy_add_x_forwarded_for`` in src/http/modules/ngx_http_proxy_module.c).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

from nonstop.config.model import MapSpec, Template
from nonstop.config.rewrite import CAPTURES, compile_regex
from nonstop.errors import ConfigError
from nonstop.proxy.request import Request

__all__ = ["BUILTINS", "Getter", "VariableTable", "set_captures"]

Getter = Callable[[Request], str]


def _latin(value: bytes | None) -> str:
    return value.decode("latin-1") if value is not None else ""


def _xff(req: Request) -> str:
    """$proxy_add_x_forwarded_for: incoming lines joined with ", ", then $remote_addr."""
    if not req.xff:
        return req.remote_addr
    return ", ".join(v.decode("latin-1") for v in req.xff) + ", " + req.remote_addr


def _arg(name: str) -> Getter:
    key = name + "="

    def get(req: Request) -> str:
        for pair in req.args.split("&"):
            if pair.startswith(key):
                return pair[len(key) :]
            if pair == name:
                return ""
        return ""

    return get


def _http(name: str) -> Getter:
    lname = name.replace("_", "-").lower().encode("latin-1")

    def get(req: Request) -> str:
        return _latin(req.header(lname))

    return get


def _request_uri(req: Request) -> str:
    return req.url.decode("latin-1")


def _host(req: Request) -> str:
    return req.host or req.server_name


def _socket_name(req: Request, which: str) -> tuple[str, int] | None:
    """The connection's peer or local (host, port), read only when a config asks for it."""
    transport = req.conn.transport
    name = transport.get_extra_info(which) if transport is not None else None
    return (str(name[0]), int(name[1])) if isinstance(name, tuple) else None


def _remote_port(req: Request) -> str:
    name = _socket_name(req, "peername")
    return str(name[1]) if name is not None else ""


def _server_addr(req: Request) -> str:
    name = _socket_name(req, "sockname")
    return name[0] if name is not None else "unix:"


_SIMPLE: dict[str, Getter] = {
    "remote_addr": lambda r: r.remote_addr,
    "remote_port": _remote_port,
    "server_addr": _server_addr,
    "binary_remote_addr": lambda r: r.remote_bytes.decode("latin-1"),
    "host": _host,
    "http_host": lambda r: _latin(r.http_host),
    "scheme": lambda r: r.scheme,
    "https": lambda r: "on" if r.scheme == "https" else "",
    "request_uri": _request_uri,
    "uri": lambda r: r.path,
    "document_uri": lambda r: r.path,
    "args": lambda r: r.args,
    "query_string": lambda r: r.args,
    "is_args": lambda r: "?" if r.args else "",
    "server_port": lambda r: str(r.server_port),
    "server_name": lambda r: r.server_name,
    "request_method": lambda r: r.method.decode("latin-1"),
    "request": lambda r: r.request_line,
    "request_id": lambda r: r.request_id,
    "status": lambda r: f"{r.log_status:03d}",  # for a map a log format reads
    "server_protocol": lambda r: "HTTP/" + r.version,
    "proxy_host": lambda r: r.proxy_host,
    "proxy_add_x_forwarded_for": _xff,
    "content_length": lambda r: _latin(r.header(b"content-length")),
    "content_type": lambda r: _latin(r.header(b"content-type")),
}

BUILTINS = frozenset(_SIMPLE)
"""The names with a getter of their own: exactly ``nonstop.config.vocabulary.VARIABLES``."""


class VariableTable:
    """Resolves variable names to getters: built-ins, ``map`` targets and ``set`` names."""

    def __init__(self, maps: tuple[MapSpec, ...] = (), set_names: frozenset[str] = frozenset()):
        self._set_names = set_names
        self._maps: dict[str, Getter] = {}
        for spec in maps:
            self._maps[spec.target] = self._compile_map(spec)

    def _compile_map(self, spec: MapSpec) -> Getter:
        source = self.getter(spec.source, "map")
        table = {key: self.compile(value) for key, value in spec.entries}
        default = self.compile(spec.default)
        if not spec.regexes:

            def get(req: Request) -> str:
                fn = table.get(source(req).lower(), default)  # nginx maps ignore case
                return fn(req)

            return get
        regexes = [(compile_regex(regex), self.compile(value)) for regex, value in spec.regexes]

        def get_regex(req: Request) -> str:
            key = source(req)
            fn = table.get(key.lower())
            if fn is not None:
                return fn(req)
            for pattern, value in regexes:  # in order, after the exact keys (ngx_http_map_find)
                found = pattern.search(key)
                if found is not None:
                    set_captures(req, found)
                    return value(req)
            return default(req)

        return get_regex

    def getter(self, name: str, where: str = "") -> Getter:
        if name in self._set_names:
            return lambda r: (r.vars or {}).get(name, "")
        if name in self._maps:
            return self._maps[name]
        if name in _SIMPLE:
            return _SIMPLE[name]
        if name.startswith("http_"):
            return _http(name[5:])
        if name.startswith("arg_"):
            return _arg(name[4:])
        if name.startswith("cookie_"):
            return _cookie(name[7:])
        if name in CAPTURES:
            return _capture(int(name) - 1)
        raise ConfigError(f'unknown "{name}" variable', where)

    def compile(self, template: Template, where: str = "") -> Getter:
        """Compile a template into one getter; constants cost one call and no work."""
        if template.is_constant:
            text = "".join(v for _, v in template.parts)
            return lambda r: text
        fns: list[Getter] = []
        for kind, value in template.parts:
            if kind == "var":
                fns.append(self.getter(value, where))
            else:
                fns.append(_const(value))
        if len(fns) == 1:
            return fns[0]
        return lambda r: "".join(fn(r) for fn in fns)

    @property
    def maps(self) -> Mapping[str, Getter]:
        return self._maps


def set_captures(req: Request, found: re.Match[str]) -> None:
    """$1..$9 and the named groups of the regex that matched (ngx_http_regex_exec)."""
    if found.re.groups:
        req.captures = [group or "" for group in found.groups()]
    names = found.re.groupindex
    if names:
        if req.vars is None:
            req.vars = {}
        for name in names:
            req.vars[name] = found.group(name) or ""


def _capture(index: int) -> Getter:
    def get(req: Request) -> str:
        found = req.captures
        return found[index] if found is not None and index < len(found) else ""

    return get


def _const(text: str) -> Getter:
    return lambda r: text


def _cookie(name: str) -> Getter:
    def get(req: Request) -> str:
        raw = _latin(req.header(b"cookie"))
        for part in raw.split(";"):
            key, _, value = part.strip().partition("=")
            if key == name:
                return value
        return ""

    return get
