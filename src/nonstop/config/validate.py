"""Checks across the whole model, the same for both input formats.

The parsers reject what is wrong in one directive or key; this module rejects what is wrong
between them: a ``proxy_pass`` to no upstream, ``backup`` under a method that ignores it
(``ngx_http_upstream_server`` in src/http/ngx_http_upstream.c), a port listened to with and
without TLS, an unknown ``$variable`` (nginx refuses those at load too), app ports that clash
with listeners.  It returns the config with any warnings added to ``notices``, the way
``nginx -t`` prints warnings and still succeeds.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

from nonstop.config.model import (
    Config,
    IfSpec,
    LocationSpec,
    ReturnSpec,
    RewriteSpec,
    ServerBlock,
    SetSpec,
    Source,
    Step,
    Template,
    UpstreamSpec,
)
from nonstop.config.rewrite import CAPTURES, defined_names, walk_steps
from nonstop.config.vocabulary import BACKUP_METHODS, is_known_variable, is_log_variable
from nonstop.errors import ConfigError

__all__ = ["BACKUP_METHODS", "is_known_variable", "validate"]


def _where(source: Source | None, fallback: str) -> str:
    return str(source) if source is not None else fallback


def validate(config: Config) -> Config:
    """Raise ConfigError on the first inconsistency; return ``config`` with warnings added."""
    notices: list[str] = list(config.notices)
    if not config.servers:
        raise ConfigError('no "server" block in configuration', config.path)
    _check_upstreams(config)
    _check_apps(config)
    notices.extend(_check_listens(config))
    for server in config.servers:
        _check_server(config, server)
    _check_variables(config)
    return replace(config, notices=tuple(notices))


def _check_upstreams(config: Config) -> None:
    seen: set[str] = set()
    for up in config.upstreams:
        where = _where(up.source, config.path)
        if up.name in seen:
            raise ConfigError(f'duplicate upstream "{up.name}"', where)
        seen.add(up.name)
        if not up.servers and not up.app:
            raise ConfigError(f'no servers are inside upstream "{up.name}"', where)
        if up.method == "hash" and up.hash_key is None:
            raise ConfigError(f'upstream "{up.name}" uses "hash" without a key', where)
        for peer in up.servers:
            _check_peer(up, peer.source, where, peer.backup, peer.weight)


def _check_peer(
    up: UpstreamSpec, source: Source | None, where: str, backup: bool, weight: int
) -> None:
    at = _where(source, where)
    if backup and up.method not in BACKUP_METHODS:
        raise ConfigError('balancing method does not support parameter "backup"', at)
    if weight < 1:
        raise ConfigError(f'invalid parameter "weight={weight}"', at)


def _check_apps(config: Config) -> None:
    listened = {listen.port for server in config.servers for listen in server.listens}
    owner: dict[int, str] = {}
    for app in config.apps:
        where = _where(app.source, config.path)
        for port in app.ports:
            if port in owner:
                raise ConfigError(
                    f'port {port} of app "{app.name}" is already used by app "{owner[port]}"',
                    where,
                )
            if port in listened:
                raise ConfigError(
                    f'port {port} of app "{app.name}" is also a "listen" port of nonstop', where
                )
            owner[port] = app.name


def _check_listens(config: Config) -> list[str]:
    """ssl consistency, one default server, and nginx's warning on repeated names."""
    ssl: dict[tuple[str, int], bool] = {}
    default: set[tuple[str, int]] = set()
    names: set[tuple[str, int, str]] = set()
    warnings: list[str] = []
    for server in config.servers:
        where = _where(server.source, config.path)
        for listen in server.listens:
            key, shown = listen.key, _show(listen.host, listen.port)
            if ssl.setdefault(key, listen.ssl) != listen.ssl:
                raise ConfigError(
                    f'{shown} is listened to with "ssl" in one server and without it in'
                    " another (nginx would silently make both ssl)",
                    where,
                )
            if listen.default_server:
                if key in default:
                    raise ConfigError(f"a duplicate default server for {shown}", where)
                default.add(key)
            for name in server.server_names or ("",):
                if (*key, name) in names:
                    warnings.append(
                        f'conflicting server name "{name}" on {shown}, ignored ({where})'
                    )
                names.add((*key, name))
    return warnings


def _show(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _check_server(config: Config, server: ServerBlock) -> None:
    where = _where(server.source, config.path)
    if any(listen.ssl for listen in server.listens) and server.tls is None:
        raise ConfigError('no "ssl_certificate" is defined for the "listen ... ssl"', where)
    if not server.locations and server.ret is None and not server.steps and not server.files:
        raise ConfigError('a server needs a "location", a "return" or a "root"', where)
    seen: set[tuple[str, str]] = set()
    for loc in server.locations:
        at = _where(loc.source, where)
        # "^~ /a" and "/a" are the same prefix; regex locations may repeat (nginx)
        kind = "" if loc.modifier == "^~" else loc.modifier
        if (loc.path, kind) in seen and not loc.is_regex:
            raise ConfigError(f'duplicate location "{loc.path}"', at)
        seen.add((loc.path, kind))
        _check_location(config, server, loc, at)
        for step in walk_steps(loc.steps):
            if isinstance(step, IfSpec) and step.location is not None:
                _check_pass(config, step.location, _where(step.source, at))


def _check_location(config: Config, server: ServerBlock, loc: LocationSpec, at: str) -> None:
    answers = loc.proxy_pass or loc.ret or server.ret or loc.steps or loc.files or loc.stub_status
    if not answers:
        raise ConfigError(
            f'location "{loc.path}" has no "proxy_pass", "return" or "root": nonstop would'
            " serve nginx's PREFIX/html there, say so with root",
            at,
        )
    _check_pass(config, loc, at)


def _check_pass(config: Config, loc: LocationSpec, at: str) -> None:
    proxy = loc.proxy_pass
    if proxy is not None and proxy.upstream is not None and config.upstream(proxy.upstream) is None:
        raise ConfigError(f'host not found in upstream "{proxy.upstream}"', at)
    if loc.next_upstream_tries < 0:
        raise ConfigError("proxy_next_upstream_tries must not be negative", at)


def _templates(config: Config) -> Iterator[tuple[Template, str]]:
    """Every template in the config with where it was written."""
    for up in config.upstreams:
        if up.hash_key is not None:
            yield up.hash_key, _where(up.source, config.path)
    for server in config.servers:
        where = _where(server.source, config.path)
        yield from ((h.value, where) for h in server.add_headers)
        yield from ((value, where) for _, value in server.sets)
        if server.ret is not None and server.ret.text is not None:
            yield server.ret.text, where
        yield from _step_templates(server.steps, where)
        yield from ((page.target, where) for page in server.error_pages)
        for loc in server.locations:
            yield from _location_templates(loc, _where(loc.source, where))
    for m in config.maps:
        at = _where(m.origin, config.path)
        yield from ((value, at) for _, value in m.entries)
        yield from ((value, at) for _, value in m.regexes)
        yield m.default, at


def _step_templates(steps: tuple[Step, ...], where: str) -> Iterator[tuple[Template, str]]:
    for step in walk_steps(steps):
        at = _where(step.source, where) if isinstance(step, IfSpec) else where
        if isinstance(step, SetSpec):
            yield step.value, at
        elif isinstance(step, ReturnSpec) and step.text is not None:
            yield step.text, at
        elif isinstance(step, RewriteSpec):
            yield step.replacement, at
        elif isinstance(step, IfSpec):
            yield step.condition.subject, at
            if step.condition.operand is not None:
                yield step.condition.operand, at
            if step.location is not None:
                yield from _location_templates(step.location, at)


def _location_templates(loc: LocationSpec, at: str) -> Iterator[tuple[Template, str]]:
    yield from ((h.value, at) for h in loc.set_headers)
    yield from ((h.value, at) for h in loc.add_headers)
    yield from ((value, at) for _, value in loc.sets)
    if loc.ret is not None and loc.ret.text is not None:
        yield loc.ret.text, at
    if loc.proxy_pass is not None:
        yield loc.proxy_pass.url, at
    yield from _step_templates(loc.steps, at)
    yield from ((page.target, at) for page in loc.error_pages)
    if loc.files is not None:
        yield from ((target, at) for target in loc.files.try_files)
    for rule in (*loc.redirects, *loc.cookie_paths, *loc.cookie_domains):
        yield rule.replacement, at
        if rule.pattern is not None:
            yield rule.pattern, at


def _check_variables(config: Config) -> None:
    if config.engine == "nginx":
        return  # nginx -t judges them, knowing its modules' ($upstream_cache_status, ...)
    defined = defined_names(config) | CAPTURES
    for m in config.maps:
        at = _where(m.origin, config.path)
        if is_known_variable(m.target):
            raise ConfigError(f'the duplicate "{m.target}" variable', at)
        if not (is_known_variable(m.source) or m.source in defined):
            raise ConfigError(f'unknown "{m.source}" variable', at)
    for template, where in _templates(config):
        for name in template.variables:
            if not (is_known_variable(name) or name in defined):
                raise ConfigError(f'unknown "{name}" variable', where)
    for template, where in _log_templates(config):
        for name in template.variables:
            if not (is_log_variable(name) or name in defined):
                raise ConfigError(f'unknown "{name}" variable', where)


def _log_templates(config: Config) -> Iterator[tuple[Template, str]]:
    """The log formats and ``if=`` conditions of every access_log, with where."""
    for server in config.servers:
        where = _where(server.source, config.path)
        for loc in (None, *server.locations):
            logs = server.access_log if loc is None else loc.access_log
            at = where if loc is None else _where(loc.source, where)
            for log in logs or ():
                yield log.format.template, at
                if log.condition is not None:
                    yield log.condition, at
