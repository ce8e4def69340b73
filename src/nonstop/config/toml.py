"""Reading nonstop's native TOML configuration into the frozen model.

TOML is parsed by the standard library's ``tomllib``; this module only checks shapes and
types and fills the model.  Every error names the key path (``servers[0].locations[1].pass``)
and unknown keys are errors, so a typo never silently falls back to a default.  Addresses,
``listen`` strings and pass URLs use nginx's syntax and the same parsers as nginx.conf.
"""

from __future__ import annotations

import os
import re
import signal
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field

from nonstop.config.accounts import Account, UnknownAccount, group_id, resolve_account
from nonstop.config.listen import AdminSettingError, admin_listener
from nonstop.config.logformats import PREDEFINED
from nonstop.config.model import (
    AccessLog,
    AddHeader,
    AdminSpec,
    AppSpec,
    Config,
    HealthSpec,
    Listen,
    LocationSpec,
    NginxSpec,
    ProxyPass,
    ReturnSpec,
    ServerBlock,
    ServerSpec,
    SetHeader,
    Source,
    Template,
    TlsSpec,
    UpstreamSpec,
)
from nonstop.config.nginxconf import (
    LOG_LEVELS,
    NEXT_UPSTREAM_MASKS,
    REDIRECT_CODES,
    SSL_PROTOCOLS,
    Balancing,
    Resolver,
    make_servers,
    parse_listen,
    proxy_pass_spec,
    system_resolver,
)
from nonstop.config.template import compile_template
from nonstop.config.units import (
    master_process_off,
    parse_cpu_affinity,
    parse_duration,
    parse_priority,
    parse_size,
    parse_workers,
)
from nonstop.config.vocabulary import BACKUP_METHODS, METHODS
from nonstop.errors import ConfigError

__all__ = ["TOML_KEEPALIVE", "load_toml"]

TOML_KEEPALIVE = 64
"""Idle upstream connections kept per pool in TOML configs (nginx.conf keeps nginx's 0)."""

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_FORWARDED_FOR = {
    "append": "$proxy_add_x_forwarded_for",
    "replace": "$remote_addr",
    "off": None,
}
_BALANCING_KEYS = frozenset({"method", "hash_key", "consistent", "two"})
_POOL_KEYS = frozenset({"keepalive", "keepalive_requests", "keepalive_timeout"})
_HEALTH_KEYS = frozenset(
    {"path", "interval", "timeout", "expect_status", "expect_body", "rise", "fall"}
)
_TOP_KEYS = frozenset(
    {
        "state_dir",
        "engine",
        "admin",
        "nginx",
        "error_log",
        "error_log_level",
        "max_connections",
        "workers",
        "max_open_files",
        "cpu_affinity",
        "worker_priority",
        "worker_user",
        "worker_group",
        "master_process",
        "group",
        "upstreams",
        "apps",
        "servers",
        "fleet",  # read by nonstop.fleet.config, not part of this host's Config
    }
)
_UPSTREAM_KEYS = _BALANCING_KEYS | _POOL_KEYS | {"servers", "health"}
_PEER_KEYS = frozenset(
    {"address", "weight", "max_fails", "fail_timeout", "backup", "down", "max_conns"}
)
_APP_KEYS = (
    _BALANCING_KEYS
    | _POOL_KEYS
    | {
        "command",
        "ports",
        "host",
        "env",
        "cwd",
        "shell",
        "health",
        "stop_signal",
        "stop_timeout",
        "drain_timeout",
        "verify",
        "verify_max_5xx_ratio",
        "user",
        "group",
    }
)
_SERVER_KEYS = frozenset(
    {
        "listen",
        "server_name",
        "redirect",
        "return",
        "tls",
        "headers",
        "client_max_body_size",
        "access_log",
        "access_log_format",
        "keepalive_timeout",
        "keepalive_requests",
        "client_header_timeout",
        "client_body_timeout",
        "send_timeout",
        "locations",
    }
)
_TLS_KEYS = frozenset(
    {
        "certificate",
        "certificate_key",
        "protocols",
        "ciphers",
        "prefer_server_ciphers",
        "session_cache",
        "session_timeout",
    }
)
_LOCATION_KEYS = frozenset(
    {
        "path",
        "exact",
        "pass",
        "forwarded_for",
        "set_headers",
        "headers",
        "next_upstream",
        "next_upstream_tries",
        "next_upstream_timeout",
        "connect_timeout",
        "read_timeout",
        "send_timeout",
        "http_version",
        "client_max_body_size",
        "request_buffering",
        "client_body_buffer_size",
        "access_log",
        "access_log_format",
        "return",
        "redirect",
    }
)
_RETURN_KEYS = frozenset({"code", "text"})
_TYPE_NAMES = {
    str: "a string",
    bool: "a boolean",
    int: "an integer",
    float: "a number",
    dict: "a table",
    list: "an array",
}


def _kind(value: object) -> str:
    for py, name in _TYPE_NAMES.items():
        if type(value) is py:
            return name
    return type(value).__name__


def _key(path: str, key: str) -> str:
    shown = key if _BARE_KEY.fullmatch(key) else '"' + key.replace('"', '\\"') + '"'
    return f"{path}.{shown}" if path else shown


@dataclass
class _Table:
    """One TOML table being read: typed getters that name the key path in every error."""

    data: dict[str, object]
    path: str
    file: str
    allowed: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        for key in self.data:
            if key not in self.allowed:
                raise ConfigError("unknown key", self.where(key))

    def where(self, key: str | None = None) -> str:
        return f"{self.file}: {_key(self.path, key) if key else self.path}"

    def source(self) -> Source:
        return Source(self.file, key=self.path)

    def error(self, key: str | None, message: str) -> ConfigError:
        return ConfigError(message, self.where(key))

    def has(self, key: str) -> bool:
        return key in self.data

    def typed(self, key: str, kinds: tuple[type, ...]) -> object | None:
        value = self.data.get(key)
        if value is None:
            return None
        if type(value) not in kinds:
            names = [_TYPE_NAMES[k] for k in kinds]
            wanted = " or ".join([", ".join(names[:-1]), names[-1]] if len(names) > 2 else names)
            raise self.error(key, f"expected {wanted}, got {_kind(value)}")
        return value

    def string(self, key: str, default: str | None = None) -> str | None:
        value = self.typed(key, (str,))
        return default if value is None else str(value)

    def required(self, key: str) -> str:
        value = self.string(key)
        if value is None:
            raise self.error(key, "required key is missing")
        return value

    def boolean(self, key: str, default: bool) -> bool:
        value = self.typed(key, (bool,))
        return default if value is None else bool(value)

    def integer(self, key: str, default: int, minimum: int = 0) -> int:
        value = self.typed(key, (int,))
        if value is None:
            return default
        assert isinstance(value, int)
        if value < minimum:
            raise self.error(key, f"must be at least {minimum}")
        return value

    def ratio(self, key: str, default: float) -> float:
        value = self.typed(key, (int, float))
        if value is None:
            return default
        assert isinstance(value, int | float)
        if not 0 <= value <= 1:
            raise self.error(key, "must be between 0 and 1")
        return float(value)

    def duration(self, key: str, default: float) -> float:
        value = self.typed(key, (str, int, float))
        if value is None:
            return default
        if isinstance(value, str):
            try:
                return parse_duration(value)
            except ValueError as exc:
                raise self.error(key, str(exc)) from exc
        assert isinstance(value, int | float)
        if value < 0:
            raise self.error(key, "must not be negative")
        return float(value)

    def size(self, key: str, default: int) -> int:
        value = self.typed(key, (str, int))
        if value is None:
            return default
        if isinstance(value, str):
            try:
                return parse_size(value)
            except ValueError as exc:
                raise self.error(key, str(exc)) from exc
        assert isinstance(value, int)
        if value < 0:
            raise self.error(key, "must not be negative")
        return value

    def template(self, key: str, raw: str) -> Template:
        try:
            return compile_template(raw)
        except ValueError as exc:
            raise self.error(key, str(exc)) from exc

    def strings(self, key: str) -> list[str] | None:
        """A list of strings; a single string is accepted as a list of one."""
        value = self.typed(key, (str, list))
        if value is None:
            return None
        items = [value] if isinstance(value, str) else value
        assert isinstance(items, list)
        for i, item in enumerate(items):
            if not isinstance(item, str):
                raise ConfigError(
                    f"expected a string, got {_kind(item)}", f"{self.where(key)}[{i}]"
                )
        return [str(item) for item in items]

    def str_map(self, key: str) -> list[tuple[str, str]]:
        value = self.typed(key, (dict,))
        if value is None:
            return []
        assert isinstance(value, dict)
        out: list[tuple[str, str]] = []
        for name, item in value.items():
            if not isinstance(item, str):
                raise ConfigError(
                    f"expected a string, got {_kind(item)}", self.where(_key(key, name))
                )
            out.append((name, item))
        return out

    def table(self, key: str, allowed: frozenset[str]) -> _Table | None:
        value = self.typed(key, (dict,))
        if value is None:
            return None
        assert isinstance(value, dict)
        return _Table(value, _key(self.path, key), self.file, allowed)

    def entries(self, key: str) -> Iterator[tuple[str, object]]:
        """Items of an array, each with its key path (``servers[2]``)."""
        value = self.typed(key, (list,))
        assert value is None or isinstance(value, list)
        for i, item in enumerate(value or []):
            yield f"{_key(self.path, key)}[{i}]", item

    def tables(self, key: str, allowed: frozenset[str]) -> Iterator[_Table]:
        for path, item in self.entries(key):
            if not isinstance(item, dict):
                raise ConfigError(f"expected a table, got {_kind(item)}", f"{self.file}: {path}")
            yield _Table(item, path, self.file, allowed)

    def named_tables(self, key: str, allowed: frozenset[str]) -> Iterator[tuple[str, _Table]]:
        """``[upstreams.NAME]``-style tables: each value of the table ``key`` is a table."""
        value = self.typed(key, (dict,))
        assert value is None or isinstance(value, dict)
        for name, inner in (value or {}).items():
            path = _key(_key(self.path, key), name)
            if not isinstance(inner, dict):
                raise ConfigError(f"expected a table, got {_kind(inner)}", f"{self.file}: {path}")
            yield name, _Table(inner, path, self.file, allowed)


class _Reader:
    def __init__(self, path: str, prefix: str, resolver: Resolver) -> None:
        self.path = path
        self.prefix = prefix
        self.conf_dir = os.path.dirname(path)
        self.resolver = resolver
        self.upstreams: dict[str, UpstreamSpec] = {}
        self.implicit: dict[str, UpstreamSpec] = {}
        self.notices: list[str] = []

    def prefix_path(self, raw: str) -> str:
        return os.path.normpath(os.path.join(self.prefix, raw))

    def conf_path(self, raw: str) -> str:
        return os.path.normpath(os.path.join(self.conf_dir, raw))

    def read(self, data: dict[str, object]) -> Config:
        top = _Table(data, "", self.path, _TOP_KEYS)
        state_dir = self.prefix_path(top.string("state_dir", ".nonstop") or ".nonstop")
        engine = top.string("engine", "embedded") or "embedded"
        if engine not in ("embedded", "nginx"):
            raise top.error("engine", 'must be "embedded" or "nginx"')
        admin = top.table("admin", frozenset({"socket", "listen", "token", "token_file"}))
        socket_path = admin.string("socket") if admin else None
        admin_listen, admin_token = self.admin_http(admin)
        nginx = top.table("nginx", frozenset({"pid"}))
        nginx_pid = nginx.string("pid") if nginx else None
        error_log = top.string("error_log")
        level = top.string("error_log_level", "error") or "error"
        if level not in LOG_LEVELS:
            raise top.error("error_log_level", f"must be one of {', '.join(LOG_LEVELS)}")
        for name, table in top.named_tables("upstreams", _UPSTREAM_KEYS):
            self.upstreams[name] = self.upstream(name, table)
        apps = [self.app(name, table) for name, table in top.named_tables("apps", _APP_KEYS)]
        servers = [self.server(t) for t in top.tables("servers", _SERVER_KEYS)]
        workers, affinity, user = self.workers(top), self.cpu_affinity(top), self.worker_user(top)
        master = top.boolean("master_process", True)
        if not master:
            self.notices.append(
                master_process_off(
                    nginx_engine=engine == "nginx",
                    user=user is not None,
                    workers=workers,
                    affinity=bool(affinity),
                    where=self.path,
                )
            )
        return Config(
            path=self.path,
            prefix=self.prefix,
            servers=tuple(servers),
            upstreams=(*self.upstreams.values(), *self.implicit.values()),
            apps=tuple(apps),
            state_dir=state_dir,
            engine=engine,
            admin=AdminSpec(
                socket=self.prefix_path(socket_path)
                if socket_path
                else os.path.join(state_dir, "admin.sock"),
                listen=admin_listen,
                token=admin_token,
            ),
            nginx=NginxSpec(pid=self.prefix_path(nginx_pid) if nginx_pid else None),
            error_log=None if error_log in (None, "stderr") else self.prefix_path(str(error_log)),
            error_log_level=level,
            max_connections=top.integer("max_connections", 10_000, minimum=1),
            workers=workers,
            max_open_files=top.integer("max_open_files", 0, minimum=1) or None,
            cpu_affinity=affinity,
            worker_priority=self.worker_priority(top),
            worker_user=user,
            master_process=master,
            group=self.file_group(top),
            notices=tuple(self.notices),
            files=(self.path,),
        )

    @staticmethod
    def workers(top: _Table) -> int:
        """``workers = N`` or ``"auto"`` (one per usable core)."""
        value = top.typed("workers", (int, str))
        if value is None:
            return 1
        try:
            return parse_workers(str(value))
        except ValueError:
            message = 'must be a number of processes (1 or more) or "auto"'
            raise top.error("workers", message) from None

    def worker_user(self, top: _Table) -> Account | None:
        """``worker_user = "www-data"`` (and ``worker_group``, by default the user's
        primary group): nginx.conf's ``user``, in effect when nonstop runs as root."""
        user, group = top.string("worker_user"), top.string("worker_group")
        if user is None:
            if group is not None:
                raise top.error("worker_group", "needs worker_user: whose group it is")
            return None
        if os.geteuid() != 0:
            self.notices.append(
                f"worker_user makes sense only when nonstop runs as root, ignored ({self.path})"
            )
            return None
        try:
            return resolve_account(user, group)
        except UnknownAccount as exc:
            raise top.error(f"worker_{exc.kind}", str(exc)) from None

    @staticmethod
    def cpu_affinity(top: _Table) -> tuple[str, ...]:
        """``cpu_affinity = "auto"``, ``"auto 0101"`` or ``["01", "10"]`` (one mask per
        worker): nginx's worker_cpu_affinity, as words."""
        words = top.strings("cpu_affinity")
        if words is None:
            return ()
        if len(words) == 1:
            words = words[0].split()
        try:
            return parse_cpu_affinity(words)
        except ValueError as exc:
            raise top.error("cpu_affinity", str(exc)) from None

    @staticmethod
    def worker_priority(top: _Table) -> int:
        """``worker_priority = N``: the workers' nice value, -20 to 20."""
        value = top.typed("worker_priority", (int,))
        if value is None:
            return 0
        try:
            return parse_priority(str(value))
        except ValueError as exc:
            raise top.error("worker_priority", str(exc)) from None

    @staticmethod
    def file_group(top: _Table) -> str | None:
        """``group``: the group that may read the state directory, database and logs."""
        group = top.string("group")
        if group is not None:
            try:
                group_id(group)
            except ValueError as exc:
                raise top.error("group", str(exc)) from None
        return group

    def admin_http(self, admin: _Table | None) -> tuple[str | None, str | None]:
        """``[admin] listen`` and its token; a public address needs a token."""
        if admin is None:
            return None, None
        try:
            return admin_listener(
                admin.string("listen"),
                admin.string("token"),
                admin.string("token_file"),
                self.conf_path,
                self.prefix_path,
            )
        except AdminSettingError as exc:
            raise admin.error(exc.key, str(exc)) from None

    # -- upstreams and apps -------------------------------------------------

    def balancing(self, t: _Table) -> Balancing:
        method = t.string("method", "round_robin") or "round_robin"
        if method not in METHODS:
            raise t.error("method", f"must be one of {', '.join(METHODS)}")
        key = t.string("hash_key")
        if (key is not None) != (method == "hash"):
            which = "method" if key is not None else "hash_key"
            raise t.error(which, 'method = "hash" and hash_key go together')
        if t.has("consistent") and method != "hash":
            raise t.error("consistent", 'only with method = "hash"')
        if t.has("two") and method != "random":
            raise t.error("two", 'only with method = "random"')
        two = t.boolean("two", False)
        return Balancing(
            method=method,
            hash_key=t.template("hash_key", key) if key is not None else None,
            hash_consistent=t.boolean("consistent", False),
            random_two=two,
            random_least_conn=two,
        )

    def health(self, t: _Table | None, default: HealthSpec) -> HealthSpec | None:
        if t is None:
            return None
        path = t.string("path", default.path) or default.path
        if not path.startswith("/"):
            raise t.error("path", 'must start with "/"')
        return HealthSpec(
            path=path,
            interval=t.duration("interval", default.interval),
            timeout=t.duration("timeout", default.timeout),
            expect_status=t.integer("expect_status", default.expect_status, minimum=100),
            expect_body=t.string("expect_body", default.expect_body),
            rise=t.integer("rise", default.rise, minimum=1),
            fall=t.integer("fall", default.fall, minimum=1),
            start_timeout=t.duration("start_timeout", default.start_timeout),
        )

    def upstream(self, name: str, t: _Table) -> UpstreamSpec:
        balancing = self.balancing(t)
        peers: list[ServerSpec] = []
        for path, item in t.entries("servers"):
            peers.extend(self.peer(path, item))
        if not peers:
            raise t.error("servers", f'no servers are inside upstream "{name}"')
        for peer in peers:
            if peer.backup and balancing.method not in BACKUP_METHODS:
                raise ConfigError(
                    'balancing method does not support parameter "backup"', str(peer.source)
                )
        return self.pool(
            name,
            t,
            balancing,
            tuple(peers),
            health=self.health(t.table("health", _HEALTH_KEYS), HealthSpec()),
        )

    def pool(
        self,
        name: str,
        t: _Table,
        balancing: Balancing,
        peers: tuple[ServerSpec, ...],
        health: HealthSpec | None,
        app: bool = False,
    ) -> UpstreamSpec:
        return UpstreamSpec(
            name=name,
            servers=peers,
            method=balancing.method,
            hash_key=balancing.hash_key,
            hash_consistent=balancing.hash_consistent,
            random_two=balancing.random_two,
            random_least_conn=balancing.random_least_conn,
            keepalive=t.integer("keepalive", TOML_KEEPALIVE),
            keepalive_requests=t.integer("keepalive_requests", 1000),
            keepalive_timeout=t.duration("keepalive_timeout", 60.0),
            health=health,
            app=app,
            source=t.source(),
        )

    def peer(self, path: str, item: object) -> list[ServerSpec]:
        if isinstance(item, str):
            item = {"address": item}
        if not isinstance(item, dict):
            raise ConfigError(
                f"expected a string or a table, got {_kind(item)}", f"{self.path}: {path}"
            )
        t = _Table(item, path, self.path, _PEER_KEYS)
        address = t.required("address")
        params = ServerSpec(
            address=address,
            host="",
            port=0,
            weight=t.integer("weight", 1, minimum=1),
            max_fails=t.integer("max_fails", 1),
            fail_timeout=t.duration("fail_timeout", 10.0),
            backup=t.boolean("backup", False),
            down=t.boolean("down", False),
            max_conns=t.integer("max_conns", 0),
            source=t.source(),
        )
        try:
            return make_servers(address, self.resolver, params, default_port=None)
        except ValueError as exc:
            raise t.error("address", str(exc)) from exc

    def app(self, name: str, t: _Table) -> AppSpec:
        if name in self.upstreams:
            raise ConfigError(f'duplicate upstream "{name}"', t.where())
        ports = self.ports(t)
        host = t.string("host", "127.0.0.1") or "127.0.0.1"
        health = self.health(t.table("health", _HEALTH_KEYS | {"start_timeout"}), HealthSpec())
        self.upstreams[name] = self.pool(name, t, self.balancing(t), (), health=None, app=True)
        cwd = t.string("cwd")
        user, group = t.string("user"), t.string("group")
        try:
            resolve_account(user, group)
        except UnknownAccount as exc:
            raise t.error(exc.kind, str(exc)) from None
        return AppSpec(
            name=name,
            command=t.required("command"),
            ports=ports,
            host="127.0.0.1" if host == "localhost" else host,
            env=tuple(t.str_map("env")),
            cwd=self.prefix_path(cwd) if cwd else None,
            shell=t.boolean("shell", False),
            health=health or HealthSpec(),
            stop_signal=self.signal(t),
            stop_timeout=t.duration("stop_timeout", 30.0),
            drain_timeout=t.duration("drain_timeout", 30.0),
            verify=t.duration("verify", 10.0),
            verify_max_5xx_ratio=t.ratio("verify_max_5xx_ratio", 0.05),
            user=user,
            group=group,
            source=t.source(),
        )

    def ports(self, t: _Table) -> tuple[int, ...]:
        ports: list[int] = []
        for path, item in t.entries("ports"):
            if type(item) is not int or not 1 <= item <= 65535:
                raise ConfigError("expected a port number 1-65535", f"{self.path}: {path}")
            if item in ports:
                raise ConfigError(f"port {item} is listed twice", f"{self.path}: {path}")
            ports.append(item)
        if not ports or len(ports) % 2:
            raise t.error("ports", "list the blue and green port of each instance, in pairs")
        return tuple(ports)

    def signal(self, t: _Table) -> str:
        raw = (t.string("stop_signal", "SIGTERM") or "SIGTERM").upper()
        name = raw if raw.startswith("SIG") else f"SIG{raw}"
        if name not in signal.Signals.__members__:
            raise t.error("stop_signal", f'unknown signal "{raw}"')
        return name

    # -- servers ------------------------------------------------------------

    def server(self, t: _Table) -> ServerBlock:
        tls = self.tls(t.table("tls", _TLS_KEYS))
        listens = self.listens(t, tls is not None)
        ret = self.ret(t)
        headers = tuple(
            AddHeader(name, t.template("headers", value), always=True)
            for name, value in t.str_map("headers")
        )
        body = t.size("client_max_body_size", 1024 * 1024)
        log = self.access_log(t, None)
        locations = [
            self.location(loc, headers, body, log) for loc in t.tables("locations", _LOCATION_KEYS)
        ]
        return ServerBlock(
            listens=tuple(listens),
            server_names=tuple(n.lower() for n in t.strings("server_name") or ()),
            locations=tuple(locations),
            ret=ret,
            tls=tls,
            add_headers=headers,
            client_max_body_size=body,
            keepalive_timeout=t.duration("keepalive_timeout", 75.0),
            keepalive_requests=t.integer("keepalive_requests", 1000),
            client_header_timeout=t.duration("client_header_timeout", 60.0),
            client_body_timeout=t.duration("client_body_timeout", 60.0),
            send_timeout=t.duration("send_timeout", 60.0),
            access_log=log,
            source=t.source(),
        )

    def listen_strings(self, t: _Table) -> list[tuple[str, list[str]]]:
        """``listen``: a string, a port number, or an array of them; with the key path of each."""
        value = t.data.get("listen")
        items: list[tuple[str, object]]
        if isinstance(value, str | int) and not isinstance(value, bool):
            items = [(_key(t.path, "listen"), value)]
        else:
            items = list(t.entries("listen"))
        out: list[tuple[str, list[str]]] = []
        for path, item in items:
            words = str(item).split() if type(item) in (str, int) else []
            if not words:
                raise ConfigError(
                    'expected a string like "0.0.0.0:443 ssl" or a port number',
                    f"{self.path}: {path}",
                )
            out.append((path, words))
        return out

    def listens(self, t: _Table, tls: bool) -> list[Listen]:
        """A server with ``tls`` and no explicit "ssl" flag listens with TLS on every address."""
        raw = self.listen_strings(t) or [(_key(t.path, "listen"), ["443" if tls else "80"])]
        any_ssl = any("ssl" in words[1:] for _, words in raw)
        out: list[Listen] = []
        for path, words in raw:
            if tls and not any_ssl:
                words = [*words, "ssl"]
            if "ssl" in words[1:] and not tls:
                raise ConfigError(
                    '"ssl" needs a tls table with a certificate', f"{self.path}: {path}"
                )
            try:
                out.extend(parse_listen(words, self.resolver))
            except ValueError as exc:
                raise ConfigError(str(exc), f"{self.path}: {path}") from exc
        return out

    def tls(self, t: _Table | None) -> TlsSpec | None:
        if t is None:
            return None
        protocols = t.strings("protocols")
        for proto in protocols or ():
            if proto not in SSL_PROTOCOLS:
                raise t.error("protocols", f'invalid protocol "{proto}"')
        default = TlsSpec(certificate="", certificate_key="")
        return TlsSpec(
            certificate=self.conf_path(t.required("certificate")),
            certificate_key=self.conf_path(t.required("certificate_key")),
            protocols=tuple(protocols) if protocols else default.protocols,
            ciphers=t.string("ciphers"),
            prefer_server_ciphers=t.boolean("prefer_server_ciphers", False),
            session_cache=t.string("session_cache"),
            session_timeout=t.duration("session_timeout", default.session_timeout),
        )

    def ret(self, t: _Table) -> ReturnSpec | None:
        redirect = t.string("redirect")
        table = t.table("return", _RETURN_KEYS)
        if redirect is not None and table is not None:
            raise t.error("redirect", 'use either "redirect" or "return", not both')
        if redirect is not None:
            return ReturnSpec(code=301, text=t.template("redirect", redirect))
        if table is None:
            return None
        code = table.integer("code", -1)
        if not 0 <= code <= 999:
            raise table.error("code", "required: an HTTP status code (0-999)")
        text = table.string("text")
        if code in REDIRECT_CODES and text is None:
            raise table.error("text", f"a {code} needs the URL to redirect to")
        return ReturnSpec(code=code, text=table.template("text", text) if text else None)

    def access_log(
        self, t: _Table, inherited: tuple[AccessLog, ...] | None
    ) -> tuple[AccessLog, ...] | None:
        """``access_log`` (a path or "off") and ``access_log_format`` (a predefined
        format: "combined" or "json"); a location inherits both from its server, and may
        change either."""
        given = inherited[0] if inherited else None
        fmt = t.string("access_log_format", given.format.name if given else "combined") or ""
        if fmt not in PREDEFINED:
            raise t.error("access_log_format", 'must be "combined" or "json"')
        if not t.has("access_log"):
            if given is None:
                if t.has("access_log_format"):
                    raise t.error("access_log_format", "needs an access_log file to apply to")
                return inherited
            return (AccessLog(given.path, PREDEFINED[fmt]),)
        raw = t.string("access_log") or ""
        if raw == "off":
            return ()
        if not raw:
            raise t.error("access_log", 'must be "off" or a file path')
        return (AccessLog(path=self.prefix_path(raw), format=PREDEFINED[fmt]),)

    def location(
        self,
        t: _Table,
        server_headers: tuple[AddHeader, ...],
        body: int,
        log: tuple[AccessLog, ...] | None,
    ) -> LocationSpec:
        path = t.required("path")
        if not path.startswith("/"):
            raise t.error("path", 'must start with "/"')
        ret = self.ret(t)
        proxy = self.pass_(t)
        if proxy is None and ret is None:
            raise t.error(None, 'a location needs "pass", "redirect" or "return"')
        exact = t.boolean("exact", False)
        return LocationSpec(
            path=path,
            exact=exact,
            modifier="=" if exact else "",
            proxy_pass=proxy,
            ret=ret,
            set_headers=self.set_headers(t),
            add_headers=self.add_headers(t, server_headers),
            next_upstream=self.next_upstream(t),
            next_upstream_tries=t.integer("next_upstream_tries", 0),
            next_upstream_timeout=t.duration("next_upstream_timeout", 0.0),
            connect_timeout=t.duration("connect_timeout", 60.0),
            read_timeout=t.duration("read_timeout", 60.0),
            send_timeout=t.duration("send_timeout", 60.0),
            http_version=self.http_version(t),
            client_max_body_size=t.size("client_max_body_size", body),
            request_buffering=t.boolean("request_buffering", True),
            client_body_buffer_size=t.size("client_body_buffer_size", 16 * 1024),
            access_log=self.access_log(t, log),
            source=t.source(),
        )

    def pass_(self, t: _Table) -> ProxyPass | None:
        target = t.string("pass")
        if target is None:
            return None
        if "$" in target:
            raise t.error("pass", "variables are not allowed in pass")
        if "://" not in target:
            if target not in self.upstreams:
                raise t.error("pass", f'no upstream or app named "{target}"')
            url = compile_template(f"http://{target}")
            return ProxyPass(url=url, upstream=target, proxy_host=target)
        try:
            spec, implicit = proxy_pass_spec(target, self.upstreams, self.resolver)
        except ValueError as exc:
            raise t.error("pass", str(exc)) from exc
        if implicit is not None:
            self.implicit.setdefault(implicit.name, implicit)
        return spec

    def set_headers(self, t: _Table) -> tuple[SetHeader, ...]:
        mode = t.string("forwarded_for", "append") or "append"
        if mode not in _FORWARDED_FOR:
            raise t.error("forwarded_for", 'must be "append", "replace" or "off"')
        headers: dict[str, SetHeader] = {}
        defaults = [("Host", "$http_host"), ("X-Forwarded-Proto", "$scheme")]
        xff = _FORWARDED_FOR[mode]
        if xff is not None:
            defaults.insert(1, ("X-Forwarded-For", xff))
        for name, value in defaults:
            headers[name.lower()] = SetHeader(name, compile_template(value))
        for name, value in t.str_map("set_headers"):
            headers[name.lower()] = SetHeader(name, t.template("set_headers", value))
        return tuple(headers.values())

    def add_headers(self, t: _Table, inherited: tuple[AddHeader, ...]) -> tuple[AddHeader, ...]:
        merged = {h.name.lower(): h for h in inherited}
        for name, value in t.str_map("headers"):
            merged[name.lower()] = AddHeader(name, t.template("headers", value), always=True)
        return tuple(merged.values())

    def next_upstream(self, t: _Table) -> frozenset[str]:
        masks = t.strings("next_upstream")
        if masks is None:
            return frozenset({"error", "timeout"})
        for mask in masks:
            if mask not in NEXT_UPSTREAM_MASKS:
                raise t.error("next_upstream", f'invalid value "{mask}"')
        return frozenset() if "off" in masks else frozenset(masks)

    def http_version(self, t: _Table) -> str:
        version = t.string("http_version", "1.1") or "1.1"
        if version not in ("1.0", "1.1"):
            raise t.error("http_version", 'must be "1.0" or "1.1"')
        return version


def load_toml(path: str, prefix: str, resolver: Resolver = system_resolver) -> Config:
    """Read ``path`` (absolute) as nonstop TOML; relative paths resolve against ``prefix``."""
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except OSError as exc:
        raise ConfigError(f'open() "{path}" failed ({exc.errno}: {exc.strerror})') from exc
    except tomllib.TOMLDecodeError as exc:
        line = re.search(r"line (\d+)", str(exc))
        raise ConfigError(str(exc), f"{path}:{line.group(1)}" if line else path) from exc
    return _Reader(path, prefix, resolver).read(data)
