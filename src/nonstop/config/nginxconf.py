"""Reading the nginx.conf subset into the frozen model.

Three steps, as nginx itself reads a configuration:

1. tokens, with nginx's quoting rules (``ngx_conf_read_token`` in src/core/ngx_conf_file.c):
   ``"..."`` and ``'...'``, backslash escapes, ``#`` comments at the start of a word, ``;``
   ``{`` ``}``, and ``${name}`` inside a word;
2. a directive tree, with ``include`` expanded in place as the parser meets it (globs
   sorted, paths relative to the main file's directory, as ``ngx_conf_include`` does);
3. the model, with each directive checked for context, argument count and duplicates, and
   inheritance from ``http`` to ``server`` to ``location`` resolved.  Array directives
   (``proxy_set_header``, ``add_header``) are inherited only by a level that has none of its
   own, as nginx's merge functions do.

Anything outside the subset is an error naming the file and line; harmless directives about
nginx's own process model are accepted and reported once in ``Config.notices``.
"""

from __future__ import annotations

import glob
import ipaddress
import os
import socket
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field, replace

from nonstop.config import logformats
from nonstop.config.accounts import Account, UnknownAccount, resolve_account
from nonstop.config.limits import LimitsReader
from nonstop.config.listen import AdminSettingError, admin_listener
from nonstop.config.model import (
    CHARSET_TYPES,
    DEFAULT_TYPES,
    AccessLog,
    AccessRule,
    AddHeader,
    AdminSpec,
    BreakSpec,
    Condition,
    Config,
    ErrorPage,
    FilesSpec,
    GzipSpec,
    HeaderRewrite,
    IfSpec,
    Listen,
    LocationSpec,
    LogFormat,
    MapSpec,
    ProxyBuffering,
    ProxyPass,
    ProxySsl,
    RawDirective,
    Regex,
    ResolverSpec,
    ReturnSpec,
    RewriteSpec,
    ServerBlock,
    ServerSpec,
    SetHeader,
    SetSpec,
    Source,
    Step,
    Template,
    TlsSpec,
    UpstreamSpec,
)
from nonstop.config.rewrite import compile_regex
from nonstop.config.template import compile_template, is_name_char
from nonstop.config.units import (
    master_process_off,
    parse_cpu_affinity,
    parse_duration,
    parse_priority,
    parse_size,
    parse_workers,
)
from nonstop.config.vocabulary import (
    BACKUP_METHODS,
    DIRECTIVES,
    METHODS,
    NGINX_OTHERS,
    NOTICE_DIRECTIVES,
    NOTICE_ONLY_VALUE,
    UPSTREAM_SERVER,
)
from nonstop.errors import ConfigError

__all__ = [
    "NEXT_UPSTREAM_MASKS",
    "Balancing",
    "Directive",
    "Resolver",
    "load_nginx",
    "make_servers",
    "parse_listen",
    "parse_tree",
    "proxy_pass_spec",
    "system_resolver",
]

Resolver = Callable[[str, int], list[str]]
"""Turns a host name and port into IP addresses; raises OSError when the name is unknown."""

NEXT_UPSTREAM_MASKS = frozenset(
    {
        "error",
        "timeout",
        "invalid_header",
        "http_500",
        "http_502",
        "http_503",
        "http_504",
        "http_403",
        "http_404",
        "http_429",
        "non_idempotent",
        "off",
    }
)
LOG_LEVELS = ("debug", "info", "notice", "warn", "error", "crit", "alert", "emerg")
SSL_PROTOCOLS = ("SSLv2", "SSLv3", "TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3")
REDIRECT_CODES = (301, 302, 303, 307, 308)
_MAX_INCLUDE_DEPTH = 32
_DEFAULT_TLS = TlsSpec(certificate="", certificate_key="")


def system_resolver(host: str, port: int) -> list[str]:
    """Resolve at load time, as nginx resolves upstream names when it starts."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    seen: list[str] = []
    for info in infos:
        address = str(info[4][0])
        if address not in seen:
            seen.append(address)
    return seen


# --------------------------------------------------------------------------- tokens


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # "word", ";", "{", "}"
    value: str
    line: int


_SPACE = " \t\r\n"


def _unescape(raw: str) -> str:
    """nginx drops the backslash before ``"``, ``'`` and ``\\`` and expands ``\\t \\r \\n``."""
    out: list[str] = []
    i = 0
    while i < len(raw):
        ch = raw[i]
        if ch == "\\" and i + 1 < len(raw):
            nxt = raw[i + 1]
            if nxt in "\"'\\":
                out.append(nxt)
                i += 2
                continue
            if nxt in "trn":
                out.append({"t": "\t", "r": "\r", "n": "\n"}[nxt])
                i += 2
                continue
        out.append(ch)
        i += 1
    return "".join(out)


def _tokens(text: str, file: str) -> Iterator[_Token]:
    i, n, line = 0, len(text), 1
    while i < n:
        ch = text[i]
        if ch == "\n":
            line += 1
            i += 1
        elif ch in _SPACE:
            i += 1
        elif ch == "#":
            while i < n and text[i] != "\n":
                i += 1
        elif ch in ";{}":
            yield _Token(ch, ch, line)
            i += 1
        elif ch in "\"'":
            start_line = line
            j = i + 1
            while j < n and text[j] != ch:
                if text[j] == "\\":
                    j += 1
                if j < n and text[j] == "\n":
                    line += 1
                j += 1
            if j >= n:
                raise ConfigError(_EOF_ARGS, f"{file}:{line}")
            yield _Token("word", _unescape(text[i + 1 : j]), start_line)
            i = j + 1
            # a ")" may follow a quoted word and starts a word of its own: the end of an
            # "if" condition, as in if ($request_method = 'OPTIONS')
            if i < n and text[i] not in _SPACE + ";{)":
                raise ConfigError(f'unexpected "{text[i]}"', f"{file}:{line}")
        else:
            start, start_line = i, line
            while i < n and text[i] not in _SPACE + ";{":
                if text[i] == "\\" and i + 1 < n:
                    i += 1
                    line += text[i] == "\n"
                elif text[i] == "$" and i + 1 < n and text[i + 1] == "{":
                    i += 1  # "${" does not open a block
                i += 1
            yield _Token("word", _unescape(text[start:i]), start_line)


_EOF_ARGS = 'unexpected end of file, expecting ";" or "}"'


# --------------------------------------------------------------------------- tree


@dataclass(frozen=True, slots=True)
class Directive:
    """One directive as written: name, arguments, where, and its block if it has one."""

    name: str
    args: tuple[str, ...]
    file: str
    line: int
    block: tuple[Directive, ...] | None = None

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"

    @property
    def source(self) -> Source:
        return Source(self.file, self.line)


@dataclass
class _Reader:
    """Reads the main file and its includes; remembers every file read and each notice."""

    conf_dir: str
    files: list[str] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)

    def read(self, path: str, depth: int = 0) -> list[Directive]:
        try:
            with open(path, encoding="utf-8") as handle:
                text = handle.read()
        except OSError as exc:
            raise ConfigError(f'open() "{path}" failed ({exc.errno}: {exc.strerror})') from exc
        except UnicodeDecodeError as exc:
            raise ConfigError(f'"{path}" is not UTF-8 text') from exc
        if path not in self.files:
            self.files.append(path)
        return parse_tree(text, path, lambda d: self._include(d, depth))

    def _include(self, d: Directive, depth: int) -> list[Directive]:
        if len(d.args) != 1:
            raise ConfigError('invalid number of arguments in "include" directive', d.where)
        if depth >= _MAX_INCLUDE_DEPTH:
            raise ConfigError("include nesting is too deep (a file includes itself?)", d.where)
        pattern = os.path.join(self.conf_dir, d.args[0])
        if glob.has_magic(pattern):
            paths = sorted(glob.glob(pattern))
        elif not os.path.exists(pattern) and os.path.basename(pattern) == "mime.types":
            self.notices.append(
                f'include "{d.args[0]}" was not found and has no effect in nonstop ({d.where})'
            )
            return []
        else:
            paths = [pattern]
        out: list[Directive] = []
        for path in paths:
            try:
                out.extend(self.read(path, depth + 1))
            except ConfigError as exc:
                if exc.where:
                    raise
                raise ConfigError(exc.message, d.where) from exc
        return out


def parse_tree(
    text: str, file: str, include: Callable[[Directive], list[Directive]]
) -> list[Directive]:
    """Build the directive tree of one file; ``include`` expands an include directive."""
    root: list[Directive] = []
    stack: list[tuple[list[Directive], list[str], int]] = []
    current = root
    words: list[str] = []
    first_line = 0
    for tok in _tokens(text, file):
        where = f"{file}:{tok.line}"
        if tok.kind == "word":
            if not words:
                first_line = tok.line
            words.append(tok.value)
        elif tok.kind == ";":
            if not words:
                raise ConfigError('unexpected ";"', where)
            d = Directive(words[0], tuple(words[1:]), file, first_line)
            current.extend(include(d) if d.name == "include" else [d])
            words = []
        elif tok.kind == "{":
            if not words:
                raise ConfigError('unexpected "{"', where)
            if words[0] == "include":
                raise ConfigError('directive "include" is not terminated by ";"', where)
            stack.append((current, words, first_line))
            current, words = [], []
        else:
            if words or not stack:
                raise ConfigError('unexpected "}"', where)
            parent, header, line = stack.pop()
            parent.append(Directive(header[0], tuple(header[1:]), file, line, tuple(current)))
            current = parent
    eof = f"{file}:{text.count(chr(10)) + 1}"
    if words:
        raise ConfigError(_EOF_ARGS, eof)
    if stack:
        raise ConfigError('unexpected end of file, expecting "}"', eof)
    return root


# --------------------------------------------------------------------------- shared parsers


def _split_address(text: str, default_port: int | None, what: str) -> tuple[str, int, bool]:
    """``"host:port"``, ``"[v6]:port"``, ``"host"`` or ``"unix:/path"`` -> host, port, bracketed."""
    if text.startswith("unix:"):
        return text[5:], 0, False
    host, port_text, bracketed = text, "", False
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError(f'invalid IPv6 address in {what} "{text}"')
        host, rest, bracketed = text[1:end], text[end + 1 :], True
        if rest and not rest.startswith(":"):
            raise ValueError(f'invalid host in {what} "{text}"')
        port_text = rest[1:] if rest else ""
        has_port = bool(rest)
    else:
        if text.count(":") > 1:
            raise ValueError(f'invalid host in {what} "{text}": write IPv6 as [addr]:port')
        has_port = ":" in text
        if has_port:
            host, port_text = text.split(":", 1)
    if not host:
        raise ValueError(f'no host in {what} "{text}"')
    if not has_port:
        if default_port is None:
            raise ValueError(f'no port in {what} "{text}"')
        return host, default_port, bracketed
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f'invalid port in {what} "{text}"')
    return host, int(port_text), bracketed


def _addresses(host: str, port: int, resolver: Resolver, what: str, text: str) -> list[str]:
    try:
        return [str(ipaddress.ip_address(host))]
    except ValueError:
        pass
    if host == "localhost":
        return ["127.0.0.1"]
    try:
        found = resolver(host, port)
    except OSError:
        found = []
    if not found:
        raise ValueError(f'host not found in {what} "{text}"')
    return found


@dataclass(frozen=True, slots=True)
class Balancing:
    """The balancing method of an upstream, as both formats spell it."""

    method: str = "round_robin"
    hash_key: Template | None = None
    hash_consistent: bool = False
    random_two: bool = False
    random_least_conn: bool = False


def make_servers(
    address: str, resolver: Resolver, params: ServerSpec, default_port: int | None = 80
) -> list[ServerSpec]:
    """One ``server`` of an upstream: a name resolving to N addresses gives N peers, as nginx
    does.  ``params`` carries weight, max_fails and the rest; its address is replaced."""
    host, port, _ = _split_address(address, default_port, "upstream")
    if address.startswith("unix:"):
        if not host.startswith("/"):
            raise ValueError(f'invalid unix socket path in upstream "{address}"')
        return [replace(params, address=address, host=host, port=0)]
    hosts = _addresses(host, port, resolver, "upstream", address)
    return [replace(params, address=address, host=h, port=port) for h in hosts]


_LISTEN_OUTSIDE = ("http2", "reuseport", "bind", "deferred", "proxy_protocol", "quic", "default")
_LISTEN_OUTSIDE_PREFIX = (
    "backlog=",
    "rcvbuf=",
    "sndbuf=",
    "ipv6only=",
    "so_keepalive=",
    "fastopen=",
    "accept_filter=",
    "setfib=",
)


def parse_listen(args: Collection[str], resolver: Resolver) -> list[Listen]:
    """``listen [ADDR:]PORT [ssl] [default_server]``; raises ValueError."""
    items = list(args)
    address, flags = items[0], items[1:]
    ssl = default = False
    for flag in flags:
        if flag == "ssl":
            ssl = True
        elif flag == "default_server":
            default = True
        elif flag in _LISTEN_OUTSIDE or flag.startswith(_LISTEN_OUTSIDE_PREFIX):
            raise ValueError(f'listen parameter "{flag}" is outside the nonstop subset')
        else:
            raise ValueError(f'invalid parameter "{flag}"')
    if address.startswith("unix:"):
        raise ValueError(f'listen on a unix socket "{address}" is outside the nonstop subset')
    if address.isdigit():
        address = f"*:{address}"
    host, port, _ = _split_address(address, 80, "listen")
    wildcard = host == "*"
    hosts = ["0.0.0.0"] if wildcard else _addresses(host, port, resolver, "listen", address)
    return [Listen(host=h, port=port, ssl=ssl, default_server=default) for h in hosts]


def proxy_pass_spec(
    raw: str, declared: Collection[str], resolver: Resolver
) -> tuple[ProxyPass, UpstreamSpec | None]:
    """``proxy_pass URL`` -> the spec and, for ``http://host:port`` URLs naming no declared
    upstream, the implicit upstream nginx creates for it (``ngx_http_upstream_add``)."""
    url = compile_template(raw)
    lower = raw.lower()
    scheme = "https" if lower.startswith("https://") else "http"
    if not url.is_constant:
        return ProxyPass(url=url, scheme=scheme), None
    if not lower.startswith(("http://", "https://")):
        raise ValueError(f'invalid URL prefix in "{raw}"')
    rest = raw[len(scheme) + 3 :]
    if rest.startswith("unix:"):
        return _unix_pass(url, rest, scheme)
    cut = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    hostport, uri = rest[:cut], (rest[cut:] or None)
    if hostport in declared:
        return ProxyPass(url, scheme, upstream=hostport, uri=uri, proxy_host=hostport), None
    default_port = 443 if scheme == "https" else 80
    host, port, bracketed = _split_address(hostport, default_port, "upstream")
    shown = f"[{host}]" if bracketed else host
    name = f"{shown}:{port}"
    hosts = _addresses(host, port, resolver, "upstream", hostport)
    servers = tuple(ServerSpec(address=name, host=h, port=port) for h in hosts)
    implicit = UpstreamSpec(name=name, servers=servers, implicit=True)
    proxy_host = shown if port == default_port else name
    return ProxyPass(url, scheme, upstream=name, uri=uri, proxy_host=proxy_host), implicit


def _unix_pass(url: Template, rest: str, scheme: str) -> tuple[ProxyPass, UpstreamSpec]:
    """``http://unix:/PATH:/URI``: the socket path ends at the first ":" after it
    (``ngx_parse_unix_domain_url``); an upstream on a socket is sent ``Host: localhost``."""
    path, _, uri = rest[5:].partition(":")
    if not path.startswith("/"):
        raise ValueError(f'invalid unix socket path in upstream "{rest}"')
    name = "unix:" + path
    server = ServerSpec(address=name, host=path, port=0)
    implicit = UpstreamSpec(name=name, servers=(server,), implicit=True)
    proxy = ProxyPass(url, scheme, upstream=name, uri=uri or None, proxy_host="localhost")
    return proxy, implicit


def _return(args: tuple[str, ...]) -> ReturnSpec:
    first = args[0]
    if len(args) == 1 and not first.isdigit():
        if first.startswith(("http://", "https://", "$scheme")):
            return ReturnSpec(code=302, text=compile_template(first))
        raise ValueError(f'invalid return code "{first}"')
    if not first.isdigit() or int(first) > 999:
        raise ValueError(f'invalid return code "{first}"')
    text = compile_template(args[1]) if len(args) == 2 else None
    return ReturnSpec(code=int(first), text=text)


_DEFAULT_TYPE = Directive("default_type", ("text/plain",), "", 0)
GZIP_PROXIED = frozenset(
    {
        "off",
        "expired",
        "no-cache",
        "no-store",
        "private",
        "no_last_modified",
        "no_etag",
        "auth",
        "any",
    }
)
_REWRITE_DIRECTIVES = frozenset({"set", "return", "rewrite", "break", "if"})
_FILE_TESTS = frozenset({"-f", "!-f", "-d", "!-d", "-e", "!-e", "-x", "!-x"})


def _program(
    steps: tuple[Step, ...],
) -> tuple[tuple[tuple[str, Template], ...], ReturnSpec | None, tuple[Step, ...]]:
    """A level's ``set`` values, its first ``return``, and the whole program when it needs
    to run in order (it has a rewrite, an if or a break); else an empty program."""
    sets = tuple((step.name, step.value) for step in steps if isinstance(step, SetSpec))
    ret = next((step for step in steps if isinstance(step, ReturnSpec)), None)
    simple = all(isinstance(step, (SetSpec, ReturnSpec)) for step in steps)
    return sets, ret, () if simple else steps


def _variable_name(raw: str) -> str:
    if len(raw) < 2 or raw[0] != "$" or not all(is_name_char(c) for c in raw[1:]):
        raise ValueError(f'invalid variable name "{raw}"')
    return raw[1:]


# --------------------------------------------------------------------------- levels


class _Level:
    """The directives of one http/server/location level, by name, duplicates checked."""

    def __init__(self) -> None:
        self.items: dict[str, list[Directive]] = {}
        self.ordered: list[Directive] = []  # all of them, as written

    def add(self, d: Directive, multi: bool) -> None:
        if d.name in self.items and not multi:
            raise ConfigError(f'"{d.name}" directive is duplicate', d.where)
        self.items.setdefault(d.name, []).append(d)
        self.ordered.append(d)


def _inherit(levels: list[_Level], name: str) -> list[Directive] | None:
    """The directive list of the innermost level that has ``name`` (nginx's merge)."""
    for level in levels:
        if name in level.items:
            return level.items[name]
    return None


def _one(levels: list[_Level], name: str) -> Directive | None:
    found = _inherit(levels, name)
    return found[0] if found else None


# --------------------------------------------------------------------------- the builder

_DURATIONS = (
    "keepalive_timeout",
    "client_header_timeout",
    "client_body_timeout",
    "send_timeout",
    "ssl_session_timeout",
    "proxy_next_upstream_timeout",
    "proxy_connect_timeout",
    "proxy_read_timeout",
    "proxy_send_timeout",
)
_NUMBERS = ("keepalive_requests", "proxy_next_upstream_tries")
_PAGE = 4096  # nginx's default buffer sizes are one memory page
_BUFFER_SIZES = (
    "proxy_buffer_size",
    "proxy_busy_buffers_size",
    "proxy_max_temp_file_size",
    "proxy_temp_file_write_size",
)
# proxy_ignore_headers' values (ngx_http_upstream_ignore_headers_masks)
_IGNORE_HEADERS = frozenset(
    {
        "x-accel-redirect",
        "x-accel-expires",
        "x-accel-limit-rate",
        "x-accel-buffering",
        "x-accel-charset",
        "expires",
        "cache-control",
        "set-cookie",
        "vary",
    }
)


# ``env NONSTOP_ADMIN_LISTEN=127.0.0.1:9180;`` and the others: [admin]'s keys in nginx.conf.
_ADMIN_ENV = {
    "NONSTOP_ADMIN_LISTEN": "listen",
    "NONSTOP_ADMIN_TOKEN_FILE": "token_file",
    "NONSTOP_ADMIN_TOKEN": "token",
}


# What the nginx engine renders itself: kept out of the passthrough (nginx would refuse the
# duplicate), with the notice the embedded engine gives.
_RENDERER_OWNS = frozenset(
    (
        "pid",
        "open_file_cache",
        "open_file_cache_valid",
        "open_file_cache_errors",
        *(f"{kind}_temp_path" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")),
    )
)

# A passed-through directive whose first argument is a file: nginx reads it relative to the
# config's directory ("conf") or to its prefix ("prefix"); the render runs elsewhere, so the
# loader makes it absolute as it does for the directives it models.
_RAW_PATHS = {
    **dict.fromkeys(
        (
            "ssl_certificate",
            "ssl_certificate_key",
            "ssl_trusted_certificate",
            "ssl_client_certificate",
            "ssl_crl",
            "ssl_dhparam",
            "ssl_password_file",
            "ssl_session_ticket_key",
            "ssl_stapling_file",
            "auth_basic_user_file",
            "proxy_ssl_certificate",
            "proxy_ssl_certificate_key",
            "proxy_ssl_trusted_certificate",
            "proxy_ssl_crl",
            "proxy_ssl_password_file",
        ),
        "conf",
    ),
    **dict.fromkeys(
        (
            "proxy_cache_path",
            "fastcgi_cache_path",
            "uwsgi_cache_path",
            "scgi_cache_path",
            "load_module",
            "root",
            "alias",
            "access_log",
            "error_log",
        ),
        "prefix",
    ),
}


class _Builder:
    def __init__(self, path: str, prefix: str, resolver: Resolver, passthrough: bool) -> None:
        self.path = path
        # engine nginx: what nonstop does not model is kept (``kept[-1]`` is the block being
        # read) and rendered as written; otherwise it is refused
        self.passthrough = passthrough
        self.kept: list[list[RawDirective]] = [[]]
        self.prefix = prefix
        self.conf_dir = os.path.dirname(path)
        self.resolver = resolver
        self.reader = _Reader(self.conf_dir)
        self.noticed: set[str] = set()
        self.declared: dict[str, UpstreamSpec] = {}
        self.implicit: dict[str, UpstreamSpec] = {}
        self.error_log: tuple[str | None, str] | None = None
        self.max_connections = 10_000
        self.workers = 1
        self.max_open_files: int | None = None
        self.cpu_affinity: tuple[str, ...] = ()
        self.worker_priority = 0
        self.worker_user: Account | None = None
        self.master_process = True
        self.admin_env: dict[str, tuple[str, Directive]] = {}  # env NONSTOP_ADMIN_*=VALUE
        # satisfy, auth_basic, limit_* and their zones
        self.limits = LimitsReader(self.conf_path, self.reader.notices)
        self.log_formats: dict[str, LogFormat] = dict(logformats.PREDEFINED)
        self.logs: list[tuple[AccessLog, Directive]] = []  # every access_log, for one check

    # -- helpers ------------------------------------------------------------

    def fail(self, d: Directive, message: str) -> ConfigError:
        return ConfigError(message, d.where)

    def notice(self, d: Directive) -> None:
        if d.name not in self.noticed:
            self.noticed.add(d.name)
            self.reader.notices.append(f'directive "{d.name}" has no effect in nonstop ({d.where})')

    def check(self, d: Directive, ctx: str) -> bool:
        """Validate context, block and arity; True when the directive is notice-only."""
        spec = UPSTREAM_SERVER if (d.name == "server" and ctx == "upstream") else None
        spec = spec or DIRECTIVES.get(d.name)
        if spec is None and self.passthrough and d.name not in _RENDERER_OWNS:
            self.kept[-1].append(self.raw(d))
            return True
        if spec is None:
            return self._check_notice(d, ctx)
        if ctx not in spec.contexts:
            if d.name == "location" and ctx == "location":
                raise self.fail(d, "nested locations are outside the nonstop subset")
            where = ", ".join(spec.contexts)
            raise self.fail(
                d, f'"{d.name}" directive is not allowed here (nonstop accepts it in: {where})'
            )
        if spec.block and d.block is None:
            raise self.fail(d, f'directive "{d.name}" has no opening "{{"')
        if not spec.block and d.block is not None:
            raise self.fail(d, f'directive "{d.name}" is not terminated by ";"')
        n = len(d.args)
        if n < spec.min_args or (spec.max_args >= 0 and n > spec.max_args):
            raise self.fail(d, f'invalid number of arguments in "{d.name}" directive')
        return False

    def _check_notice(self, d: Directive, ctx: str) -> bool:
        contexts = NOTICE_DIRECTIVES.get(d.name)
        if contexts is None:
            if d.name in NGINX_OTHERS:
                raise self.fail(d, f'directive "{d.name}" is outside the nonstop subset')
            raise self.fail(d, f'unknown directive "{d.name}"')
        if ctx not in contexts:
            raise self.fail(d, f'"{d.name}" directive is not allowed here')
        if d.block is not None:
            raise self.fail(d, f'directive "{d.name}" has the wrong form')
        wanted = NOTICE_ONLY_VALUE.get(d.name)
        if wanted is not None and d.args != (wanted,):
            raise self.fail(
                d,
                f'"{d.name} {" ".join(d.args)}" changes behaviour and is outside the nonstop'
                f' subset (only "{d.name} {wanted}" is accepted)',
            )
        if d.name == "server_tokens" and d.args not in (("on",), ("off",), ("build",)):
            raise self.fail(d, f'invalid value "{" ".join(d.args)}" in "server_tokens" directive')
        self.notice(d)
        return True

    def raw(self, d: Directive) -> RawDirective:
        args = d.args
        base = _RAW_PATHS.get(d.name)
        first = args[0] if args else ""
        # not "off", "stderr", "syslog:...", "memory:...", nor a path with variables
        if base and first and first not in ("off", "stderr") and not set("$:") & set(first):
            absolute = self.conf_path(first) if base == "conf" else self.prefix_path(first)
            args = (absolute, *args[1:])
        block = None if d.block is None else tuple(self.raw(inner) for inner in d.block)
        return RawDirective(d.name, args, block, d.source)

    def worker_connections(self, d: Directive) -> int:
        """nginx's per-worker connection limit; nonstop bounds open client connections."""
        if d.block is not None or len(d.args) != 1:
            raise self.fail(d, 'invalid number of arguments in "worker_connections" directive')
        try:
            count = int(d.args[0])
        except ValueError:
            count = 0
        if count < 1:
            raise self.fail(d, f'invalid value "{d.args[0]}" in "worker_connections" directive')
        return count

    def value(self, d: Directive, parse: Callable[[str], object], what: str = "value") -> object:
        try:
            return parse(d.args[0])
        except ValueError as exc:
            raise self.fail(d, f'"{d.name}" directive invalid {what}: {exc}') from exc

    def duration(self, d: Directive | None, default: float) -> float:
        return default if d is None else float(self.value(d, parse_duration))  # type: ignore[arg-type]

    def size(self, d: Directive | None, default: int) -> int:
        return default if d is None else int(self.value(d, parse_size))  # type: ignore[call-overload]

    def number(self, d: Directive | None, default: int, minimum: int = 0) -> int:
        if d is None:
            return default
        raw = d.args[0]
        if not raw.isdigit() or int(raw) < minimum:
            raise self.fail(d, f'"{d.name}" directive invalid number "{raw}"')
        return int(raw)

    def flag(self, d: Directive | None, default: bool) -> bool:
        if d is None:
            return default
        if d.args[0] not in ("on", "off"):
            raise self.fail(
                d,
                f'invalid value "{d.args[0]}" in "{d.name}" directive, it must be "on" or "off"',
            )
        return d.args[0] == "on"

    def template(self, d: Directive, raw: str) -> Template:
        try:
            return compile_template(raw)
        except ValueError as exc:
            raise self.fail(d, str(exc)) from exc

    def conf_path(self, raw: str) -> str:
        return os.path.normpath(os.path.join(self.conf_dir, raw))

    def prefix_path(self, raw: str) -> str:
        return os.path.normpath(os.path.join(self.prefix, raw))

    # -- main and http ------------------------------------------------------

    def build(self) -> Config:
        tree = self.reader.read(self.path)
        raw_events: tuple[RawDirective, ...] = ()
        self.raw_http: tuple[RawDirective, ...] = ()
        http: Directive | None = None
        events: Directive | None = None
        master_at = ""
        for d in tree:
            if d.name == "env" and d.block is None:
                self.env(d)
                continue
            if d.name == "user" and d.block is None:
                self.user(d)
                continue
            if self.check(d, "main"):
                continue
            if d.name == "events":
                if events is not None:
                    raise self.fail(d, '"events" directive is duplicate')
                events = d
                self.kept.append([])
                for inner in d.block or ():
                    if inner.name == "worker_connections":
                        self.max_connections = self.worker_connections(inner)
                        continue
                    self.check(inner, "events")
                raw_events = tuple(self.kept.pop())
            elif d.name == "http":
                if http is not None:
                    raise self.fail(d, '"http" directive is duplicate')
                http = d
            elif d.name == "error_log":
                self.set_error_log(d, outer=True)
            elif d.name == "worker_processes":
                try:
                    self.workers = parse_workers(d.args[0])
                except ValueError:
                    message = f'invalid value "{d.args[0]}" in "{d.name}" directive'
                    raise self.fail(d, message) from None
            elif d.name == "worker_rlimit_nofile":
                self.max_open_files = self.number(d, 0, minimum=1)
            elif d.name == "worker_cpu_affinity":
                try:
                    self.cpu_affinity = parse_cpu_affinity(d.args)
                except ValueError as exc:
                    raise self.fail(d, str(exc)) from None
            elif d.name == "worker_priority":
                try:
                    self.worker_priority = parse_priority(d.args[0])
                except ValueError as exc:
                    raise self.fail(d, str(exc)) from None
            elif d.name == "master_process":
                self.master_process = self.flag(d, True)
                master_at = d.where
        if events is None:
            raise ConfigError('no "events" section in configuration', self.path)
        if not self.master_process:
            self.reader.notices.append(
                master_process_off(
                    nginx_engine=self.passthrough,
                    user=self.worker_user is not None,
                    workers=self.workers,
                    affinity=bool(self.cpu_affinity),
                    where=master_at,
                )
            )
        servers, maps = self.http(http) if http is not None else ((), ())
        self.limits.check_zones()
        self.check_log_files()
        state_dir = self.prefix_path(".nonstop")
        error_path, error_level = self.error_log or (None, "error")
        return Config(
            path=self.path,
            prefix=self.prefix,
            servers=tuple(servers),
            upstreams=(*self.declared.values(), *self.implicit.values()),
            maps=tuple(maps),
            zones=tuple(self.limits.zones.values()),
            state_dir=state_dir,
            admin=self.admin(os.path.join(state_dir, "admin.sock")),
            error_log=error_path,
            error_log_level=error_level,
            max_connections=self.max_connections,
            workers=self.workers,
            max_open_files=self.max_open_files,
            cpu_affinity=self.cpu_affinity,
            worker_priority=self.worker_priority,
            worker_user=self.worker_user,
            master_process=self.master_process,
            notices=tuple(self.reader.notices),
            files=tuple(self.reader.files),
            engine="nginx" if self.passthrough else "embedded",
            raw_main=tuple(self.kept[0]),
            raw_events=raw_events,
            raw_http=self.raw_http,
        )

    def env(self, d: Directive) -> None:
        """``env NAME[=VALUE];``: nginx passes it to its workers; nonstop reads its own
        ``NONSTOP_ADMIN_*`` settings from it (docs/configuration.md) and ignores the rest."""
        if len(d.args) != 1:
            raise self.fail(d, 'invalid number of arguments in "env" directive')
        name, has_value, value = d.args[0].partition("=")
        if not name.startswith("NONSTOP_"):
            self.notice(d)
            return
        key = _ADMIN_ENV.get(name)
        if key is None:
            known = ", ".join(_ADMIN_ENV)
            raise self.fail(d, f'unknown nonstop setting "{name}" (known: {known})')
        if not has_value or not value:
            raise self.fail(d, f'"env {name}" needs a value: env {name}=VALUE;')
        if key in self.admin_env:
            raise self.fail(d, f'"env {name}" is duplicate')
        self.admin_env[key] = (value, d)

    def user(self, d: Directive) -> None:
        """``user USER [GROUP];``: who the workers run as when nonstop is started as root
        (GROUP: the group named as USER, as in nginx) — nonstop's own workers, or nginx's
        with the nginx engine.  Not as root it is ignored with nginx's warning."""
        if not 1 <= len(d.args) <= 2:
            raise self.fail(d, 'invalid number of arguments in "user" directive')
        user, group = d.args[0], d.args[-1]
        if os.geteuid() != 0:
            self.reader.notices.append(
                'the "user" directive makes sense only if the master process runs with'
                f" super-user privileges, ignored ({d.where})"
            )
            return
        try:
            account = resolve_account(user, group)
        except UnknownAccount as exc:
            call = "getpwnam" if exc.kind == "user" else "getgrnam"
            raise self.fail(d, f'{call}("{exc.name}") failed') from None
        self.worker_user = account

    def admin(self, socket: str) -> AdminSpec:
        """The admin socket, and the HTTP listener the ``env NONSTOP_ADMIN_*`` lines set."""
        given = {key: value for key, (value, _d) in self.admin_env.items()}
        try:
            listen, token = admin_listener(
                given.get("listen"),
                given.get("token"),
                given.get("token_file"),
                self.conf_path,
                self.prefix_path,
            )
        except AdminSettingError as exc:
            found = self.admin_env.get(exc.key) or next(iter(self.admin_env.values()))
            raise self.fail(found[1], str(exc)) from None
        return AdminSpec(socket=socket, listen=listen, token=token)

    def check_values(self, level: _Level) -> None:
        """Check each value where it is written, as nginx does while parsing, even when no
        lower level ends up using it."""
        levels = [level]
        for name in _DURATIONS:
            self.duration(_one(levels, name), 0.0)
        for name in _NUMBERS:
            self.number(_one(levels, name), 0)
        self.number(_one(levels, "keepalive"), 0, minimum=1)
        self.size(_one(levels, "client_max_body_size"), 0)
        self.size(_one(levels, "client_body_buffer_size"), 0)
        self.flag(_one(levels, "ssl_prefer_server_ciphers"), False)
        for name in ("ssl_session_tickets", "ssl_stapling", "ssl_stapling_verify"):
            self.flag(_one(levels, name), False)
        self.flag(_one(levels, "proxy_request_buffering"), True)
        self.protocols(levels)
        self.next_upstream(_one(levels, "proxy_next_upstream"))
        self.http_version(_one(levels, "proxy_http_version"))
        self.add_headers(levels)
        self.access_log(levels)
        self.error_pages(levels)
        self.access(levels)
        self.limits.limits(lambda name: _inherit(levels, name))
        self.flag(_one(levels, "proxy_intercept_errors"), False)
        self.flag(_one(levels, "etag"), True)
        self.flag(_one(levels, "gzip"), False)
        self.check_gzip(levels)
        self.redirects(levels, None, "/")
        self.cookie_rules(levels, "proxy_cookie_path")
        self.cookie_rules(levels, "proxy_cookie_domain")
        self.expires(_one(levels, "expires"))
        self.types(levels)
        for d in level.items.get("proxy_set_header", ()):
            self.template(d, d.args[1])
        self.check_upstream_values([level])

    def set_error_log(self, d: Directive, outer: bool) -> None:
        path = None if d.args[0] == "stderr" else d.args[0]
        if path is not None and (":" in path.split("/")[0] or "$" in path):
            raise self.fail(d, f'error_log "{path}" is outside the nonstop subset (use a file)')
        level = d.args[1] if len(d.args) == 2 else "error"
        if level not in LOG_LEVELS:
            raise self.fail(d, f'invalid log level "{level}"')
        resolved = None if path is None else self.prefix_path(path)
        if self.error_log is None and outer:
            self.error_log = (resolved, level)
        elif self.error_log is None or self.error_log != (resolved, level):
            self.reader.notices.append(
                f"error_log at this level has no effect in nonstop: one error log serves"
                f" the whole process ({d.where})"
            )

    def http(self, http: Directive) -> tuple[list[ServerBlock], list[MapSpec]]:
        level = _Level()
        upstreams: list[Directive] = []
        servers: list[Directive] = []
        maps: list[MapSpec] = []
        self.kept.append([])
        for d in http.block or ():
            if self.check(d, "http"):
                continue
            if d.name == "upstream":
                upstreams.append(d)
            elif d.name == "server":
                servers.append(d)
            elif d.name == "map":
                maps.append(self.map(d, maps))
            elif d.name == "error_log":
                self.set_error_log(d, outer=True)
            elif d.name in ("limit_req_zone", "limit_conn_zone"):
                self.limits.zone(d)
            elif d.name == "log_format":
                self.log_format(d)
            else:
                level.add(d, DIRECTIVES[d.name].multi)
        self.raw_http = tuple(self.kept.pop())
        self.check_values(level)
        names = {d.args[0] for d in upstreams}
        for d in upstreams:
            if d.args[0] in self.declared:
                raise self.fail(d, f'duplicate upstream "{d.args[0]}"')
            self.declared[d.args[0]] = self.upstream(d, names)
        return [self.server(d, level) for d in servers], maps

    # -- upstream -----------------------------------------------------------

    def upstream(self, block: Directive, names: Collection[str]) -> UpstreamSpec:
        name = block.args[0]
        level = _Level()
        peers: list[ServerSpec] = []
        method: Directive | None = None
        self.kept.append([])
        for d in block.block or ():
            if self.check(d, "upstream"):
                continue
            if d.name == "server":
                peers.extend(self.upstream_server(d))
            elif d.name in METHODS:
                if method is not None:
                    self.reader.notices.append(f"load balancing method redefined ({d.where})")
                method = d
            else:
                level.add(d, False)
        raw = tuple(self.kept.pop())
        self.check_values(level)
        if not peers:
            raise self.fail(block, f'no servers are inside upstream "{name}"')
        balancing = self.balancing(method)
        if balancing.method not in BACKUP_METHODS:
            for peer in peers:
                if peer.backup and peer.source is not None:
                    raise ConfigError(
                        'balancing method does not support parameter "backup"', str(peer.source)
                    )
        levels = [level]
        return UpstreamSpec(
            name=name,
            servers=tuple(peers),
            keepalive=self.number(_one(levels, "keepalive"), 0, minimum=1),
            keepalive_requests=self.number(_one(levels, "keepalive_requests"), 1000),
            keepalive_timeout=self.duration(_one(levels, "keepalive_timeout"), 60.0),
            method=balancing.method,
            hash_key=balancing.hash_key,
            hash_consistent=balancing.hash_consistent,
            random_two=balancing.random_two,
            random_least_conn=balancing.random_least_conn,
            raw=raw,
            source=block.source,
        )

    def balancing(self, d: Directive | None) -> Balancing:
        if d is None:
            return Balancing()
        if d.name in ("least_conn", "ip_hash"):
            return Balancing(method=d.name)
        if d.name == "hash":
            if len(d.args) == 2 and d.args[1] != "consistent":
                raise self.fail(d, f'invalid parameter "{d.args[1]}"')
            key = self.template(d, d.args[0])
            return Balancing(method="hash", hash_key=key, hash_consistent=len(d.args) == 2)
        if d.args not in ((), ("two",), ("two", "least_conn")):
            raise self.fail(d, f'invalid parameter "{" ".join(d.args)}"')
        two = bool(d.args)
        return Balancing(method="random", random_two=two, random_least_conn=two)

    def upstream_server(self, d: Directive) -> list[ServerSpec]:
        params = ServerSpec(address="", host="", port=0, source=d.source)
        for arg in d.args[1:]:
            params = self.server_param(d, arg, params)
        try:
            return make_servers(d.args[0], self.resolver, params)
        except ValueError as exc:
            raise self.fail(d, str(exc)) from exc

    def server_param(self, d: Directive, arg: str, params: ServerSpec) -> ServerSpec:
        """One ``weight=``/``max_fails=``/... parameter (``ngx_http_upstream_server``)."""
        key, _, raw = arg.partition("=")
        if key == "weight" and raw.isdigit() and int(raw) >= 1:
            return replace(params, weight=int(raw))
        if key == "max_fails" and raw.isdigit():
            return replace(params, max_fails=int(raw))
        if key == "max_conns" and raw.isdigit():
            return replace(params, max_conns=int(raw))
        if key == "fail_timeout" and raw:
            try:
                return replace(params, fail_timeout=parse_duration(raw))
            except ValueError:
                pass
        if arg == "backup":
            return replace(params, backup=True)
        if arg == "down":
            return replace(params, down=True)
        raise self.fail(d, f'invalid parameter "{arg}"')

    # -- map ----------------------------------------------------------------

    def map(self, block: Directive, earlier: list[MapSpec]) -> MapSpec:
        try:
            source_tpl = compile_template(block.args[0])
            target = _variable_name(block.args[1])
        except ValueError as exc:
            raise self.fail(block, str(exc)) from exc
        if len(source_tpl.parts) != 1 or source_tpl.is_constant:
            raise self.fail(block, "a map source other than one $variable is outside the subset")
        if any(m.target == target for m in earlier):
            raise self.fail(block, f'the duplicate "{target}" variable')
        entries: dict[str, Template] = {}
        regexes: list[tuple[Regex, Template]] = []
        default: Template | None = None
        for d in block.block or ():
            if d.block is not None:
                raise self.fail(d, f'unexpected "{{" in map "{block.args[1]}"')
            if d.name in ("hostnames", "volatile") and not d.args:
                raise self.fail(d, f'map "{d.name}" is outside the nonstop subset')
            if len(d.args) != 1:
                raise self.fail(d, "invalid number of the map parameters")
            key, value = d.name, self.template(d, d.args[0])
            if key == "default":
                if default is not None:
                    raise self.fail(d, "duplicate default map parameter")
                default = value
                continue
            if key.startswith("~"):
                caseless = key.startswith("~*")
                regexes.append((self.regex(d, key[2 if caseless else 1 :], caseless), value))
                continue
            key = (key[1:] if key.startswith("\\") else key).lower()
            if key in entries:
                raise self.fail(d, f'conflicting parameter "{d.name}"')
            entries[key] = value
        return MapSpec(
            source=source_tpl.parts[0][1],
            target=target,
            entries=tuple(entries.items()),
            default=default or compile_template(""),
            regexes=tuple(regexes),
            origin=block.source,
        )

    # -- server -------------------------------------------------------------

    def server(self, block: Directive, http: _Level) -> ServerBlock:
        level = _Level()
        listens: list[Listen] = []
        names: list[str] = []
        rewrites: list[Directive] = []
        locations: list[Directive] = []
        self.kept.append([])
        for d in block.block or ():
            if self.check(d, "server"):
                continue
            if d.name == "listen":
                listens.extend(self.listen(d))
            elif d.name == "server_name":
                names.extend(self.server_names(d))
            elif d.name == "location":
                locations.append(d)
            elif d.name in _REWRITE_DIRECTIVES:
                rewrites.append(d)
            elif d.name == "error_log":
                self.set_error_log(d, outer=False)
            elif d.name == "stub_status":
                # nginx's answers the requests no location takes; nonstop's lives in one
                if not self.passthrough:
                    message = "stub_status in a server block is outside the nonstop subset"
                    raise self.fail(d, message)
                self.kept[-1].append(self.raw(d))  # the nginx engine passes it on
            else:
                level.add(d, DIRECTIVES[d.name].multi)
        raw = tuple(self.kept.pop())
        self.check_values(level)
        levels = [level, http]
        set_lines = [d for d in rewrites if d.name == "set"]
        steps = tuple(self.step(d, "server", None, []) for d in rewrites)
        sets, ret, program = _program(steps)
        built = [self.location(d, levels, set_lines) for d in locations]
        listens = listens or [Listen(host="0.0.0.0", port=80)]
        return ServerBlock(
            listens=tuple(listens),
            server_names=tuple(names),
            locations=tuple(built),
            ret=ret,
            tls=self.tls(block, levels, listens),
            add_headers=self.add_headers(levels),
            client_max_body_size=self.size(_one(levels, "client_max_body_size"), 1024 * 1024),
            keepalive_timeout=self.duration(_one(levels, "keepalive_timeout"), 75.0),
            keepalive_requests=self.number(_one(levels, "keepalive_requests"), 1000),
            client_header_timeout=self.duration(_one(levels, "client_header_timeout"), 60.0),
            client_body_timeout=self.duration(_one(levels, "client_body_timeout"), 60.0),
            send_timeout=self.duration(_one(levels, "send_timeout"), 60.0),
            access_log=self.access_log(levels),
            sets=sets,
            steps=program,
            error_pages=self.error_pages(levels),
            files=self.files(levels, "", "/"),
            access=self.access(levels),
            text_types=self.text_types(levels),
            limits=self.limits.limits(lambda name: _inherit(levels, name)),
            gzip=self.gzip(levels),
            charset=self.charset(levels),
            charset_types=self.charset_types(levels),
            raw=raw,
            source=block.source,
        )

    def listen(self, d: Directive) -> list[Listen]:
        try:
            return parse_listen(d.args, self.resolver)
        except ValueError as exc:
            raise self.fail(d, str(exc)) from exc

    def server_names(self, d: Directive) -> list[str]:
        for name in d.args:
            if name.startswith("~") or "$" in name:
                raise self.fail(d, f'regex server_name "{name}" is outside the nonstop subset')
        return [name.lower() for name in d.args]

    def ret(self, d: Directive) -> ReturnSpec:
        try:
            return _return(d.args)
        except ValueError as exc:
            raise self.fail(d, str(exc)) from exc

    def set(self, d: Directive) -> tuple[str, Template]:
        try:
            return _variable_name(d.args[0]), compile_template(d.args[1])
        except ValueError as exc:
            raise self.fail(d, str(exc)) from exc

    def tls(self, block: Directive, levels: list[_Level], listens: list[Listen]) -> TlsSpec | None:
        if not any(listen.ssl for listen in listens):
            return None
        cert = _one(levels, "ssl_certificate")
        key = _one(levels, "ssl_certificate_key")
        if cert is None:
            raise self.fail(
                block, 'no "ssl_certificate" is defined for the "listen ... ssl" directive'
            )
        if key is None:
            raise self.fail(
                cert, f'no "ssl_certificate_key" is defined for certificate "{cert.args[0]}"'
            )
        protocols = self.protocols(levels)
        cache = _one(levels, "ssl_session_cache")
        ciphers = _one(levels, "ssl_ciphers")
        dhparam = _one(levels, "ssl_dhparam")
        stapling = _one(levels, "ssl_stapling")
        if stapling is not None and self.flag(stapling, False):
            self.reader.notices.append(
                f'"ssl_stapling on" has no effect in nonstop: Python\'s ssl module cannot'
                f" staple OCSP responses; clients that want one ask the CA ({stapling.where})"
            )
        curve = _one(levels, "ssl_ecdh_curve")
        curves = curve.args[0] if curve is not None else "auto"
        if ":" in curves:
            self.reader.notices.append(
                f'"ssl_ecdh_curve {curves}": Python\'s ssl module sets one curve, so the'
                " embedded engine offers OpenSSL's default groups (X25519, P-256, P-384"
                f" among them) in place of this list ({curve.where if curve else ''})"
            )
        return TlsSpec(
            certificate=self.conf_path(cert.args[0]),
            certificate_key=self.conf_path(key.args[0]),
            protocols=protocols or _DEFAULT_TLS.protocols,
            ciphers=ciphers.args[0] if ciphers else None,
            prefer_server_ciphers=self.flag(_one(levels, "ssl_prefer_server_ciphers"), False),
            session_cache=" ".join(cache.args) if cache else None,
            session_timeout=self.duration(_one(levels, "ssl_session_timeout"), 300.0),
            dhparam=self.conf_path(dhparam.args[0]) if dhparam else None,
            session_tickets=self.flag(_one(levels, "ssl_session_tickets"), True),
            ecdh_curve=curves,
        )

    def protocols(self, levels: list[_Level]) -> tuple[str, ...] | None:
        return self.ssl_protocols(_one(levels, "ssl_protocols"))

    def add_headers(self, levels: list[_Level]) -> tuple[AddHeader, ...]:
        out: list[AddHeader] = []
        for d in _inherit(levels, "add_header") or ():
            if len(d.args) == 3 and d.args[2] != "always":
                raise self.fail(d, f'invalid parameter "{d.args[2]}"')
            out.append(AddHeader(d.args[0], self.template(d, d.args[1]), len(d.args) == 3))
        return tuple(out)

    def log_format(self, d: Directive) -> None:
        name = d.args[0]
        if name in self.log_formats and name not in logformats.PREDEFINED:
            raise self.fail(d, f'duplicate "log_format" name "{name}"')
        try:
            fmt = logformats.log_format(d.args)
        except ValueError as exc:
            raise self.fail(d, str(exc)) from None
        self.log_formats[name] = fmt

    def access_log(self, levels: list[_Level]) -> tuple[AccessLog, ...] | None:
        """The logs of the innermost level with an ``access_log``; ``off`` there cancels
        every one of that level (ngx_http_log_merge_loc_conf)."""
        found = _inherit(levels, "access_log")
        if found is None:
            return None
        if any(d.args[0] == "off" for d in found):
            for d in found:
                if d.args[0] == "off" and len(d.args) > 1:
                    raise self.fail(d, 'invalid number of arguments in "access_log" directive')
            return ()
        logs: list[AccessLog] = []
        for d in found:
            try:
                log = logformats.access_log(d.args, self.log_formats, self.prefix_path)
            except ValueError as exc:
                raise self.fail(d, str(exc)) from None
            logs.append(log)
            self.logs.append((log, d))
        return tuple(logs)

    def check_log_files(self) -> None:
        seen: dict[str, AccessLog] = {}
        for log, d in self.logs:
            first = seen.setdefault(log.path, log)
            if (first.buffer, first.flush, first.gzip) != (log.buffer, log.flush, log.gzip):
                raise self.fail(
                    d, f'access_log "{d.args[0]}" already defined with conflicting parameters'
                )

    # -- location -----------------------------------------------------------

    def location(
        self, block: Directive, parents: list[_Level], server_sets: list[Directive]
    ) -> LocationSpec:
        path, modifier = self.location_path(block)
        level, rewrites, raw = self.block_level(block, "location")
        levels = [level, *parents]
        set_lines = [d for d in rewrites if d.name == "set"]
        pass_d = _one([level], "proxy_pass")
        proxy = self.proxy_pass(pass_d, [*server_sets, *set_lines]) if pass_d else None
        if proxy is not None and proxy.uri is not None and modifier in ("~", "~*", "@"):
            assert pass_d is not None
            raise self.fail(
                pass_d,
                '"proxy_pass" cannot have URI part in location given by regular expression,'
                " or inside named location",
            )
        spec = self.location_spec(block, path, modifier, levels, proxy)
        if proxy is None and not rewrites and spec.files is None and not spec.stub_status:
            spec = replace(spec, files=self.files(levels, modifier, path, location=True))
        steps = tuple(self.step(d, "location", spec, levels) for d in rewrites)
        sets, ret, program = _program(steps)
        return replace(spec, sets=sets, ret=ret, steps=program, raw=raw)

    def block_level(
        self, block: Directive, ctx: str
    ) -> tuple[_Level, list[Directive], tuple[RawDirective, ...]]:
        """A location's or an if's directives: its level, its rewrite directives and what
        is passed through to nginx."""
        level = _Level()
        rewrites: list[Directive] = []
        self.kept.append([])
        for d in block.block or ():
            if self.check(d, ctx):
                continue
            if d.name in _REWRITE_DIRECTIVES:
                rewrites.append(d)
            else:
                level.add(d, DIRECTIVES[d.name].multi)
        raw = tuple(self.kept.pop())
        self.check_values(level)
        return level, rewrites, raw

    def location_spec(
        self,
        block: Directive,
        path: str,
        modifier: str,
        levels: list[_Level],
        proxy: ProxyPass | None,
    ) -> LocationSpec:
        """A location's (or a location ``if``'s) configuration, inherited from ``levels``."""
        status = _one(levels[:1], "stub_status") is not None  # its own handler, not inherited
        return LocationSpec(
            path=path,
            exact=modifier == "=",
            modifier=modifier,
            proxy_pass=proxy,
            set_headers=tuple(
                SetHeader(d.args[0], self.template(d, d.args[1]))
                for d in _inherit(levels, "proxy_set_header") or ()
            ),
            add_headers=self.add_headers(levels),
            next_upstream=self.next_upstream(_one(levels, "proxy_next_upstream")),
            next_upstream_tries=self.number(_one(levels, "proxy_next_upstream_tries"), 0),
            next_upstream_timeout=self.duration(_one(levels, "proxy_next_upstream_timeout"), 0.0),
            connect_timeout=self.duration(_one(levels, "proxy_connect_timeout"), 60.0),
            read_timeout=self.duration(_one(levels, "proxy_read_timeout"), 60.0),
            send_timeout=self.duration(_one(levels, "proxy_send_timeout"), 60.0),
            http_version=self.http_version(_one(levels, "proxy_http_version")),
            client_max_body_size=self.size(_one(levels, "client_max_body_size"), 1024 * 1024),
            request_buffering=self.flag(_one(levels, "proxy_request_buffering"), True),
            client_body_buffer_size=self.size(_one(levels, "client_body_buffer_size"), 16 * 1024),
            access_log=self.access_log(levels),
            error_pages=self.error_pages(levels),
            intercept_errors=self.flag(_one(levels, "proxy_intercept_errors"), False),
            files=None if proxy is not None or status else self.files(levels, modifier, path),
            access=self.access(levels),
            limits=self.limits.limits(lambda name: _inherit(levels, name)),
            hide_headers=tuple(
                d.args[0].lower() for d in _inherit(levels, "proxy_hide_header") or ()
            ),
            internal=_one(levels[:1], "internal") is not None,
            stub_status=status,
            buffering=self.buffering(levels),
            proxy_ssl=self.proxy_ssl(levels, proxy),
            resolver=self.dns_resolver(levels),
            text_types=self.text_types(levels),
            gzip=self.gzip(levels),
            redirects=self.redirects(levels, proxy, path),
            cookie_paths=self.cookie_rules(levels, "proxy_cookie_path"),
            cookie_domains=self.cookie_rules(levels, "proxy_cookie_domain"),
            pass_headers=tuple(
                d.args[0].lower() for d in _inherit(levels, "proxy_pass_header") or ()
            ),
            charset=self.charset(levels),
            charset_types=self.charset_types(levels),
            keepalive_timeout=self.location_keepalive(levels),
            source=block.source,
        )

    # -- compression and the proxied response head --------------------------

    def gzip(self, levels: list[_Level]) -> GzipSpec | None:
        """The gzip family, each directive inherited on its own; None unless ``gzip on``."""
        if not self.flag(_one(levels, "gzip"), False):
            return None
        return self.check_gzip(levels)

    def check_gzip(self, levels: list[_Level]) -> GzipSpec:
        types = _one(levels, "gzip_types")
        buffers = _one(levels, "gzip_buffers")
        if buffers is not None:
            self.gzip_buffers(buffers)
        disable: list[Regex] = []
        msie6 = False
        for d in _inherit(levels, "gzip_disable") or ():
            for raw in d.args:
                if raw == "msie6":
                    msie6 = True
                else:
                    disable.append(self.regex(d, raw, True))  # compiled caseless, as nginx
        return GzipSpec(
            types=frozenset({"text/html", *(t.lower() for t in (types.args if types else ()))}),
            comp_level=self.comp_level(_one(levels, "gzip_comp_level")),
            min_length=self.size(_one(levels, "gzip_min_length"), 20),
            proxied=self.gzip_proxied(_one(levels, "gzip_proxied")),
            vary=self.flag(_one(levels, "gzip_vary"), False),
            disable=tuple(disable),
            disable_msie6=msie6,
            http_version=self.gzip_http_version(_one(levels, "gzip_http_version")),
        )

    def comp_level(self, d: Directive | None) -> int:
        if d is None:
            return 1
        raw = d.args[0]
        if not raw.isdigit() or not 1 <= int(raw) <= 9:
            raise self.fail(d, '"gzip_comp_level" must be between 1 and 9')
        return int(raw)

    def gzip_proxied(self, d: Directive | None) -> frozenset[str]:
        if d is None:
            return frozenset({"off"})
        for value in d.args:
            if value not in GZIP_PROXIED:
                raise self.fail(d, f'invalid value "{value}" in "{d.name}" directive')
        return frozenset(d.args)

    def gzip_http_version(self, d: Directive | None) -> str:
        if d is None:
            return "1.1"
        if d.args[0] not in ("1.0", "1.1"):
            raise self.fail(d, f'invalid value "{d.args[0]}" in "{d.name}" directive')
        return d.args[0]

    def gzip_buffers(self, d: Directive) -> None:
        """``gzip_buffers NUMBER SIZE``: checked, then left to zlib (nonstop's output
        leaves as zlib produces it)."""
        number, raw = d.args
        try:
            valid = number.isdigit() and int(number) > 0 and parse_size(raw) > 0
        except ValueError:
            valid = False
        if not valid:
            raise self.fail(d, f'invalid value "{number} {raw}" in "{d.name}" directive')

    def redirects(
        self, levels: list[_Level], proxy: ProxyPass | None, path: str
    ) -> tuple[HeaderRewrite, ...]:
        """proxy_redirect as ngx_http_proxy_merge_loc_conf resolves it: the innermost
        level's rules; none written anywhere means ``default``, the proxy_pass URL (with
        "/" when it has no URI part) replaced by the location's prefix ("/")."""
        written = _inherit(levels, "proxy_redirect")
        if written is None:
            return self.default_redirect(None, proxy, path)
        rules: list[HeaderRewrite] = []
        for d in written:
            if d.args in (("off",), ("false",)):
                if len(written) > 1:
                    raise self.fail(
                        d, '"off" cannot be used with other "proxy_redirect" directives'
                    )
                return ()
            if len(d.args) == 1:
                if d.args[0] != "default":
                    raise self.fail(d, f'invalid parameter "{d.args[0]}"')
                rules += self.default_redirect(d, proxy, path)
            else:
                rules.append(self.header_rewrite(d, d.args[0], d.args[1]))
        return tuple(rules)

    def default_redirect(
        self, d: Directive | None, proxy: ProxyPass | None, path: str
    ) -> tuple[HeaderRewrite, ...]:
        if proxy is None:
            return ()
        if not proxy.url.is_constant:
            if d is not None:
                raise self.fail(
                    d,
                    '"proxy_redirect default" cannot be used with "proxy_pass" directive'
                    " with variables",
                )
            return ()
        url = proxy.url.raw
        if proxy.uri is not None:
            return (HeaderRewrite(compile_template(path), pattern=compile_template(url)),)
        return (HeaderRewrite(compile_template("/"), pattern=compile_template(url + "/")),)

    def cookie_rules(self, levels: list[_Level], name: str) -> tuple[HeaderRewrite, ...]:
        """proxy_cookie_path / proxy_cookie_domain: the innermost level's rules, "off"
        none; a domain pattern's leading "." is dropped, as nginx drops it."""
        written = _inherit(levels, name) or []
        rules: list[HeaderRewrite] = []
        for d in written:
            if len(d.args) == 1:
                if d.args[0] != "off":
                    raise self.fail(d, f'invalid parameter "{d.args[0]}"')
                if len(written) > 1:
                    raise self.fail(d, f'"off" cannot be used with other "{name}" directives')
                return ()
            pattern = d.args[0]
            if name == "proxy_cookie_domain" and pattern.startswith("."):
                pattern = pattern[1:]
            rules.append(self.header_rewrite(d, pattern, d.args[1]))
        return tuple(rules)

    def header_rewrite(self, d: Directive, pattern: str, replacement: str) -> HeaderRewrite:
        """``PATTERN REPLACEMENT``; a pattern starting with "~" ("~*": caseless) is a
        regex whose captures the replacement may use."""
        target = self.template(d, replacement)
        if pattern.startswith("~*"):
            return HeaderRewrite(target, regex=self.regex(d, pattern[2:], True))
        if pattern.startswith("~"):
            return HeaderRewrite(target, regex=self.regex(d, pattern[1:], False))
        return HeaderRewrite(target, pattern=self.template(d, pattern))

    def location_keepalive(self, levels: list[_Level]) -> float | None:
        """A location's own keepalive_timeout (levels end with the server and http)."""
        d = _one(levels[:-2], "keepalive_timeout")
        return None if d is None else self.duration(d, 75.0)

    def charset(self, levels: list[_Level]) -> str | None:
        """``charset NAME|off``; a ``source_charset`` would need recoding, which nonstop
        does not do: one different from ``charset`` is refused."""
        d = _one(levels, "charset")
        name = None if d is None or d.args[0] == "off" else d.args[0]
        source = _one(levels, "source_charset")
        if source is not None and name is not None and source.args[0].lower() != name.lower():
            raise self.fail(
                source,
                f'"source_charset {source.args[0]}" with "charset {name}" needs recoding,'
                " which is outside the nonstop subset (nonstop only names the charset)",
            )
        return name

    def charset_types(self, levels: list[_Level]) -> tuple[str, ...]:
        d = _one(levels, "charset_types")
        return CHARSET_TYPES if d is None else tuple(t.lower() for t in d.args)

    def access(self, levels: list[_Level]) -> tuple[AccessRule, ...]:
        """allow and deny in the order written, from the innermost level that has any
        (ngx_http_access_merge_loc_conf)."""
        for level in levels:
            written = [d for d in level.ordered if d.name in ("allow", "deny")]
            if written:
                return tuple(self.access_rule(d) for d in written)
        return ()

    def access_rule(self, d: Directive) -> AccessRule:
        raw = d.args[0]
        if raw in ("all", "unix:"):
            return AccessRule(d.name == "allow", raw)
        try:
            network = ipaddress.ip_network(raw, strict=False)
        except ValueError as exc:
            raise self.fail(d, f'invalid parameter "{raw}"') from exc
        return AccessRule(d.name == "allow", str(network))

    # -- files --------------------------------------------------------------

    def files(
        self, levels: list[_Level], modifier: str, path: str, location: bool = False
    ) -> FilesSpec | None:
        """A level without proxy_pass serves files once a root, alias or try_files says
        from where; a ``location`` with nothing else to answer (no rewrite directives)
        serves them from nginx's default root, PREFIX/html."""
        root_d, alias_d = _one(levels, "root"), _one(levels, "alias")
        tries = _one(levels, "try_files")
        if root_d is None and alias_d is None and tries is None and not location:
            return None
        if root_d is not None and alias_d is not None and root_d in levels[0].items.get("root", ()):
            raise self.fail(
                alias_d, '"alias" directive is duplicate, "root" directive was specified earlier'
            )
        alias = None
        if alias_d is not None:
            if modifier in ("~", "~*", "@"):
                where = f'the regex or named location "{path}"'
                raise self.fail(alias_d, f'"alias" in {where} is outside the nonstop subset')
            alias = self.prefix_path(alias_d.args[0]) + (
                "/" if alias_d.args[0].endswith("/") else ""
            )
        root = self.prefix_path(root_d.args[0]) if root_d is not None else self.prefix_path("html")
        index = [arg for d in _inherit(levels, "index") or () for arg in d.args]
        expires, expires_time = self.expires(_one(levels, "expires"))
        return FilesSpec(
            root=root,
            alias=alias,
            index=tuple(index) or ("index.html",),
            try_files=tuple(self.template(tries, arg) for arg in tries.args) if tries else (),
            expires=expires,
            expires_time=expires_time,
            etag=self.flag(_one(levels, "etag"), True),
            types=self.types(levels),
            default_type=(_one(levels, "default_type") or _DEFAULT_TYPE).args[0],
        )

    def text_types(self, levels: list[_Level]) -> tuple[tuple[tuple[str, str], ...], str]:
        """What ngx_http_set_content_type reads: ``types``, then ``default_type``."""
        return self.types(levels), (_one(levels, "default_type") or _DEFAULT_TYPE).args[0]

    def types(self, levels: list[_Level]) -> tuple[tuple[str, str], ...]:
        blocks = _inherit(levels, "types")
        if blocks is None:
            return DEFAULT_TYPES
        found: dict[str, str] = {}
        for block in blocks:
            for d in block.block or ():
                if d.block is not None:
                    raise self.fail(d, 'unexpected "{"')
                for ext in d.args:
                    found.setdefault(ext.lower(), d.name)
        return tuple(found.items())

    def expires(self, d: Directive | None) -> tuple[str, float]:
        """``expires [modified] TIME|epoch|max|off`` (ngx_http_headers_filter_module.c)."""
        if d is None:
            return "off", 0.0
        args = list(d.args)
        if args[0] == "modified":
            raise self.fail(d, '"expires modified" is outside the nonstop subset')
        if len(args) != 1:
            raise self.fail(d, 'invalid number of arguments in "expires" directive')
        if args[0] in ("off", "epoch", "max"):
            return args[0], 0.0
        raw = args[0]
        sign = -1.0 if raw.startswith("-") else 1.0
        try:
            seconds = parse_duration(raw.lstrip("+-"))
        except ValueError as exc:
            raise self.fail(d, f'invalid value "{raw}"') from exc
        return "time", sign * seconds

    def error_pages(self, levels: list[_Level]) -> tuple[ErrorPage, ...]:
        """``error_page`` lines (ngx_http_core_error_page), inherited as one list."""
        return tuple(self.error_page(d) for d in _inherit(levels, "error_page") or ())

    def error_page(self, d: Directive) -> ErrorPage:
        *codes, target = d.args
        overwrite = -1
        if codes and codes[-1].startswith("="):
            response = codes.pop()[1:]
            if response and (not response.isdigit() or int(response) < 100):
                raise self.fail(d, f'invalid value "={response}"')
            overwrite = int(response) if response else 0
        if not codes:
            raise self.fail(d, 'invalid number of arguments in "error_page" directive')
        for code in codes:
            if not code.isdigit() or not 300 <= int(code) <= 599:
                raise self.fail(d, f'value "{code}" must be between 300 and 599')
        return ErrorPage(tuple(int(c) for c in codes), self.template(d, target), overwrite)

    def location_path(self, d: Directive) -> tuple[str, str]:
        args = d.args
        if len(args) == 1:
            for modifier in ("^~", "=", "~*", "~"):
                if args[0].startswith(modifier) and len(args[0]) > len(modifier):
                    args = (modifier, args[0][len(modifier) :])
                    break
        if len(args) == 1:
            modifier, path = ("@", args[0]) if args[0].startswith("@") else ("", args[0])
        else:
            modifier, path = args
        if modifier not in ("", "=", "^~", "~", "~*", "@"):
            raise self.fail(d, f'invalid location modifier "{modifier}"')
        if modifier in ("~", "~*"):
            self.regex(d, path, modifier == "~*")
        return path, modifier

    # -- the rewrite module -------------------------------------------------

    def step(self, d: Directive, ctx: str, loc: LocationSpec | None, levels: list[_Level]) -> Step:
        """One of set, return, rewrite, break, if (ngx_http_rewrite_module.c)."""
        if d.name == "set":
            name, value = self.set(d)
            return SetSpec(name, value)
        if d.name == "return":
            return self.ret(d)
        if d.name == "break":
            return BreakSpec()
        if d.name == "rewrite":
            return self.rewrite(d)
        return self.if_block(d, ctx, loc, levels)

    def rewrite(self, d: Directive) -> RewriteSpec:
        flag = d.args[2] if len(d.args) == 3 else ""
        if flag not in ("", "last", "break", "redirect", "permanent"):
            raise self.fail(d, f'invalid parameter "{flag}"')
        regex = self.regex(d, d.args[0], False)
        return RewriteSpec(regex, self.template(d, d.args[1]), flag)

    def regex(self, d: Directive, pattern: str, caseless: bool) -> Regex:
        regex = Regex(pattern, caseless)
        try:
            compile_regex(regex)
        except ValueError as exc:
            raise self.fail(d, str(exc)) from exc
        return regex

    def if_block(
        self, d: Directive, ctx: str, loc: LocationSpec | None, levels: list[_Level]
    ) -> IfSpec:
        condition = self.condition(d)
        inner_ctx = "if" if ctx == "location" else "sif"
        level, rewrites, raw = self.block_level(d, inner_ctx)
        steps = tuple(self.step(inner, inner_ctx, None, []) for inner in rewrites)
        if loc is None:
            return IfSpec(condition, steps, None, raw, d.source)
        pass_d = _one([level], "proxy_pass")
        if pass_d is not None:
            proxy: ProxyPass | None = self.proxy_pass(pass_d, [])
            if proxy is not None and proxy.uri is not None:
                raise self.fail(pass_d, '"proxy_pass" cannot have URI part inside "if" statement')
        else:
            # the location's pass, without its URI part (ngx_http_proxy_merge_loc_conf)
            proxy = replace(loc.proxy_pass, uri=None) if loc.proxy_pass else None
        spec = self.location_spec(d, loc.path, loc.modifier, [level, *levels], proxy)
        return IfSpec(condition, steps, spec, raw, d.source)

    def condition(self, d: Directive) -> Condition:
        """``(...)`` as ngx_http_rewrite_if_condition reads it."""
        args = list(d.args)
        if not args[0].startswith("("):
            raise self.fail(d, f'invalid condition "{args[0]}"')
        args[0] = args[0][1:]
        if not args[0]:
            args.pop(0)
        if not args or not args[-1].endswith(")"):
            raise self.fail(d, f'invalid condition "{" ".join(d.args)}"')
        args[-1] = args[-1][:-1]
        if not args[-1]:
            args.pop()
        if not args:
            raise self.fail(d, f'invalid condition "{" ".join(d.args)}"')
        first = args[0]
        if first in _FILE_TESTS:
            if len(args) != 2:
                raise self.fail(d, f'invalid condition "{" ".join(d.args)}"')
            return Condition(first, self.template(d, args[1]))
        if len(first) < 2 or first[0] != "$":
            raise self.fail(d, f'invalid condition "{first}"')
        subject = self.template(d, first)
        if len(args) == 1:
            return Condition("", subject)
        if len(args) != 3:
            raise self.fail(d, f'unexpected "{args[1]}" in condition')
        op, operand = args[1], args[2]
        if op in ("=", "!="):
            return Condition(op, subject, operand=self.template(d, operand))
        if op in ("~", "~*", "!~", "!~*"):
            return Condition(op, subject, regex=self.regex(d, operand, op.endswith("*")))
        raise self.fail(d, f'unexpected "{op}" in condition')

    def proxy_pass(self, d: Directive, sets: list[Directive]) -> ProxyPass:
        try:
            spec, implicit = proxy_pass_spec(d.args[0], self.declared, self.resolver)
        except ValueError as exc:
            raise self.fail(d, str(exc)) from exc
        if implicit is not None:
            self.implicit.setdefault(implicit.name, implicit)
        url = spec.url
        if len(url.parts) == 1 and url.parts[0][0] == "var":
            self.check_url_variable(url.parts[0][1], sets)
        return spec

    def check_url_variable(self, name: str, sets: list[Directive]) -> None:
        """``set $v 8081; proxy_pass $v;`` gives a 500 on every request in nginx; refuse it."""
        last = [d for d in sets if d.args[0] == f"${name}"]
        if not last:
            return
        raw = last[-1].args[1]
        if "$" in raw:
            return
        if not raw.lower().startswith(("http://", "https://")):
            raise self.fail(last[-1], f'invalid URL prefix in "{raw}" (used by "proxy_pass")')

    def next_upstream(self, d: Directive | None) -> frozenset[str]:
        if d is None:
            return frozenset({"error", "timeout"})
        for mask in d.args:
            if mask not in NEXT_UPSTREAM_MASKS:
                raise self.fail(d, f'invalid value "{mask}"')
        if "off" in d.args:
            return frozenset()
        return frozenset(d.args)

    def http_version(self, d: Directive | None) -> str:
        if d is None:
            return "1.1"
        if d.args[0] not in ("1.0", "1.1"):
            raise self.fail(d, f'invalid value "{d.args[0]}" in "proxy_http_version" directive')
        return d.args[0]

    # -- reading the response ahead, https upstreams (ngx_http_proxy_module.c) ----------

    def check_upstream_values(self, levels: list[_Level]) -> None:
        """The values of proxy_buffering and proxy_ssl_* where they are written."""
        self.flag(_one(levels, "proxy_buffering"), True)
        self.proxy_buffers(_one(levels, "proxy_buffers"))
        for name in _BUFFER_SIZES:
            self.size(_one(levels, name), 0)
        self.ignore_headers(_one(levels, "proxy_ignore_headers"))
        for name in ("proxy_ssl_verify", "proxy_ssl_server_name", "proxy_ssl_session_reuse"):
            self.flag(_one(levels, name), False)
        self.number(_one(levels, "proxy_ssl_verify_depth"), 1)
        self.ssl_protocols(_one(levels, "proxy_ssl_protocols"))
        self.dns_resolver(levels)
        ssl_name = _one(levels, "proxy_ssl_name")
        if ssl_name is not None:
            self.template(ssl_name, ssl_name.args[0])

    def buffering(self, levels: list[_Level]) -> ProxyBuffering:
        """proxy_buffering and its sizes, held to nginx's rules between them
        (ngx_http_proxy_merge_loc_conf): a level that breaks them is refused, as
        ``nginx -t`` refuses it."""
        bufs_d = _one(levels, "proxy_buffers")
        size_d = _one(levels, "proxy_buffer_size")
        busy_d = _one(levels, "proxy_busy_buffers_size")
        write_d = _one(levels, "proxy_temp_file_write_size")
        max_d = _one(levels, "proxy_max_temp_file_size")
        count, each = self.proxy_buffers(bufs_d)
        buffer_size = self.size(size_d, _PAGE)
        largest = max(buffer_size, each)
        where = busy_d or bufs_d or size_d
        busy = self.size(busy_d, 2 * largest)
        both = 'the maximum of the value of "proxy_buffer_size" and one of the "proxy_buffers"'
        if where is not None and busy < largest:
            message = f'"proxy_busy_buffers_size" must be equal to or greater than {both}'
            raise self.fail(where, message)
        if where is not None and busy > (count - 1) * each:
            message = (
                '"proxy_busy_buffers_size" must be less than the size of all "proxy_buffers"'
                " minus one buffer"
            )
            raise self.fail(where, message)
        write_size = self.size(write_d, 2 * largest)
        if write_d is not None and write_size < largest:
            message = f'"proxy_temp_file_write_size" must be equal to or greater than {both}'
            raise self.fail(write_d, message)
        max_temp = self.size(max_d, 1024 * 1024 * 1024)
        if max_d is not None and max_temp and max_temp < largest:
            message = (
                '"proxy_max_temp_file_size" must be equal to zero to disable temporary files'
                f" usage or must be equal to or greater than {both}"
            )
            raise self.fail(max_d, message)
        ignored = self.ignore_headers(_one(levels, "proxy_ignore_headers"))
        return ProxyBuffering(
            enabled=self.flag(_one(levels, "proxy_buffering"), True),
            buffer_size=buffer_size,
            buffers=count,
            buffer=each,
            busy_buffers_size=busy,
            max_temp_file_size=max_temp,
            temp_file_write_size=write_size,
            accel_buffering="x-accel-buffering" not in ignored,
        )

    def proxy_buffers(self, d: Directive | None) -> tuple[int, int]:
        """``proxy_buffers NUMBER SIZE`` (ngx_conf_set_bufs_slot), at least two."""
        if d is None:
            return 8, _PAGE
        count, raw = d.args
        try:
            each = parse_size(raw)
        except ValueError:
            each = 0
        if not count.isdigit() or int(count) == 0 or each == 0:
            raise self.fail(d, f'invalid value "{count} {raw}" in "proxy_buffers" directive')
        if int(count) < 2:
            raise self.fail(d, 'there must be at least 2 "proxy_buffers"')
        return int(count), each

    def ignore_headers(self, d: Directive | None) -> frozenset[str]:
        if d is None:
            return frozenset()
        for name in d.args:
            if name.lower() not in _IGNORE_HEADERS:
                raise self.fail(d, f'invalid value "{name}"')
        return frozenset(name.lower() for name in d.args)

    def dns_resolver(self, levels: list[_Level]) -> ResolverSpec | None:
        """``resolver ADDRESS[:PORT] ... [valid=TIME] [ipv6=on|off]`` (ngx_resolver_create):
        names among the addresses are resolved once, here, as nginx does at start."""
        d = _one(levels, "resolver")
        timeout = self.duration(_one(levels, "resolver_timeout"), 30.0)
        if d is None:
            return None
        addresses: list[tuple[str, int]] = []
        valid: float | None = None
        ipv6 = True
        for arg in d.args:
            if arg.startswith("valid="):
                try:
                    valid = parse_duration(arg[6:])
                except ValueError:
                    raise self.fail(d, f'invalid parameter "{arg}"') from None
            elif arg in ("ipv6=on", "ipv6=off"):
                ipv6 = arg == "ipv6=on"
            elif arg.startswith(("ipv4=", "status_zone=")):
                raise self.fail(d, f'resolver parameter "{arg}" is outside the nonstop subset')
            else:
                try:
                    host, port, _ = _split_address(arg, 53, "resolver")
                    hosts = _addresses(host, port, self.resolver, "resolver", arg)
                except ValueError as exc:
                    raise self.fail(d, str(exc)) from exc
                addresses.extend((h, port) for h in hosts)
        if not addresses:
            raise self.fail(d, 'invalid number of arguments in "resolver" directive')
        return ResolverSpec(tuple(addresses), valid, ipv6, timeout)

    def ssl_protocols(self, d: Directive | None) -> tuple[str, ...] | None:
        if d is None:
            return None
        for proto in d.args:
            if proto not in SSL_PROTOCOLS:
                raise self.fail(d, f'invalid value "{proto}" in "{d.name}" directive')
        return d.args

    def proxy_ssl(self, levels: list[_Level], proxy: ProxyPass | None) -> ProxySsl:
        """proxy_ssl_*; what an ``https://`` pass needs is checked as nginx checks it
        when it sets up the pass's TLS (ngx_http_proxy_set_ssl)."""
        cert = _one(levels, "proxy_ssl_certificate")
        key = _one(levels, "proxy_ssl_certificate_key")
        trusted = _one(levels, "proxy_ssl_trusted_certificate")
        verify_d = _one(levels, "proxy_ssl_verify")
        name = _one(levels, "proxy_ssl_name")
        ciphers = _one(levels, "proxy_ssl_ciphers")
        spec = ProxySsl(
            verify=self.flag(verify_d, False),
            trusted_certificate=self.conf_path(trusted.args[0]) if trusted else None,
            verify_depth=self.number(_one(levels, "proxy_ssl_verify_depth"), 1),
            server_name=self.flag(_one(levels, "proxy_ssl_server_name"), False),
            name=self.template(name, name.args[0]) if name else None,
            protocols=self.ssl_protocols(_one(levels, "proxy_ssl_protocols"))
            or ProxySsl().protocols,
            ciphers=ciphers.args[0] if ciphers else "DEFAULT",
            certificate=self.conf_path(cert.args[0]) if cert else None,
            certificate_key=self.conf_path(key.args[0]) if key else None,
            session_reuse=self.flag(_one(levels, "proxy_ssl_session_reuse"), True),
        )
        if proxy is None or proxy.scheme != "https":
            return spec
        if cert is not None and key is None:
            message = f'no "proxy_ssl_certificate_key" is defined for certificate "{cert.args[0]}"'
            raise self.fail(cert, message)
        if verify_d is not None and spec.verify and trusted is None:
            raise self.fail(verify_d, "no proxy_ssl_trusted_certificate for proxy_ssl_verify")
        return spec


def load_nginx(
    path: str, prefix: str, resolver: Resolver = system_resolver, *, passthrough: bool = False
) -> Config:
    """Read ``path`` (absolute) as nginx.conf; relative log paths resolve against ``prefix``.

    ``passthrough`` (the nginx engine serves): every directive nonstop does not model is
    kept at its place for the nginx renderer, for ``nginx -t`` to judge, instead of refused.
    """
    return _Builder(path, prefix, resolver, passthrough).build()
