"""``charset``: "; charset=NAME" added to a response's Content-Type (ngx_http_charset_filter).

Only for the types of ``charset_types`` (nginx's default list, or "*" for any), and only
when the type names no charset yet: an upstream's own charset is kept.  nonstop does not
recode bodies, so the config refuses a ``source_charset`` different from ``charset``.
Pure; a route without ``charset`` never calls it.
"""

from __future__ import annotations

__all__ = ["Charset", "content_type", "for_status", "header_lines"]


class Charset:
    """A route's charset and the MIME types it applies to (lowercase; "*": all)."""

    __slots__ = ("any", "name", "types")

    def __init__(self, name: str, types: tuple[str, ...]) -> None:
        self.name = name.encode("latin-1")
        self.any = "*" in types
        self.types = frozenset(t.lower().encode("latin-1") for t in types)


def for_status(charset: Charset | None, status: int) -> Charset | None:
    """The charset an answer with ``status`` gets: none for a 301 or 302, whoever made
    it (ngx_http_charset_header_filter leaves redirects alone)."""
    return None if status == 301 or status == 302 else charset


def content_type(value: bytes, charset: Charset) -> bytes:
    """A Content-Type value with the charset added where nginx adds it."""
    mime, _, params = value.partition(b";")
    if b"charset=" in params.lower():
        return value
    if not charset.any and mime.strip().lower() not in charset.types:
        return value
    return value.rstrip() + b"; charset=" + charset.name


def header_lines(flat: list[bytes], charset: Charset) -> list[bytes]:
    """Header parts (name, ": ", value, CRLF, ...) with the Content-Type's charset added."""
    for i in range(0, len(flat), 4):
        if flat[i].lower() == b"content-type":
            value = content_type(flat[i + 2], charset)
            if value is not flat[i + 2]:
                flat = [*flat[: i + 2], value, *flat[i + 3 :]]
            break
    return flat
