"""TLS termination: one ``ssl.SSLContext`` per listen address, certificates by SNI.

Certificates are loaded in ``load`` before anything is swapped, so a missing or mismatched
certificate is an error at start and on reload leaves the old contexts in place.
"""

from __future__ import annotations

import ssl

from nonstop.config.model import Config, TlsSpec
from nonstop.errors import ConfigError

__all__ = ["TlsContexts", "make_context"]

_VERSIONS = {
    "TLSv1": ssl.TLSVersion.TLSv1,
    "TLSv1.1": ssl.TLSVersion.TLSv1_1,
    "TLSv1.2": ssl.TLSVersion.TLSv1_2,
    "TLSv1.3": ssl.TLSVersion.TLSv1_3,
}


def make_context(spec: TlsSpec, where: str = "") -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    versions = sorted(_VERSIONS[p] for p in spec.protocols if p in _VERSIONS)
    if versions:
        context.minimum_version = versions[0]
        context.maximum_version = versions[-1]
    if spec.ciphers:
        try:
            context.set_ciphers(spec.ciphers)
        except ssl.SSLError as exc:
            raise ConfigError(f'invalid ssl_ciphers "{spec.ciphers}": {exc}', where) from exc
    if spec.prefer_server_ciphers:
        context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    context.set_alpn_protocols(["http/1.1"])
    try:
        context.load_cert_chain(spec.certificate, spec.certificate_key)
    except FileNotFoundError as exc:
        raise ConfigError(f'cannot load certificate "{exc.filename}": no such file', where) from exc
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(
            f'cannot load certificate "{spec.certificate}" with key "{spec.certificate_key}": '
            f"{exc}",
            where,
        ) from exc
    return context


class TlsContexts:
    """Contexts for every ssl listen address, with SNI selection among its servers."""

    def __init__(self) -> None:
        self._by_listen: dict[tuple[str, int], ssl.SSLContext] = {}
        self._sni: dict[tuple[str, int], dict[str, ssl.SSLContext]] = {}

    def load(self, config: Config) -> None:
        by_listen: dict[tuple[str, int], ssl.SSLContext] = {}
        sni: dict[tuple[str, int], dict[str, ssl.SSLContext]] = {}
        cache: dict[TlsSpec, ssl.SSLContext] = {}
        for block in config.servers:
            ssl_listens = [listen for listen in block.listens if listen.ssl]
            if not ssl_listens:
                continue
            if block.tls is None:
                raise ConfigError(
                    'no "ssl_certificate" is defined for the listen ... ssl directive',
                    str(block.source or ""),
                )
            context = cache.get(block.tls)
            if context is None:
                context = cache[block.tls] = make_context(block.tls, str(block.source or ""))
            for listen in ssl_listens:
                if listen.key not in by_listen or listen.default_server:
                    by_listen.setdefault(listen.key, context)
                    if listen.default_server:
                        by_listen[listen.key] = context
                names = sni.setdefault(listen.key, {})
                for name in block.server_names:
                    names.setdefault(name.lower(), context)
        for key, context in by_listen.items():
            names = sni.get(key, {})
            if len(set(map(id, names.values())) | {id(context)}) > 1:
                context.sni_callback = _selector(names)
        # Existing listeners keep their context object; swap certificates in place.
        for key, context in by_listen.items():
            old = self._by_listen.get(key)
            if old is not None:
                self._by_listen[key] = context
        self._by_listen = by_listen
        self._sni = sni

    def context_for(self, key: tuple[str, int]) -> ssl.SSLContext | None:
        return self._by_listen.get(key)


def _selector(names: dict[str, ssl.SSLContext]):  # type: ignore[no-untyped-def]
    def choose(sock: ssl.SSLObject, server_name: str | None, _ctx: ssl.SSLContext) -> None:
        if server_name:
            chosen = names.get(server_name.lower())
            if chosen is None:
                for name, context in names.items():
                    if name.startswith("*.") and server_name.lower().endswith(name[1:]):
                        chosen = context
                        break
            if chosen is not None:
                sock.context = chosen

    return choose
