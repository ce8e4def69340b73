"""Two pieces of ``ssl`` that the TLS listeners adjust.

``DirectSSLObject``: ``TlsStream`` calls ``read``, ``write`` and ``pending`` on the
``ssl.SSLObject`` that ``SSLContext.wrap_bio`` returns, once or more per request.  Those
methods are Python wrappers that only forward to the C object the standard library keeps
in ``_sslobj``; this subclass binds the C methods onto the instance, so each call goes
straight to C.  Everything else is ``ssl.SSLObject`` unchanged.  It relies on
``SSLObject._create`` and ``_sslobj``, which CPython has kept since 3.7; if a future
version drops either, the standard object is used as it is.

``quiet_undecodable_sni``: see there.
"""

from __future__ import annotations

import ssl
import sys
from typing import Any

__all__ = ["DirectSSLObject", "quiet_undecodable_sni"]


class DirectSSLObject(ssl.SSLObject):
    @classmethod
    def _create(cls, *args: Any, **kwargs: Any) -> DirectSSLObject:
        self: DirectSSLObject = super()._create(*args, **kwargs)  # type: ignore[misc]
        inner = getattr(self, "_sslobj", None)
        if inner is not None:
            # Same signatures as the wrappers' (read(len[, buffer]), write(data), pending()).
            self.read = inner.read  # type: ignore[method-assign]
            self.write = inner.write  # type: ignore[method-assign]
            self.pending = inner.pending  # type: ignore[method-assign]
        return self


def quiet_undecodable_sni() -> None:
    """Keep a client's SNI that is not ASCII from printing a traceback per handshake.

    CPython decodes the name before the SNI callback runs; when that fails it reports
    the error through ``sys.unraisablehook`` (a traceback on stderr, whatever the error
    log level) and fails the handshake, which the TLS stream logs at ``info`` as nginx
    does.  Any client can send such a name, so this one report is dropped.
    """
    previous = sys.unraisablehook
    if getattr(previous, "_nonstop_sni", False):
        return

    def hook(unraisable: Any) -> None:
        if isinstance(unraisable.exc_value, UnicodeError) and isinstance(unraisable.object, bytes):
            return
        previous(unraisable)

    hook._nonstop_sni = True  # type: ignore[attr-defined]
    sys.unraisablehook = hook
