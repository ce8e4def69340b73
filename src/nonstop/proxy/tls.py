"""TLS termination: one long-lived ``ssl.SSLContext`` per listen address, certificates by SNI.

A listener is created once with its address's *front* context and keeps it across
reloads, so a reload cannot hand it a new context object.  The front therefore holds no
certificate: its ``sni_callback`` runs on every handshake (OpenSSL calls it with
``None`` when the client sent no SNI) and switches the connection to the context of the
chosen server, which holds that server's certificate chain.  A reload builds every new
certificate context first and only then updates the fronts in place (protocols,
ciphers, options) and swaps the SNI table they read; any error leaves everything as it
was.  Connections already open keep the session they negotiated.

As in nginx (ngx_http_ssl_module.c, ``ngx_http_ssl_servername``), ``SSL_set_SSL_CTX``
swaps only the certificate: the protocol versions, cipher list, options, session cache
and session tickets of a handshake are those of the address's default server.  Python's
``ssl`` cannot copy options onto a connection as nginx does, so ``prefer_server_ciphers``
of a server chosen by SNI does not apply either; docs/tls.md lists what is honoured.
"""

from __future__ import annotations

import re
import ssl
import warnings
from dataclasses import dataclass
from typing import Final, Generic, TypeVar

from nonstop.config.model import Config, Listen, ServerBlock, TlsSpec
from nonstop.config.units import parse_size
from nonstop.errors import ConfigError
from nonstop.proxy.handed import pem_path, read_pem
from nonstop.proxy.tls_object import DirectSSLObject

__all__ = [
    "DEFAULT_CIPHERS",
    "SessionCache",
    "SniTable",
    "TlsContexts",
    "make_context",
    "parse_session_cache",
]

# CPython's own default for server contexts (PY_SSL_DEFAULT_CIPHER_STRING, 3.10+), named
# here so a reload that drops ``ssl_ciphers`` can restore it on a context in place.
DEFAULT_CIPHERS = (
    "@SECLEVEL=2:ECDH+AESGCM:ECDH+CHACHA20:ECDH+AES:DHE+AES:!aNULL:!eNULL:!aDSS:!SHA1:!AESCCM"
)
ALPN = ("http/1.1",)

# nginx's names, lowest first; SSLv2/SSLv3 are accepted by the loaders and ignored here.
_VERSIONS = (
    ("TLSv1", ssl.TLSVersion.TLSv1),
    ("TLSv1.1", ssl.TLSVersion.TLSv1_1),
    ("TLSv1.2", ssl.TLSVersion.TLSv1_2),
    ("TLSv1.3", ssl.TLSVersion.TLSv1_3),
)

T = TypeVar("T")
Key = tuple[str, int]


# --------------------------------------------------------------------------- pure parts


@dataclass(frozen=True, slots=True)
class SessionCache:
    """``ssl_session_cache`` parsed: ``off``, ``none``, or ``builtin[:size]`` and/or
    ``shared:name:size`` (ngx_http_ssl_module.c, ``ngx_http_ssl_session_cache``)."""

    mode: str  # "off" | "none" | "cache"
    builtin_size: int | None = None  # sessions; None = not given
    shared_name: str | None = None
    shared_size: int | None = None  # bytes


def parse_session_cache(text: str | None) -> SessionCache:
    """Raises ValueError with nginx's wording for a value nginx would refuse."""
    if text is None:
        return SessionCache("none")  # nginx's default
    words = text.split()
    if words in (["off"], ["none"]):
        return SessionCache(words[0])
    builtin: int | None = None
    name: str | None = None
    size: int | None = None
    for word in words:
        if word == "builtin":
            builtin = 20480  # nginx's default builtin size, as OpenSSL's
        elif word.startswith("builtin:") and word[8:].isdigit():
            builtin = int(word[8:])
        elif word.startswith("shared:") and word.count(":") == 2:
            _, name, raw = word.split(":")
            try:
                size = parse_size(raw)
            except ValueError:
                raise ValueError(f'invalid zone size "{raw}" in "ssl_session_cache"') from None
            if not name or size < 8 * 4096:
                raise ValueError(f'session cache "{word}" is too small or unnamed')
        else:
            raise ValueError(f'invalid session cache "{word}"')
    return SessionCache("cache", builtin, name, size)


class SniTable(Generic[T]):
    """Server names of one listen address and what each maps to, matched like Host.

    Exact names first, then the longest leading wildcard (``*.example.com``,
    ``.example.com``), then the longest trailing one (``www.example.*``), else the
    default server's: the order of ngx_http_find_virtual_server (ngx_http_core_module.c).
    """

    __slots__ = ("default", "exact", "head", "tail")

    def __init__(self, entries: list[tuple[tuple[str, ...], T]], default: T) -> None:
        self.default = default
        self.exact: dict[str, T] = {}
        self.head: list[tuple[str, T]] = []
        self.tail: list[tuple[str, T]] = []
        for names, value in entries:
            for name in names:
                name = name.lower()
                if name.startswith("."):
                    self.exact.setdefault(name[1:], value)
                    self.head.append((name, value))
                elif name.startswith("*."):
                    self.head.append((name[1:], value))
                elif name.endswith(".*"):
                    self.tail.append((name[:-1], value))
                elif name:
                    self.exact.setdefault(name, value)
        # a stable sort keeps the first server for equally long wildcards
        self.head.sort(key=lambda item: len(item[0]), reverse=True)
        self.tail.sort(key=lambda item: len(item[0]), reverse=True)

    def choose(self, server_name: str | None) -> T:
        if not server_name:
            return self.default
        name = server_name.lower().rstrip(".")
        found = self.exact.get(name)
        if found is not None:
            return found
        for suffix, value in self.head:
            if name.endswith(suffix):
                return value
        for prefix, value in self.tail:
            if name.startswith(prefix):
                return value
        return self.default


def _protocol_range(protocols: tuple[str, ...], where: str) -> tuple[ssl.TLSVersion, ...]:
    """The lowest and highest enabled version; a gap (``TLSv1 TLSv1.2``) is filled in."""
    versions = tuple(version for name, version in _VERSIONS if name in protocols)
    if not versions:
        raise ConfigError(
            f'no protocol nonstop can offer in "ssl_protocols {" ".join(protocols)}"'
            " (TLSv1 to TLSv1.3 are supported)",
            where,
        )
    return versions[0], versions[-1]


# --------------------------------------------------------------------------- contexts


def _configure(context: ssl.SSLContext, spec: TlsSpec, where: str) -> None:
    """Apply the handshake settings of ``spec``; works on a new or a live context."""
    try:
        parse_session_cache(spec.session_cache)
    except ValueError as exc:
        raise ConfigError(str(exc), where) from None
    low, high = _protocol_range(spec.protocols, where)
    with warnings.catch_warnings():
        # TLSv1 and TLSv1.1 are deprecated in Python; a config may still name them.
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = low
        context.maximum_version = high
    try:
        context.set_ciphers(spec.ciphers or DEFAULT_CIPHERS)
    except ssl.SSLError as exc:
        raise ConfigError(f'invalid "ssl_ciphers {spec.ciphers}": {_reason(exc)}', where) from None
    options = context.options & ~ssl.OP_NO_TICKET  # session tickets on, as in nginx
    if not spec.session_tickets:
        options |= ssl.OP_NO_TICKET  # ssl_session_tickets off
    if spec.dhparam is not None:
        try:
            with pem_path(spec.dhparam) as dhparam:
                context.load_dh_params(dhparam)
        except (OSError, ssl.SSLError) as exc:
            message = f'cannot load DH parameters "{spec.dhparam}" (ssl_dhparam): {exc}'
            raise ConfigError(message, where) from None
    if spec.ecdh_curve != "auto":
        _set_curve(context, spec.ecdh_curve, where)
    options |= ssl.OP_NO_RENEGOTIATION  # clients may not renegotiate, as in nginx
    if spec.prefer_server_ciphers:
        options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    else:
        options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE  # Python sets it; nginx's default is off
    context.options = options
    context.set_alpn_protocols(list(ALPN))


# The names OpenSSL's curve lists take (SSL_CTX_set1_curves_list) that Python's
# set_ecdh_curve knows by another: the NIST ones and the SEC names of two X9.62 curves.
_CURVE_ALIASES: Final = {
    "P-192": "prime192v1",
    "P-224": "secp224r1",
    "P-256": "prime256v1",
    "P-384": "secp384r1",
    "P-521": "secp521r1",
    "secp192r1": "prime192v1",
    "secp256r1": "prime256v1",
}


def _set_curve(context: ssl.SSLContext, curves: str, where: str) -> None:
    """``ssl_ecdh_curve``: one curve is set; a list (Python's ssl sets a single curve) is
    checked name by name, as nginx's ``SSL_CTX_set1_curves_list`` would refuse an unknown
    one, and leaves OpenSSL's default groups, which include the usual ones."""
    names = curves.split(":")
    target = context if len(names) == 1 else ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    for name in names:
        try:
            target.set_ecdh_curve(_CURVE_ALIASES.get(name, name))
        except (ValueError, ssl.SSLError):  # not a name, or not a curve (SHA256, RSA)
            message = f'unknown curve "{name}" in "ssl_ecdh_curve"'
            raise ConfigError(message, where) from None


def _read(path: str, what: str, where: str) -> bytes:
    try:
        return read_pem(path)
    except FileNotFoundError:
        reason = "no such file"
    except PermissionError:
        reason = "permission denied"
    except IsADirectoryError:
        reason = "is a directory"
    except OSError as exc:
        reason = exc.strerror or str(exc)
    raise ConfigError(f'cannot load {what} "{path}": {reason}', where)


def _no_password() -> bytes:
    return b""  # never prompt on a terminal; an encrypted key is refused before this


def _load_certificate(context: ssl.SSLContext, spec: TlsSpec, where: str) -> None:
    """Load the chain and key, naming the file at fault (ngx_ssl_certificate's wording)."""
    cert, key = spec.certificate, spec.certificate_key
    cert_pem = _read(cert, "certificate", where)
    key_pem = _read(key, "certificate key", where)
    if b"-----BEGIN CERTIFICATE-----" not in cert_pem:
        raise ConfigError(f'cannot load certificate "{cert}": no PEM certificate in it', where)
    if b"PRIVATE KEY-----" not in key_pem:
        raise ConfigError(f'cannot load certificate key "{key}": no PEM private key in it', where)
    if b"ENCRYPTED" in key_pem:
        raise ConfigError(
            f'cannot load certificate key "{key}": it is protected by a passphrase,'
            " which nonstop does not read (ssl_password_file is not supported)",
            where,
        )
    try:
        with pem_path(cert) as chain, pem_path(key) as secret:
            context.load_cert_chain(chain, secret, password=_no_password)
    except ssl.SSLError as exc:
        raise _certificate_error(exc, cert, cert_pem, key, where) from None
    except OSError as exc:  # the file changed between the read and the load
        raise ConfigError(f'cannot load certificate "{cert}": {exc}', where) from None


def _certificate_error(
    exc: ssl.SSLError, cert: str, cert_pem: bytes, key: str, where: str
) -> ConfigError:
    """Tell a bad chain from a bad key: OpenSSL says "PEM lib" for both."""
    if getattr(exc, "reason", None) == "KEY_VALUES_MISMATCH":
        return ConfigError(f'certificate "{cert}" does not match key "{key}"', where)
    try:
        probe = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        probe.load_verify_locations(cadata=cert_pem.decode("ascii", "replace"))
    except ssl.SSLError as cert_exc:
        return ConfigError(
            f'cannot load certificate "{cert}": not a valid PEM certificate chain'
            f" ({_reason(cert_exc)})",
            where,
        )
    return ConfigError(
        f'cannot load certificate key "{key}": not a valid PEM private key ({_reason(exc)})',
        where,
    )


def _reason(exc: ssl.SSLError) -> str:
    reason = getattr(exc, "reason", None) or str(exc.args[-1] if exc.args else exc)
    return re.sub(r"\s*\(_ssl\.c:\d+\)$", "", str(reason))


def make_context(spec: TlsSpec, where: str = "") -> ssl.SSLContext:
    """A context holding ``spec``'s certificate chain; raises ConfigError."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _configure(context, spec, where)
    _load_certificate(context, spec, where)
    return context


class _Front:
    """The context a listener keeps for good; every handshake is switched by SNI."""

    __slots__ = ("context", "table")

    def __init__(self, table: SniTable[ssl.SSLContext]) -> None:
        self.table = table
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.sslobject_class = DirectSSLObject
        self.context.sni_callback = self._select

    def _select(
        self, conn: ssl.SSLObject | ssl.SSLSocket, server_name: str | None, _: ssl.SSLContext
    ) -> None:
        conn.context = self.table.choose(server_name)


@dataclass(frozen=True, slots=True)
class _Plan:
    """One listen address of a validated config: its default's settings and its table."""

    spec: TlsSpec
    where: str
    table: SniTable[ssl.SSLContext]


def _where(block: ServerBlock) -> str:
    return str(block.source or "")


def _absorbed(keys: list[Key]) -> dict[Key, list[Key]]:
    """Listen addresses in the order their servers are consulted for each bound address.

    A wildcard ``0.0.0.0:443`` is bound in place of ``127.0.0.1:443`` (see
    ``ProxyServer._bind_keys``); the SNI callback cannot see the local address, so
    the wildcard's table also holds the absorbed address's names, after its own.
    """
    out: dict[Key, list[Key]] = {key: [key] for key in keys}
    for host, port in keys:
        wild = ("::" if ":" in host else "0.0.0.0", port)
        if (host, port) != wild and wild in out:
            out[wild].append((host, port))
    return out


class TlsContexts:
    """Front contexts for every ssl listen address, with SNI selection among its servers."""

    def __init__(self) -> None:
        self._fronts: dict[Key, _Front] = {}

    def load(self, config: Config) -> None:
        """Read every certificate of ``config``, then switch to them all at once.

        Raises ConfigError naming the file and the server block's location; nothing
        changes then, and listeners keep serving the certificates they had.
        """
        plans = self._plan(config)
        fronts: dict[Key, _Front] = {}
        for key, plan in plans.items():
            front = self._fronts.get(key)
            if front is None:
                front = _Front(plan.table)
            _configure(front.context, plan.spec, plan.where)  # validated by _plan
            front.table = plan.table
            fronts[key] = front
        self._fronts = fronts

    def context_for(self, key: Key) -> ssl.SSLContext | None:
        front = self._fronts.get(key)
        return front.context if front is not None else None

    @staticmethod
    def _plan(config: Config) -> dict[Key, _Plan]:
        contexts: dict[TlsSpec, ssl.SSLContext] = {}
        servers: dict[Key, list[tuple[ServerBlock, Listen]]] = {}
        for block in config.servers:
            for listen in block.listens:
                if not listen.ssl:
                    continue
                if block.tls is None:
                    raise ConfigError(
                        'no "ssl_certificate" is defined for the "listen ... ssl" directive',
                        _where(block),
                    )
                if block.tls not in contexts:
                    contexts[block.tls] = make_context(block.tls, _where(block))
                servers.setdefault(listen.key, []).append((block, listen))
        plans: dict[Key, _Plan] = {}
        for key, order in _absorbed(list(servers)).items():
            own = servers[key]
            default = next((b for b, listen in own if listen.default_server), own[0][0])
            assert default.tls is not None
            entries = [
                (block.server_names, contexts[block.tls])
                for other in order
                for block, _ in servers[other]
                if block.tls is not None
            ]
            table = SniTable(entries, contexts[default.tls])
            plans[key] = _Plan(default.tls, _where(default), table)
        return plans
