"""The one configuration vocabulary: variables, balancing methods, nginx.conf directives.

Every part that needs to know a name asks here, so that they cannot drift apart: the
nginx.conf parser (which directives, in which contexts), validation and ``nonstop check``
(which ``$variables`` exist), the variable compiler in the data plane
(``nonstop.proxy.variables`` has a getter for exactly these names; a unit test holds it
to that), the balancers' registry and the nginx renderer (which methods, which of them
take ``backup``).  Names and semantics are nginx's (src/http/ngx_http_variables.c,
ngx_http_upstream.c); a variable listed here is one both engines evaluate.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

__all__ = [
    "BACKUP_METHODS",
    "DIRECTIVES",
    "LOG_VARIABLES",
    "LOG_VARIABLE_PREFIXES",
    "METHODS",
    "NGINX_OTHERS",
    "NOTICE_DIRECTIVES",
    "NOTICE_ONLY_VALUE",
    "UPSTREAM_SERVER",
    "VARIABLES",
    "VARIABLE_PREFIXES",
    "DirectiveSpec",
    "is_known_variable",
    "is_log_variable",
]

# --------------------------------------------------------------------------- variables

VARIABLES: Mapping[str, str] = MappingProxyType(
    {
        "remote_addr": "the client's address",
        "binary_remote_addr": "the client's address in binary form (4 or 16 bytes)",
        "remote_port": "the client's port",
        "proxy_add_x_forwarded_for": 'the X-Forwarded-For header with $remote_addr appended (", ")',
        "proxy_host": "the name and port of the proxied server, as in proxy_pass",
        "host": "the Host header without port, lowercased, or the server name",
        "http_host": "the Host header as sent",
        "scheme": '"http" or "https"',
        "https": '"on" over TLS, else empty',
        "request_uri": "the original request target, with arguments",
        "uri": "the normalised path, without arguments",
        "document_uri": "the same as $uri",
        "args": "the query string",
        "query_string": "the same as $args",
        "is_args": '"?" if there are arguments, else empty',
        "server_port": "the port that accepted the connection",
        "server_addr": "the address that accepted the connection",
        "server_name": "the first name of the server block that took the request",
        "server_protocol": '"HTTP/1.0" or "HTTP/1.1"',
        "request_method": "the method",
        "request": "the full request line",
        "request_id": "16 random bytes in hex, one value per request (sent as X-Request-ID)",
        "content_length": "the Content-Length header",
        "content_type": "the Content-Type header",
        "status": "the response status (3 digits) where a log line reads it, else 000",
    }
)
"""Variables both engines evaluate, besides the ``VARIABLE_PREFIXES`` families."""

LOG_VARIABLES: Mapping[str, str] = MappingProxyType(
    {
        "body_bytes_sent": "the response body's bytes sent to the client",
        "bytes_sent": "all bytes sent to the client, head and body",
        "request_time": "seconds since the first byte of the request, in ms (1.234)",
        "request_length": "the request's bytes: its head and body as received",
        "upstream_addr": 'the servers tried, ", " between them',
        "upstream_status": 'their statuses ("-" for a try with no answer), ", " between them',
        "upstream_response_time": 'the seconds each try took (0.012), ", " between them',
        "upstream_cache_status": "always empty: nonstop has no cache",
        "time_local": "the local time in the combined format (24/Nov/2026:23:40:09 +0100)",
        "time_iso8601": "the local time in ISO 8601 (2026-11-24T23:40:09+01:00)",
        "msec": "seconds since the epoch when the line is written, in ms",
        "connection": "the connection's serial number",
        "connection_requests": "how many requests this connection has carried so far",
        "remote_user": "the user name of a Basic Authorization header",
        "hostname": "this machine's host name",
        "pid": "the process id of the worker writing the line",
        "pipe": '"." (nonstop has no pipelining of its own: "p" never)',
    }
)
"""Variables only a ``log_format`` and ``access_log if=`` read: each costs nothing
unless a configured format names it."""

LOG_VARIABLE_PREFIXES = ("sent_http_",)
"""``$sent_http_NAME``: a response header as sent to the client (log formats only)."""

VARIABLE_PREFIXES = ("http_", "arg_", "cookie_")
"""``$http_NAME`` (a request header), ``$arg_NAME`` (a query argument), ``$cookie_NAME``."""


def is_log_variable(name: str) -> bool:
    """A variable a log format may read: any other, or one of the log-only ones."""
    return (
        name in LOG_VARIABLES
        or any(name.startswith(p) and len(name) > len(p) for p in LOG_VARIABLE_PREFIXES)
        or is_known_variable(name)
    )


def is_known_variable(name: str) -> bool:
    return name in VARIABLES or any(
        name.startswith(p) and len(name) > len(p) for p in VARIABLE_PREFIXES
    )


# --------------------------------------------------------------------------- balancing

METHODS = ("round_robin", "least_conn", "ip_hash", "hash", "random")
"""The balancing methods, by the names TOML's ``method`` takes (nginx's directive names)."""

BACKUP_METHODS = frozenset({"round_robin", "least_conn"})
"""The methods under which a server may be ``backup`` (ngx_http_upstream_server)."""

# --------------------------------------------------------------------------- directives


@dataclass(frozen=True, slots=True)
class DirectiveSpec:
    """Where an nginx.conf directive may appear and how many arguments it takes."""

    contexts: tuple[str, ...]
    min_args: int
    max_args: int  # -1: unlimited
    block: bool = False
    multi: bool = False  # may appear more than once at one level


_H = ("http", "server", "location")
_HS = ("http", "server")
_REWRITE = ("server", "location", "sif", "if")
DIRECTIVES: dict[str, DirectiveSpec] = {
    "events": DirectiveSpec(("main",), 0, 0, block=True),
    "worker_processes": DirectiveSpec(("main",), 1, 1),
    "worker_rlimit_nofile": DirectiveSpec(("main",), 1, 1),
    "worker_cpu_affinity": DirectiveSpec(("main",), 1, -1),
    "worker_priority": DirectiveSpec(("main",), 1, 1),
    "master_process": DirectiveSpec(("main",), 1, 1),
    "http": DirectiveSpec(("main",), 0, 0, block=True),
    "upstream": DirectiveSpec(("http",), 1, 1, block=True, multi=True),
    "map": DirectiveSpec(("http",), 2, 2, block=True, multi=True),
    "server": DirectiveSpec(("http",), 0, 0, block=True, multi=True),
    "location": DirectiveSpec(("server",), 1, 2, block=True, multi=True),
    "least_conn": DirectiveSpec(("upstream",), 0, 0, multi=True),
    "ip_hash": DirectiveSpec(("upstream",), 0, 0, multi=True),
    "hash": DirectiveSpec(("upstream",), 1, 2, multi=True),
    "random": DirectiveSpec(("upstream",), 0, 2, multi=True),
    "keepalive": DirectiveSpec(("upstream",), 1, 1),
    "keepalive_requests": DirectiveSpec(("upstream", *_HS), 1, 1),
    "keepalive_timeout": DirectiveSpec(("upstream", *_H), 1, 2),
    "charset": DirectiveSpec((*_H, "if"), 1, 1),
    "source_charset": DirectiveSpec(_H, 1, 1),
    "charset_types": DirectiveSpec(_H, 1, -1),
    "client_header_timeout": DirectiveSpec(_HS, 1, 1),
    "client_body_timeout": DirectiveSpec(_HS, 1, 1),
    "send_timeout": DirectiveSpec(_HS, 1, 1),
    "listen": DirectiveSpec(("server",), 1, -1, multi=True),
    "server_name": DirectiveSpec(("server",), 1, -1, multi=True),
    # the rewrite module; "if" is a location-level "if" block, "sif" a server-level one
    "return": DirectiveSpec(_REWRITE, 1, 2, multi=True),
    "set": DirectiveSpec(_REWRITE, 2, 2, multi=True),
    "rewrite": DirectiveSpec(_REWRITE, 2, 3, multi=True),
    "break": DirectiveSpec(_REWRITE, 0, 0, multi=True),
    "if": DirectiveSpec(("server", "location"), 1, -1, block=True, multi=True),
    "ssl_certificate": DirectiveSpec(_HS, 1, 1),
    "ssl_certificate_key": DirectiveSpec(_HS, 1, 1),
    "ssl_protocols": DirectiveSpec(_HS, 1, -1),
    "ssl_ciphers": DirectiveSpec(_HS, 1, 1),
    "ssl_prefer_server_ciphers": DirectiveSpec(_HS, 1, 1),
    "ssl_session_cache": DirectiveSpec(_HS, 1, 2),
    "ssl_session_timeout": DirectiveSpec(_HS, 1, 1),
    "ssl_dhparam": DirectiveSpec(_HS, 1, 1),
    "ssl_ecdh_curve": DirectiveSpec(_HS, 1, 1),
    "ssl_session_tickets": DirectiveSpec(_HS, 1, 1),
    "ssl_stapling": DirectiveSpec(_HS, 1, 1),  # a notice: nonstop cannot staple
    "ssl_stapling_verify": DirectiveSpec(_HS, 1, 1),  # no effect without stapling
    "ssl_trusted_certificate": DirectiveSpec(_HS, 1, 1),  # for stapling only
    "add_header": DirectiveSpec((*_H, "if"), 2, 3, multi=True),
    "client_max_body_size": DirectiveSpec(_H, 1, 1),
    "client_body_buffer_size": DirectiveSpec(_H, 1, 1),
    "proxy_request_buffering": DirectiveSpec(_H, 1, 1),
    "access_log": DirectiveSpec((*_H, "if"), 1, -1, multi=True),
    "log_format": DirectiveSpec(("http",), 2, -1, multi=True),
    "error_log": DirectiveSpec(("main", *_HS), 1, 2),
    "proxy_pass": DirectiveSpec(("location", "if"), 1, 1),
    "proxy_set_header": DirectiveSpec(_H, 2, 2, multi=True),
    "proxy_next_upstream": DirectiveSpec(_H, 1, -1),
    "proxy_next_upstream_tries": DirectiveSpec(_H, 1, 1),
    "proxy_next_upstream_timeout": DirectiveSpec(_H, 1, 1),
    "proxy_connect_timeout": DirectiveSpec(_H, 1, 1),
    "proxy_read_timeout": DirectiveSpec(_H, 1, 1),
    "proxy_send_timeout": DirectiveSpec(_H, 1, 1),
    "proxy_http_version": DirectiveSpec(_H, 1, 1),
    "error_page": DirectiveSpec((*_H, "if"), 2, -1, multi=True),
    # files (ngx_http_core_module.c, ngx_http_index_module.c, ngx_http_headers_filter)
    "root": DirectiveSpec((*_H, "if"), 1, 1),
    "alias": DirectiveSpec(("location",), 1, 1),
    "index": DirectiveSpec(_H, 1, -1, multi=True),
    "try_files": DirectiveSpec(("server", "location"), 2, -1),
    "internal": DirectiveSpec(("location",), 0, 0),
    # ngx_http_stub_status_module.c: NGX_CONF_NOARGS|NGX_CONF_TAKE1 (the old "on")
    "stub_status": DirectiveSpec(("server", "location"), 0, 1),
    "expires": DirectiveSpec((*_H, "if"), 1, 2),
    "etag": DirectiveSpec(_H, 1, 1),
    "types": DirectiveSpec(_H, 0, 0, block=True, multi=True),
    "default_type": DirectiveSpec(_H, 1, 1),
    "proxy_hide_header": DirectiveSpec(_H, 1, 1, multi=True),
    "allow": DirectiveSpec(_H, 1, 1, multi=True),
    "deny": DirectiveSpec(_H, 1, 1, multi=True),
    "proxy_intercept_errors": DirectiveSpec(_H, 1, 1),
    # reading the response ahead of the client (ngx_http_proxy_module.c)
    "proxy_buffering": DirectiveSpec(_H, 1, 1),
    "proxy_buffers": DirectiveSpec(_H, 2, 2),
    "proxy_buffer_size": DirectiveSpec(_H, 1, 1),
    "proxy_busy_buffers_size": DirectiveSpec(_H, 1, 1),
    "proxy_max_temp_file_size": DirectiveSpec(_H, 1, 1),
    "proxy_temp_file_write_size": DirectiveSpec(_H, 1, 1),
    "proxy_ignore_headers": DirectiveSpec(_H, 1, -1),
    # names in a proxy_pass given by variables (ngx_http_core_module.c)
    "resolver": DirectiveSpec(_H, 1, -1),
    "resolver_timeout": DirectiveSpec(_H, 1, 1),
    # https:// upstreams
    "proxy_ssl_verify": DirectiveSpec(_H, 1, 1),
    "proxy_ssl_trusted_certificate": DirectiveSpec(_H, 1, 1),
    "proxy_ssl_verify_depth": DirectiveSpec(_H, 1, 1),
    "proxy_ssl_server_name": DirectiveSpec(_H, 1, 1),
    "proxy_ssl_name": DirectiveSpec(_H, 1, 1),
    "proxy_ssl_protocols": DirectiveSpec(_H, 1, -1),
    "proxy_ssl_ciphers": DirectiveSpec(_H, 1, 1),
    "proxy_ssl_certificate": DirectiveSpec(_H, 1, 1),
    "proxy_ssl_certificate_key": DirectiveSpec(_H, 1, 1),
    "proxy_ssl_session_reuse": DirectiveSpec(_H, 1, 1),
    # access and limits (config/limits.py)
    "satisfy": DirectiveSpec(_H, 1, 1),
    "auth_basic": DirectiveSpec(_H, 1, 1),
    "auth_basic_user_file": DirectiveSpec(_H, 1, 1),
    "limit_req_zone": DirectiveSpec(("http",), 3, 4, multi=True),
    "limit_req": DirectiveSpec(_H, 1, 3, multi=True),
    "limit_req_status": DirectiveSpec(_H, 1, 1),
    "limit_req_log_level": DirectiveSpec(_H, 1, 1),
    "limit_req_dry_run": DirectiveSpec(_H, 1, 1),
    "limit_conn_zone": DirectiveSpec(("http",), 2, 2, multi=True),
    "limit_conn": DirectiveSpec(_H, 2, 2, multi=True),
    "limit_conn_status": DirectiveSpec(_H, 1, 1),
    "limit_conn_log_level": DirectiveSpec(_H, 1, 1),
    "limit_conn_dry_run": DirectiveSpec(_H, 1, 1),
    # compression (ngx_http_gzip_filter_module.c; gzip_proxied, gzip_disable and
    # gzip_http_version are ngx_http_core_module's)
    "gzip": DirectiveSpec((*_H, "if"), 1, 1),
    "gzip_types": DirectiveSpec(_H, 1, -1),
    "gzip_comp_level": DirectiveSpec(_H, 1, 1),
    "gzip_min_length": DirectiveSpec(_H, 1, 1),
    "gzip_proxied": DirectiveSpec(_H, 1, -1),
    "gzip_vary": DirectiveSpec(_H, 1, 1),
    "gzip_disable": DirectiveSpec(_H, 1, -1, multi=True),
    "gzip_http_version": DirectiveSpec(_H, 1, 1),
    "gzip_buffers": DirectiveSpec(_H, 2, 2),
    # the response head of a proxied answer (ngx_http_proxy_module.c)
    "proxy_redirect": DirectiveSpec(_H, 1, 2, multi=True),
    "proxy_cookie_path": DirectiveSpec(_H, 1, 2, multi=True),
    "proxy_cookie_domain": DirectiveSpec(_H, 1, 2, multi=True),
    "proxy_pass_header": DirectiveSpec(_H, 1, 1, multi=True),
}
UPSTREAM_SERVER = DirectiveSpec(("upstream",), 1, -1, multi=True)

_TEMP_PATHS = (
    "client_body_temp_path",
    "proxy_temp_path",
    "fastcgi_temp_path",
    "uwsgi_temp_path",
    "scgi_temp_path",
)
NOTICE_DIRECTIVES: dict[str, tuple[str, ...]] = {
    # nginx's own process model
    "user": ("main",),
    "worker_shutdown_timeout": ("main",),
    "daemon": ("main",),
    "pid": ("main",),
    "lock_file": ("main",),
    "timer_resolution": ("main",),
    "pcre_jit": ("main",),
    "multi_accept": ("events",),
    "use": ("events",),
    "accept_mutex": ("events",),
    "accept_mutex_delay": ("events",),
    **{name: _H for name in _TEMP_PATHS},
    # harmless for a proxy: file serving, hash table sizes, MIME types of local files
    "sendfile": _H,
    "tcp_nopush": _H,
    "tcp_nodelay": _H,
    "types_hash_max_size": _H,
    "types_hash_bucket_size": _H,
    "server_names_hash_max_size": ("http",),
    "server_names_hash_bucket_size": ("http",),
    "variables_hash_max_size": ("http",),
    "variables_hash_bucket_size": ("http",),
    "map_hash_max_size": ("http",),
    "map_hash_bucket_size": ("http",),
    "open_file_cache": _H,
    "open_file_cache_valid": _H,
    "open_file_cache_min_uses": _H,
    "open_file_cache_errors": _H,
    "log_not_found": _H,  # nonstop's error log has no "open() failed" lines to silence
    "autoindex": _H,  # only "autoindex off"
    "server_tokens": _H,  # "Server: nonstop" and error pages name nonstop, never a version
}
NOTICE_ONLY_VALUE = {"autoindex": "off"}

# Real nginx directives that nonstop does not run: named "outside the subset", not "unknown".
_OTHERS_TEXT = """
    limit_except
    open_log_file_cache ssl ssl_client_certificate
    disable_symlinks if_modified_since max_ranges
    ssl_verify_client ssl_buffer_size ssl_early_data http2
    proxy_cache proxy_cache_path proxy_cache_valid proxy_cache_key
    proxy_bind
    proxy_pass_request_body proxy_ssl_crl proxy_ssl_password_file
    proxy_pass_request_headers proxy_socket_keepalive proxy_ignore_client_abort
    fastcgi_pass fastcgi_param uwsgi_pass scgi_pass grpc_pass memcached_pass
    limit_rate auth_request real_ip_header set_real_ip_from
    real_ip_recursive
    client_header_buffer_size large_client_header_buffers keepalive_disable
    reset_timedout_connection lingering_close lingering_time lingering_timeout
    server_name_in_redirect port_in_redirect absolute_redirect merge_slashes
    underscores_in_headers ignore_invalid_headers chunked_transfer_encoding
    sub_filter geo split_clients env load_module stream mail thread_pool
    zone state ntlm sticky queue slow_start health_check resolve aio directio
    output_buffers postpone_output send_lowat log_subrequest
    recursive_error_pages variables_hash ssl_conf_command ssl_password_file
"""
NGINX_OTHERS = frozenset(_OTHERS_TEXT.split())
