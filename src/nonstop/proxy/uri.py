"""Request targets as nginx reads them: ``$uri`` and ``$args`` from the raw target.

``parse_target`` follows ngx_http_parse_complex_uri (src/http/ngx_http_parse.c) with
``merge_slashes on``, in one pass: percent-decode, merge slashes and resolve dot segments
as the bytes come, so that a decoded ``/`` or ``.`` counts as one (``/a/%2e%2e/b`` is
``/b``).  A ``..`` that would climb above the root, a decoded NUL and a broken escape
make the request invalid (nginx answers 400).  A ``#`` ends the path (or the query);
decoded ``%``, ``#`` and ``?`` are kept as plain characters of the path.

The protocol runs it only for targets that need it (a ``%``, ``/.``, ``//`` or ``#``):
a clean origin-form path is its own ``$uri``.  ``escape_uri`` is nginx's
``ngx_escape_uri(..., NGX_ESCAPE_URI)``, used when a rewritten URI is forwarded.

``valid_host`` is ngx_http_validate_host (src/http/ngx_http_request.c): the Host header
or the authority of an absolute-form target, reduced to nginx's ``$host`` or refused.
"""

from __future__ import annotations

from typing import Final

__all__ = ["escape_uri", "needs_parse", "parse_target", "valid_host"]

USUAL: Final = 0
SLASH: Final = 1
DOT: Final = 2
DOT_DOT: Final = 3

_HEX: Final[dict[str, int]] = {c: int(c, 16) for c in "0123456789abcdefABCDEF"}


def needs_parse(path: bytes) -> bool:
    """True when ``path`` (the target before ``?``) is not already its own ``$uri``."""
    return b"%" in path or b"/." in path or b"//" in path or b"#" in path


def _up(out: list[str]) -> bool:
    """Resolve the ``/..`` that ``out`` ends with; False when it climbs above the root."""
    i = len(out) - 4
    while i >= 0 and out[i] != "/":
        i -= 1
    if i < 0:
        return False
    del out[i + 1 :]
    return True


def parse_target(target: str) -> tuple[str, str] | None:
    """``($uri, $args)`` of an origin-form target (latin-1 text), or None for a 400."""
    out: list[str] = []
    state = USUAL
    i = 0
    n = len(target)
    args_from = -1
    while i < n:
        ch = target[i]
        i += 1
        if ch == "%":
            if i + 1 >= n:
                return None
            high = _HEX.get(target[i], -1)
            low = _HEX.get(target[i + 1], -1)
            if high < 0 or low < 0:
                return None
            i += 2
            code = high * 16 + low
            if code == 0:
                return None
            ch = chr(code)
            if ch == "%" or ch == "#" or ch == "?":
                out.append(ch)  # a decoded delimiter is a plain character of the path
                state = USUAL
                continue
            # any other decoded character counts as if it had come unencoded
        elif ch == "?" or ch == "#":
            if state == DOT:
                out.pop()
            elif state == DOT_DOT and not _up(out):
                return None
            if ch == "?":
                args_from = i
            break
        if state == USUAL:
            out.append(ch)
            if ch == "/":
                state = SLASH
        elif state == SLASH:
            if ch == "/":
                continue  # merge_slashes
            out.append(ch)
            state = DOT if ch == "." else USUAL
        elif state == DOT:
            if ch == "/":
                out.pop()  # "/./" is "/"
                state = SLASH
            else:
                out.append(ch)
                state = DOT_DOT if ch == "." else USUAL
        elif ch == "/":  # DOT_DOT
            if not _up(out):
                return None
            state = SLASH
        else:
            out.append(ch)
            state = USUAL
    else:
        if state == DOT:
            out.pop()
        elif state == DOT_DOT and not _up(out):
            return None
    args = ""
    if args_from >= 0:
        end = target.find("#", args_from)
        args = target[args_from:] if end < 0 else target[args_from:end]
    return "".join(out), args


# ngx_escape_uri's NGX_ESCAPE_URI table: controls, space, "#", "%", "?", DEL and 8-bit.
_ESCAPED: Final = frozenset(chr(c) for c in [*range(0x21), 0x23, 0x25, 0x3F, *range(0x7F, 0x100)])


def escape_uri(uri: str) -> str:
    """Percent-encode what nginx encodes in a URI it forwards (upper-case hex)."""
    if not any(c in _ESCAPED for c in uri):
        return uri
    return "".join(f"%{ord(c):02X}" if c in _ESCAPED else c for c in uri)


def valid_host(value: bytes) -> str | None:
    """nginx's ``$host`` from a Host value: lower-cased, port and one trailing dot
    removed; None when nginx refuses it (empty, ``..``, ``/``, controls, space)."""
    host_len = len(value)
    dot = -2
    in_rest = False
    literal = False
    for i in range(len(value)):
        c = value[i]
        if c == 0x2E:  # "."
            if dot == i - 1:
                return None
            dot = i
        elif c == 0x3A:  # ":"
            if not in_rest and not literal:
                host_len = i
                in_rest = True
        elif c == 0x5B:  # "["
            if i == 0:
                literal = True
        elif c == 0x5D:  # "]"
            if literal and not in_rest:
                host_len = i + 1
                in_rest = True
        elif c == 0x2F or c <= 0x20 or c == 0x7F:
            return None
    if dot == host_len - 1:
        host_len -= 1
    if host_len <= 0:
        return None
    return value[:host_len].decode("latin-1").lower()
