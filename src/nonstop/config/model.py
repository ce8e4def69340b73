"""The one frozen configuration model that both input formats load into.

Config flows one way: file -> parse (TOML or nginx.conf) -> validate -> this model ->
runtime objects built from it.  Every value here is already resolved: inheritance from
``http`` to ``server`` to ``location`` is applied by the loader, durations are seconds,
sizes are bytes.  Nothing in this module reads files or the environment.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypeAlias

from nonstop.config.accounts import Account

__all__ = [
    "CHARSET_TYPES",
    "DEFAULT_NEXT_UPSTREAM",
    "DEFAULT_TYPES",
    "LOG_FORMATS",
    "NO_LIMITS",
    "AccessLog",
    "AccessRule",
    "AddHeader",
    "AdminSpec",
    "AppSpec",
    "AuthBasic",
    "BreakSpec",
    "Condition",
    "Config",
    "ErrorPage",
    "FilesSpec",
    "GzipSpec",
    "HeaderRewrite",
    "HealthSpec",
    "IfSpec",
    "LimitReq",
    "LimitZone",
    "Limits",
    "Listen",
    "LocationSpec",
    "LogFormat",
    "MapSpec",
    "NginxSpec",
    "ProxyBuffering",
    "ProxyPass",
    "ProxySsl",
    "RawDirective",
    "Regex",
    "ResolverSpec",
    "ReturnSpec",
    "RewriteSpec",
    "ServerBlock",
    "ServerSpec",
    "SetHeader",
    "SetSpec",
    "Source",
    "Step",
    "Template",
    "TlsSpec",
    "UpstreamSpec",
]


@dataclass(frozen=True, slots=True)
class Source:
    """Where a value came from: a file and line (nginx.conf) or a key path (TOML)."""

    file: str
    line: int = 0
    key: str = ""

    def __str__(self) -> str:
        if self.key:
            return f"{self.file}: {self.key}"
        return f"{self.file}:{self.line}"


@dataclass(frozen=True, slots=True)
class Template:
    """A string with nginx ``$variables``, compiled once.

    ``parts`` alternates literal text and variable names: each item is either
    ``("lit", "text")`` or ``("var", "name")`` where name has no ``$`` (``http_host``,
    ``remote_addr``, ``arg_k``, ...).  ``raw`` is the text as written.
    """

    raw: str
    parts: tuple[tuple[str, str], ...]

    @property
    def is_constant(self) -> bool:
        return all(kind == "lit" for kind, _ in self.parts)

    @property
    def variables(self) -> tuple[str, ...]:
        return tuple(value for kind, value in self.parts if kind == "var")


@dataclass(frozen=True, slots=True)
class RawDirective:
    """A directive nonstop does not model, kept for the nginx engine to render as written
    (an nginx.conf input loaded for ``engine nginx``; the embedded engine refuses these)."""

    name: str
    args: tuple[str, ...]
    block: tuple[RawDirective, ...] | None = None
    source: Source | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class HealthSpec:
    """An active health check (nonstop's own; nginx OSS has none)."""

    path: str = "/"
    interval: float = 2.0
    timeout: float = 2.0
    expect_status: int = 200
    expect_body: str | None = None  # compared exactly, not as a substring
    rise: int = 1
    fall: int = 1
    start_timeout: float = 60.0  # apps only: how long a new instance may take to pass


@dataclass(frozen=True, slots=True)
class ServerSpec:
    """One ``server`` line of an ``upstream`` block (nginx-semantics.md 3.1)."""

    address: str  # as written: "127.0.0.1:8080", "[::1]:80", "unix:/path"
    host: str  # "127.0.0.1", "::1", or the socket path for unix:
    port: int  # 0 for unix sockets
    weight: int = 1
    max_fails: int = 1
    fail_timeout: float = 10.0
    backup: bool = False
    down: bool = False
    max_conns: int = 0
    source: Source | None = field(default=None, compare=False)

    @property
    def is_unix(self) -> bool:
        return self.address.startswith("unix:")


@dataclass(frozen=True, slots=True)
class UpstreamSpec:
    """An ``upstream`` block / ``[upstreams.NAME]`` table."""

    name: str
    servers: tuple[ServerSpec, ...]
    method: str = "round_robin"  # round_robin | least_conn | ip_hash | hash | random
    hash_key: Template | None = None  # method == "hash"
    hash_consistent: bool = False
    random_two: bool = False
    random_least_conn: bool = False  # "random two least_conn"; the only choice nginx has
    keepalive: int = 0  # idle connections cached per worker; 0 = none (nginx default)
    keepalive_requests: int = 1000
    keepalive_timeout: float = 60.0
    health: HealthSpec | None = None
    implicit: bool = False  # made from a proxy_pass URL, not declared
    app: bool = False  # the pool of [apps.NAME]: servers are filled at run time by the deployer
    raw: tuple[RawDirective, ...] = ()  # kept for the nginx engine, in order
    source: Source | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class ProxyPass:
    """``proxy_pass URL``.

    When ``url`` is constant the loader fills ``upstream`` (the name of a declared or an
    implicit upstream) and ``uri`` (the part after host, or None when absent: the request
    URI is passed unchanged).  When ``url`` has variables both are None and the proxy
    evaluates it per request, then matches the host against upstream names, as nginx
    does.
    """

    url: Template
    scheme: str = "http"
    upstream: str | None = None
    uri: str | None = None
    proxy_host: str = ""  # $proxy_host: "name" or "host:port" (port omitted if 80)


@dataclass(frozen=True, slots=True)
class ReturnSpec:
    """``return CODE [URL|TEXT]`` / ``return URL`` (302)."""

    code: int
    text: Template | None = None  # URL for 301/302/303/307/308, body text otherwise


@dataclass(frozen=True, slots=True)
class Regex:
    """A regular expression as written in nginx.conf (PCRE syntax) and its case rule."""

    pattern: str
    caseless: bool = False


@dataclass(frozen=True, slots=True)
class SetSpec:
    """``set $NAME VALUE``."""

    name: str
    value: Template


@dataclass(frozen=True, slots=True)
class RewriteSpec:
    """``rewrite REGEX REPLACEMENT [last|break|redirect|permanent]``."""

    regex: Regex
    replacement: Template
    flag: str = ""  # "", "last", "break", "redirect", "permanent"


@dataclass(frozen=True, slots=True)
class BreakSpec:
    """``break``: the rest of the rewrite directives at this level are skipped."""


@dataclass(frozen=True, slots=True)
class Condition:
    """The condition of an ``if`` (ngx_http_rewrite_if_condition).

    ``op`` is "" (the value is true unless empty or "0"), "=", "!=", "~", "~*", "!~",
    "!~*", or a file test "-f", "!-f", "-d", "!-d", "-e", "!-e", "-x", "!-x".
    """

    op: str
    subject: Template  # the variable, or the path of a file test
    operand: Template | None = None  # "=" and "!="
    regex: Regex | None = None  # "~" and its kin


@dataclass(frozen=True, slots=True)
class IfSpec:
    """``if (CONDITION) { ... }``: its rewrite directives run inline when true and, in a
    location, its configuration (the location's, with the block's own directives merged)
    takes the request from then on, as in ngx_http_script_if_code."""

    condition: Condition
    steps: tuple[Step, ...]
    location: LocationSpec | None = None  # None inside a server-level "if"
    raw: tuple[RawDirective, ...] = ()  # kept for the nginx engine, in order
    source: Source | None = field(default=None, compare=False)


Step: TypeAlias = SetSpec | RewriteSpec | ReturnSpec | BreakSpec | IfSpec
"""One directive of the rewrite module, in the order a level runs them."""


@dataclass(frozen=True, slots=True)
class SetHeader:
    """``proxy_set_header NAME VALUE``; a value evaluating to "" removes the header."""

    name: str  # as written (case kept for the wire)
    value: Template


@dataclass(frozen=True, slots=True)
class AddHeader:
    """``add_header NAME VALUE [always]``: on the response to the client."""

    name: str
    value: Template
    always: bool = False


LOG_FORMATS = ("combined", "json")


@dataclass(frozen=True, slots=True)
class ErrorPage:
    """``error_page CODE ... [=[RESPONSE]] URI|@NAME|URL``."""

    codes: tuple[int, ...]
    target: Template
    overwrite: int = -1  # -1: answer with the original code; 0 ("="): the target's


DEFAULT_TYPES: tuple[tuple[str, str], ...] = (
    ("html", "text/html"),
    ("gif", "image/gif"),
    ("jpg", "image/jpeg"),
)
"""nginx's types when a configuration names none (ngx_http_core_module.c)."""


@dataclass(frozen=True, slots=True)
class FilesSpec:
    """How a location serves files: ``root``/``alias``, ``index``, ``try_files``,
    ``expires``, ``etag``, ``types`` and ``default_type``, inheritance resolved."""

    root: str  # absolute; nginx's default is PREFIX/html
    alias: str | None = None  # absolute; replaces the location's prefix of $uri
    index: tuple[str, ...] = ("index.html",)
    try_files: tuple[Template, ...] = ()  # the last one is the fallback: =CODE, @NAME or a URI
    expires: str = "off"  # "off", "epoch", "max" or "time" (expires_time seconds)
    expires_time: float = 0.0
    etag: bool = True
    types: tuple[tuple[str, str], ...] = DEFAULT_TYPES  # extension (lowercase) -> MIME type
    default_type: str = "text/plain"


@dataclass(frozen=True, slots=True)
class AccessRule:
    """``allow ADDRESS|CIDR|all;`` or ``deny ...;`` (ngx_http_access_module.c)."""

    allow: bool
    network: str  # "all", "unix:", or a CIDR as ipaddress writes it ("10.0.0.0/8")


@dataclass(frozen=True, slots=True)
class AuthBasic:
    """``auth_basic REALM`` with the users its ``auth_basic_user_file`` held when the
    configuration was read (ngx_http_auth_basic_module.c); ``realm`` None is ``off``."""

    realm: str | None
    user_file: str = ""  # absolute, as the nginx engine names it to nginx
    users: tuple[tuple[str, str], ...] = field(default=(), repr=False)  # (name, hash) in order


@dataclass(frozen=True, slots=True)
class LimitZone:
    """``limit_req_zone KEY zone=NAME:SIZE rate=R`` (rate 0) or ``limit_conn_zone KEY
    zone=NAME:SIZE``; ``rate`` is in requests per 1000 seconds, nginx's unit."""

    name: str
    key: Template
    size: int
    rate: int = 0  # 0: a limit_conn zone
    sync: bool = False  # written, and without effect (docs/nginx-compatibility.md)
    source: Source | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class LimitReq:
    """``limit_req zone=NAME [burst=N] [nodelay|delay=N]``: burst and delay in
    milli-requests, as nginx keeps them (``nodelay`` is a delay no excess reaches)."""

    zone: str
    burst: int = 0
    delay: int = 0


@dataclass(frozen=True, slots=True)
class Limits:
    """A level's satisfy, auth_basic, limit_req and limit_conn, inheritance resolved."""

    satisfy_any: bool = False
    auth: AuthBasic | None = None
    reqs: tuple[LimitReq, ...] = ()
    req_status: int = 503
    req_log_level: str = "error"
    req_dry_run: bool = False
    conns: tuple[tuple[str, int], ...] = ()  # (zone, connections)
    conn_status: int = 503
    conn_log_level: str = "error"
    conn_dry_run: bool = False


NO_LIMITS = Limits()


@dataclass(frozen=True, slots=True)
class LogFormat:
    """``log_format NAME [escape=default|json|none] STRING...`` (ngx_http_log_module.c):
    the strings joined, variables escaped as ``escape`` says."""

    name: str
    template: Template
    escape: str = "default"  # "default", "json" or "none"


@dataclass(frozen=True, slots=True)
class AccessLog:
    """One ``access_log PATH [FORMAT [buffer=SIZE] [gzip[=LEVEL]] [flush=TIME] [if=COND]]``.

    A level's logs are a tuple of these; ``access_log off`` is the empty tuple.  ``buffer``
    0 writes the lines every tick of the server (a quarter second); otherwise when the
    next line does not fit, ``flush`` seconds after the oldest pending one (0: no time
    limit), on reload and on stop.  ``gzip`` (1-9, 0: none) writes each buffer as one
    gzip member, so ``zcat`` reads the file at any time.
    """

    path: str
    format: LogFormat
    buffer: int = 0
    flush: float = 0.0
    gzip: int = 0
    condition: Template | None = None  # if=: the line is skipped when "" or "0"


@dataclass(frozen=True, slots=True)
class GzipSpec:
    """``gzip on`` and its family (ngx_http_gzip_filter_module.c, and gzip_proxied,
    gzip_disable, gzip_http_version of ngx_http_core_module.c), inheritance resolved."""

    types: frozenset[str] = frozenset({"text/html"})  # lowercased; "*" is any type
    comp_level: int = 1
    min_length: int = 20
    proxied: frozenset[str] = frozenset({"off"})  # off expired no-cache no-store private ...
    vary: bool = False
    disable: tuple[Regex, ...] = ()  # gzip_disable regexes on User-Agent
    disable_msie6: bool = False  # gzip_disable msie6
    http_version: str = "1.1"  # the lowest client version compressed for


@dataclass(frozen=True, slots=True)
class HeaderRewrite:
    """One ``proxy_redirect``, ``proxy_cookie_path`` or ``proxy_cookie_domain`` rule:
    a text ``pattern`` (with variables) or a ``regex``, and the ``replacement``."""

    replacement: Template
    pattern: Template | None = None
    regex: Regex | None = None


DEFAULT_NEXT_UPSTREAM: frozenset[str] = frozenset({"error", "timeout"})

# charset_types' default (ngx_http_charset_filter_module.c)
CHARSET_TYPES: tuple[str, ...] = (
    "text/html",
    "text/xml",
    "text/plain",
    "text/vnd.wap.wml",
    "application/javascript",
    "application/rss+xml",
)


@dataclass(frozen=True, slots=True)
class ProxyBuffering:
    """``proxy_buffering`` and its sizes (ngx_http_proxy_module.c; defaults for a 4 KiB page).

    On, the response is read ahead of a slow client: in memory up to ``buffer_size`` +
    ``buffers`` x ``buffer``, then in a temporary file up to ``max_temp_file_size`` (0: no
    file), so that the upstream connection is free once the response is read.
    """

    enabled: bool = True
    buffer_size: int = 4096  # proxy_buffer_size
    buffers: int = 8  # proxy_buffers NUMBER SIZE
    buffer: int = 4096
    busy_buffers_size: int = 8192
    max_temp_file_size: int = 1024 * 1024 * 1024
    temp_file_write_size: int = 8192
    accel_buffering: bool = True  # X-Accel-Buffering is honoured (not in proxy_ignore_headers)

    @property
    def memory(self) -> int:
        """Bytes read ahead in memory before a temporary file is used."""
        return self.buffer_size + self.buffers * self.buffer


@dataclass(frozen=True, slots=True)
class ResolverSpec:
    """``resolver ADDRESS ... [valid=TIME] [ipv6=on|off]`` and ``resolver_timeout``: the
    DNS servers that resolve a proxy_pass host given by variables, per request."""

    addresses: tuple[tuple[str, int], ...]  # (IP, port)
    valid: float | None = None  # None: the answers' TTL
    ipv6: bool = True
    timeout: float = 30.0


@dataclass(frozen=True, slots=True)
class ProxySsl:
    """``proxy_ssl_*``: how an ``https://`` upstream is spoken to (nginx's defaults: no
    verification, no SNI, TLSv1.2 and TLSv1.3, sessions reused)."""

    verify: bool = False
    trusted_certificate: str | None = None
    verify_depth: int = 1
    server_name: bool = False  # send SNI
    name: Template | None = None  # the name verified and sent; default: proxy_pass's host
    protocols: tuple[str, ...] = ("TLSv1.2", "TLSv1.3")
    ciphers: str = "DEFAULT"
    certificate: str | None = None
    certificate_key: str | None = None
    session_reuse: bool = True


@dataclass(frozen=True, slots=True)
class LocationSpec:
    """A ``location`` with every inherited directive already resolved."""

    path: str  # the prefix, the exact path, the regex or the "@name"
    exact: bool = False  # "location = /path"
    modifier: str = ""  # "", "=", "^~", "~", "~*", or "@" for a named location
    proxy_pass: ProxyPass | None = None
    ret: ReturnSpec | None = None
    sets: tuple[tuple[str, Template], ...] = ()  # "set $var value", in order
    # proxy_set_header list as nginx would send it (inherited only if the location has none),
    # *not* including nginx's implicit defaults (Host $proxy_host, Connection close).
    set_headers: tuple[SetHeader, ...] = ()
    add_headers: tuple[AddHeader, ...] = ()
    next_upstream: frozenset[str] = DEFAULT_NEXT_UPSTREAM
    next_upstream_tries: int = 0  # 0 = bounded by the number of peers
    next_upstream_timeout: float = 0.0  # 0 = unlimited
    connect_timeout: float = 60.0
    read_timeout: float = 60.0
    send_timeout: float = 60.0
    http_version: str = "1.1"
    client_max_body_size: int = 1024 * 1024  # 0 = unlimited
    # proxy_request_buffering: read the whole body before choosing an upstream, in
    # memory up to client_body_buffer_size (nginx's 64-bit default), then in a file
    request_buffering: bool = True
    client_body_buffer_size: int = 16 * 1024
    access_log: tuple[AccessLog, ...] | None = None  # None: none named; (): "off"
    # the rewrite directives (set, rewrite, return, if, break) in order; empty when the
    # location has only "set" and "return", which ``sets`` and ``ret`` then hold
    steps: tuple[Step, ...] = ()
    error_pages: tuple[ErrorPage, ...] = ()  # inherited only by a level with none
    intercept_errors: bool = False  # proxy_intercept_errors
    files: FilesSpec | None = None  # a location that serves files (no proxy_pass, no return)
    access: tuple[AccessRule, ...] = ()  # allow/deny in order, inherited as one list
    limits: Limits = NO_LIMITS  # satisfy, auth_basic, limit_req, limit_conn
    hide_headers: tuple[str, ...] = ()  # proxy_hide_header, lowercased, inherited as a list
    internal: bool = False  # only internal redirects reach it
    stub_status: bool = False  # answers with the connection and request counts
    buffering: ProxyBuffering = ProxyBuffering()  # proxy_buffering and its sizes
    proxy_ssl: ProxySsl = ProxySsl()  # proxy_ssl_* for an https:// pass
    resolver: ResolverSpec | None = None  # resolves a proxy_pass host given by variables
    # types and default_type, for the body of "return CODE text" (by $uri's extension)
    text_types: tuple[tuple[tuple[str, str], ...], str] = (DEFAULT_TYPES, "text/plain")
    gzip: GzipSpec | None = None  # None: gzip off
    # proxy_redirect rules, "default" already made the literal rule nginx derives from
    # proxy_pass; () for "off" (or a proxy_pass with variables and no rule)
    redirects: tuple[HeaderRewrite, ...] = ()
    cookie_paths: tuple[HeaderRewrite, ...] = ()  # proxy_cookie_path
    cookie_domains: tuple[HeaderRewrite, ...] = ()  # proxy_cookie_domain
    pass_headers: tuple[str, ...] = ()  # proxy_pass_header, lowercased
    charset: str | None = None  # "; charset=NAME" added to Content-Type; None: off
    charset_types: tuple[str, ...] = CHARSET_TYPES
    keepalive_timeout: float | None = None  # after a request that ended here; None: the server's
    raw: tuple[RawDirective, ...] = ()  # kept for the nginx engine, in order
    source: Source | None = field(default=None, compare=False)

    @property
    def is_regex(self) -> bool:
        return self.modifier in ("~", "~*")

    @property
    def is_named(self) -> bool:
        return self.modifier == "@"


@dataclass(frozen=True, slots=True)
class Listen:
    host: str  # "0.0.0.0", "127.0.0.1", "::", "::1"
    port: int
    ssl: bool = False
    default_server: bool = False

    @property
    def key(self) -> tuple[str, int]:
        return (self.host, self.port)


@dataclass(frozen=True, slots=True)
class TlsSpec:
    certificate: str
    certificate_key: str
    protocols: tuple[str, ...] = ("TLSv1.2", "TLSv1.3")
    ciphers: str | None = None
    prefer_server_ciphers: bool = False
    session_cache: str | None = None
    session_timeout: float = 300.0
    dhparam: str | None = None  # ssl_dhparam: a PEM file of DH parameters for DHE ciphers
    session_tickets: bool = True  # ssl_session_tickets
    ecdh_curve: str = "auto"  # ssl_ecdh_curve as written ("auto", a curve, or a list)


@dataclass(frozen=True, slots=True)
class ServerBlock:
    """An nginx ``server`` block / ``[[servers]]`` table, inheritance resolved."""

    listens: tuple[Listen, ...]
    server_names: tuple[str, ...] = ()
    locations: tuple[LocationSpec, ...] = ()
    ret: ReturnSpec | None = None  # a server-level "return" answers before locations
    tls: TlsSpec | None = None
    add_headers: tuple[AddHeader, ...] = ()
    client_max_body_size: int = 1024 * 1024
    keepalive_timeout: float = 75.0  # client side, nginx default
    keepalive_requests: int = 1000
    client_header_timeout: float = 60.0
    client_body_timeout: float = 60.0
    send_timeout: float = 60.0
    access_log: tuple[AccessLog, ...] | None = None
    sets: tuple[tuple[str, Template], ...] = ()  # server-level "set"
    steps: tuple[Step, ...] = ()  # as LocationSpec.steps, for the server level
    error_pages: tuple[ErrorPage, ...] = ()
    files: FilesSpec | None = None  # what answers a request no location takes
    access: tuple[AccessRule, ...] = ()
    text_types: tuple[tuple[tuple[str, str], ...], str] = (DEFAULT_TYPES, "text/plain")
    limits: Limits = NO_LIMITS
    gzip: GzipSpec | None = None
    charset: str | None = None
    charset_types: tuple[str, ...] = CHARSET_TYPES
    raw: tuple[RawDirective, ...] = ()  # kept for the nginx engine, in order
    source: Source | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class MapSpec:
    """``map $source $target { key value; ... default value; }``: exact-string keys
    (lowercased: nginx maps ignore case), then ``~regex`` / ``~*regex`` keys in order."""

    source: str  # variable name without "$"
    target: str
    entries: tuple[tuple[str, Template], ...]
    default: Template
    regexes: tuple[tuple[Regex, Template], ...] = ()
    origin: Source | None = field(default=None, compare=False)  # where the map block is


@dataclass(frozen=True, slots=True)
class AdminSpec:
    socket: str = ".nonstop/admin.sock"
    # the HTTP admin listener: "HOST:PORT" or "unix:/PATH"; None: only the admin socket
    listen: str | None = None
    token: str | None = field(default=None, repr=False)  # its bearer token (a secret)


@dataclass(frozen=True, slots=True)
class NginxSpec:
    """How the nginx engine reaches nginx (``[nginx]``).

    ``pid`` names the pid file of an nginx the system already runs (systemd's, say);
    nonstop then drives that master instead of starting its own.  None: nonstop runs
    nginx as its supervised child under the state directory.
    """

    pid: str | None = None


@dataclass(frozen=True, slots=True)
class AppSpec:
    """A supervised app (``[apps.NAME]``); also an upstream of the same name."""

    name: str
    command: str
    ports: tuple[int, ...]
    host: str = "127.0.0.1"
    env: tuple[tuple[str, str], ...] = ()
    cwd: str | None = None
    shell: bool = False
    health: HealthSpec = HealthSpec()
    stop_signal: str = "SIGTERM"
    stop_timeout: float = 30.0
    drain_timeout: float = 30.0
    verify: float = 10.0
    verify_max_5xx_ratio: float = 0.05
    user: str | None = None  # run as this user (nonstop must be root), None: as nonstop
    group: str | None = None  # and this group, None: the user's primary group
    source: Source | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class Config:
    """Everything nonstop runs from. Built by ``nonstop.config.load``."""

    path: str  # the config file as given
    prefix: str  # -p PREFIX, or the config file's directory
    servers: tuple[ServerBlock, ...]
    upstreams: tuple[UpstreamSpec, ...] = ()
    maps: tuple[MapSpec, ...] = ()
    zones: tuple[LimitZone, ...] = ()  # limit_req_zone and limit_conn_zone, in order
    apps: tuple[AppSpec, ...] = ()
    state_dir: str = ".nonstop"
    engine: str = "embedded"  # or "nginx"
    admin: AdminSpec = AdminSpec()
    nginx: NginxSpec = NginxSpec()
    error_log: str | None = None  # path; None = stderr
    error_log_level: str = "error"
    # open client connections at most; past it a new one is answered 503 and closed
    # (nginx.conf: worker_connections; TOML: max_connections)
    max_connections: int = 10_000
    # data-plane processes (nginx.conf: worker_processes N|auto; TOML: workers); 1 serves in
    # the control process itself (docs/architecture.md, "Workers")
    workers: int = 1
    # RLIMIT_NOFILE of nonstop's processes (nginx.conf: worker_rlimit_nofile; TOML:
    # max_open_files); None: the soft limit is raised to the hard one
    max_open_files: int | None = None
    # which CPUs each worker runs on (nginx.conf: worker_cpu_affinity; TOML: cpu_affinity),
    # the directive's words as written: () = not bound; units.worker_cpus reads them
    cpu_affinity: tuple[str, ...] = ()
    # the workers' nice value (nginx.conf: worker_priority; TOML: worker_priority)
    worker_priority: int = 0
    # who the workers run as (nginx.conf: user; TOML: worker_user, worker_group), set only
    # when nonstop runs as root: they give up root once they have their sockets, and are
    # separate processes even with master_process off (docs/security.md, "Workers' user")
    worker_user: Account | None = None
    # nginx's master_process: on (the default), the proxy runs in worker processes and the
    # control process only drives them, so its crash or SIGKILL cuts no connection; off,
    # one process does both (nginx's "for development"; TOML: master_process)
    master_process: bool = True
    # the group that may read the state directory (0750), state.db and the logs (0640);
    # None: they are nonstop's own (0700, 0600) (TOML: group; docs/operations.md)
    group: str | None = None
    notices: tuple[str, ...] = ()  # "accepted, no effect" messages, each said once
    # nginx.conf loaded for the nginx engine: what nonstop does not model, rendered as written
    raw_main: tuple[RawDirective, ...] = ()  # main context, whole blocks (stream {}) included
    raw_events: tuple[RawDirective, ...] = ()
    raw_http: tuple[RawDirective, ...] = ()
    files: tuple[str, ...] = ()  # every file read (config and includes)

    @property
    def separate_workers(self) -> bool:
        """Whether the proxy runs in worker processes, not in the control process: unless
        ``master_process off`` (workers with ``user`` all the same: root is not theirs)."""
        return self.master_process or self.worker_user is not None

    @property
    def state_dir_passable(self) -> bool:
        """Whether other users pass through the state directory: nginx's workers run as
        ``user`` and reach their temp paths and slot flags in it (statedir)."""
        return self.engine == "nginx" and self.worker_user is not None

    def upstream(self, name: str) -> UpstreamSpec | None:
        for up in self.upstreams:
            if up.name == name:
                return up
        return None
