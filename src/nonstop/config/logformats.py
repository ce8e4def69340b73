"""Access log formats: nginx's predefined ``combined``, nonstop's ``json``, and the
parsing of ``log_format`` and ``access_log`` arguments (ngx_http_log_module.c).

Pure: the callers (nginxconf.py, toml.py) turn a ValueError into a ConfigError with the
file and line.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Final

from nonstop.config.model import AccessLog, LogFormat
from nonstop.config.template import compile_template
from nonstop.config.units import parse_duration, parse_size

__all__ = [
    "COMBINED",
    "ESCAPES",
    "JSON",
    "JSON_FORMAT",
    "PREDEFINED",
    "access_log",
    "log_format",
]

ESCAPES: Final = ("default", "json", "none")

COMBINED: Final = LogFormat(
    "combined",
    compile_template(
        '$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent '
        '"$http_referer" "$http_user_agent"'
    ),
)

# nonstop's JSON lines (docs/observability.md), the same text under both engines.  A
# variable with no value is "" (escape=json writes nothing for it), so ``upstream`` and
# ``upstream_duration`` are "" when no server was tried, one entry a try otherwise.
JSON_FORMAT: Final = (
    '{"time":"$time_iso8601","client":"$remote_addr","method":"$request_method",'
    '"target":"$request_uri","protocol":"$server_protocol","status":$status,'
    '"bytes":$body_bytes_sent,"duration":$request_time,"upstream":"$upstream_addr",'
    '"upstream_duration":"$upstream_response_time","request_id":"$request_id",'
    '"host":"$http_host","referer":"$http_referer","user_agent":"$http_user_agent"}'
)
JSON: Final = LogFormat("json", compile_template(JSON_FORMAT), escape="json")

PREDEFINED: Final[Mapping[str, LogFormat]] = {"combined": COMBINED, "json": JSON}
"""``combined`` is nginx's own; ``json`` nonstop's (the nginx engine declares it for nginx
unless the config defines a ``log_format json`` of its own)."""

_GZIP_BUFFER: Final = 64 * 1024  # nginx's buffer when gzip is given without one


def log_format(args: tuple[str, ...]) -> LogFormat:
    """``log_format NAME [escape=...] STRING...``: the strings are joined as written."""
    name, rest = args[0], list(args[1:])
    escape = "default"
    if rest and rest[0].startswith("escape="):
        escape = rest.pop(0)[7:]
        if escape not in ESCAPES:
            raise ValueError(f'unknown log format escaping "{escape}"')
    if not rest:
        raise ValueError('invalid number of arguments in "log_format" directive')
    if name == "combined":
        raise ValueError('duplicate "log_format" name "combined"')
    return LogFormat(name, compile_template("".join(rest)), escape)


def access_log(
    args: tuple[str, ...], formats: Mapping[str, LogFormat], path: Callable[[str], str]
) -> AccessLog:
    """One ``access_log PATH [FORMAT [buffer=SIZE] [gzip[=LEVEL]] [flush=TIME] [if=COND]]``
    (not ``off``, which the caller handles); ``path`` resolves the file against the prefix."""
    raw = args[0]
    if "$" in raw:
        raise ValueError(f'access_log "{raw}" with variables is outside the nonstop subset')
    if raw.startswith("syslog:") or raw.startswith("memory:"):
        raise ValueError(f'access_log "{raw}" is outside the nonstop subset (use a file)')
    name = args[1] if len(args) > 1 else "combined"
    fmt = formats.get(name)
    if fmt is None:
        raise ValueError(f'unknown log format "{name}"')
    buffer, flush, gzip, condition = 0, 0.0, 0, None
    for arg in args[2:]:
        if arg.startswith("buffer="):
            buffer = parse_size(arg[7:])
            if buffer <= 0:
                raise ValueError(f'invalid buffer size "{arg[7:]}"')
        elif arg.startswith("flush="):
            flush = parse_duration(arg[6:])
            if flush <= 0:
                raise ValueError(f'invalid flush time "{arg[6:]}"')
        elif arg == "gzip":
            gzip = 1
        elif arg.startswith("gzip="):
            level = arg[5:]
            if not level.isdigit() or not 1 <= int(level) <= 9:
                raise ValueError(f'invalid compression level "{level}"')
            gzip = int(level)
        elif arg.startswith("if="):
            condition = compile_template(arg[3:])
        else:
            raise ValueError(f'invalid parameter "{arg}"')
    if flush and not buffer and not gzip:
        raise ValueError(f'no buffer is defined for access_log "{raw}"')
    if gzip and not buffer:
        buffer = _GZIP_BUFFER
    return AccessLog(path(raw), fmt, buffer, flush, gzip, condition)
