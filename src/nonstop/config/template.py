"""Compiling strings with nginx ``$variables`` into ``Template`` parts.

The syntax is nginx's script syntax (src/http/ngx_http_script.c, ``ngx_http_script_compile``):
``$name`` runs while the characters are ``[A-Za-z0-9_]``; ``${name}`` delimits a name
followed by name characters (``${host}_x``); ``$1``..``$9`` are one digit each.  A ``$``
with no name after it is an error.
"""

from __future__ import annotations

from nonstop.config.model import Template

__all__ = ["compile_template", "is_name_char"]


def is_name_char(ch: str) -> bool:
    return ch == "_" or ("a" <= ch <= "z") or ("A" <= ch <= "Z") or ("0" <= ch <= "9")


def compile_template(raw: str) -> Template:
    """Split ``raw`` into literal and variable parts; raises ValueError when malformed."""
    parts: list[tuple[str, str]] = []
    literal: list[str] = []
    i, n = 0, len(raw)
    while i < n:
        ch = raw[i]
        if ch != "$":
            literal.append(ch)
            i += 1
            continue
        name, i = _read_name(raw, i + 1)
        if literal:
            parts.append(("lit", "".join(literal)))
            literal = []
        parts.append(("var", name))
    if literal:
        parts.append(("lit", "".join(literal)))
    return Template(raw=raw, parts=tuple(parts))


def _read_name(raw: str, start: int) -> tuple[str, int]:
    """Read a variable name starting just after ``$``; return it and the next index."""
    if start < len(raw) and raw[start] == "{":
        end = raw.find("}", start + 1)
        if end < 0:
            raise ValueError(f'the closing bracket in "{raw[start + 1 :]}" variable is missing')
        name = raw[start + 1 : end]
        if not name or not all(is_name_char(c) for c in name):
            raise ValueError(f'invalid variable name in "{raw}"')
        return name, end + 1
    if start < len(raw) and "1" <= raw[start] <= "9":
        return raw[start], start + 1  # a capture: one digit, "$10" is $1 then "0"
    end = start
    while end < len(raw) and is_name_char(raw[end]):
        end += 1
    if end == start:
        raise ValueError(f'invalid variable name in "{raw}"')
    return raw[start:end], end
