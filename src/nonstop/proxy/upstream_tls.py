"""HTTPS upstreams: ``proxy_pass https://...`` and the ``proxy_ssl_*`` directives.

One ``UpstreamTls`` per location that passes over TLS, built with the routes when a
config is installed (a certificate that cannot be read refuses the config there, as
``nginx -t`` would).  The connection itself is the event loop's TLS transport under the
same ``UpstreamConnection`` protocol as plain HTTP; what changes per request is only the
name (``proxy_ssl_name``, by default the host of ``$proxy_host``), and the key under which
an idle connection waits in the keep-alive pool (a TLS connection is never handed to a
plain pass of the same upstream, nor the reverse).

nginx's defaults are kept: no verification, no SNI (``proxy_ssl_server_name off``),
TLSv1.2 and TLSv1.3.  Two differences, both from Python's ``ssl`` module: a verified name
is also sent as SNI (the module checks the name it sends), and ``proxy_ssl_verify_depth``
is read but the chain length is OpenSSL's default; ``proxy_ssl_session_reuse`` is read,
and the pool's keep-alive connections are what spares handshakes.
"""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING, Final

from nonstop.errors import ConfigError
from nonstop.proxy.handed import pem_path

if TYPE_CHECKING:
    from nonstop.config.model import ProxySsl
    from nonstop.proxy.request import Request
    from nonstop.proxy.variables import Getter, VariableTable

__all__ = ["UpstreamTls", "handshake_error", "pool_key"]

_VERSIONS: Final = {
    "TLSv1": ssl.TLSVersion.TLSv1,
    "TLSv1.1": ssl.TLSVersion.TLSv1_1,
    "TLSv1.2": ssl.TLSVersion.TLSv1_2,
    "TLSv1.3": ssl.TLSVersion.TLSv1_3,
}


_HOSTNAME_MISMATCH: Final = 62  # X509_V_ERR_HOSTNAME_MISMATCH


def pool_key(address: str) -> str:
    """The keep-alive pool's key of a TLS connection to ``address``."""
    return "https://" + address


class UpstreamTls:
    """How one location speaks TLS to its upstream servers."""

    __slots__ = ("context", "name_fn", "sends_name")

    def __init__(self, spec: ProxySsl, table: VariableTable, where: str) -> None:
        self.context = _context(spec, where)
        self.name_fn: Getter | None = (
            table.compile(spec.name, where) if spec.name is not None else None
        )
        # Python's ssl checks the name it sends: a verified name goes out as SNI too
        self.sends_name = spec.server_name or spec.verify

    def server_hostname(self, req: Request) -> str | None:
        """The name sent as SNI and verified, or None when neither is asked for."""
        if not self.sends_name:
            return None
        name = self.name_fn(req) if self.name_fn is not None else req.proxy_host
        if name.startswith("["):
            return name[1 : name.find("]")]  # an IPv6 address: no SNI, its SAN is checked
        host, colon, port = name.rpartition(":")
        return host if colon and port.isdigit() else name


def _context(spec: ProxySsl, where: str) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = spec.verify
    context.verify_mode = ssl.CERT_REQUIRED if spec.verify else ssl.CERT_NONE
    versions = [_VERSIONS[p] for p in spec.protocols if p in _VERSIONS]
    if versions:
        context.minimum_version = min(versions)
        context.maximum_version = max(versions)
    try:
        context.set_ciphers(spec.ciphers)
        if spec.trusted_certificate is not None:
            with pem_path(spec.trusted_certificate) as trusted:
                context.load_verify_locations(trusted)
        if spec.certificate is not None:
            key_path = spec.certificate_key or spec.certificate  # no key: in the chain's file
            with pem_path(spec.certificate) as chain, pem_path(key_path) as key:
                context.load_cert_chain(chain, key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot set up TLS to the upstream: {exc}", where) from exc
    return context


def handshake_error(exc: OSError, name: str | None) -> str:
    """An error-log line for a failed connection to an upstream, in nginx's words
    (ngx_ssl_handshake, ngx_ssl_check_host); ``name`` the one verified."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        if exc.verify_code == _HOSTNAME_MISMATCH:
            return f'upstream SSL certificate does not match "{name}"'
        return f"upstream SSL certificate verify error: ({exc.verify_code}:{exc.verify_message})"
    if isinstance(exc, ssl.SSLError):
        return f"SSL_do_handshake() failed ({exc.reason or exc}) while SSL handshaking"
    return f"connect() failed ({exc.errno}: {exc.strerror})"
