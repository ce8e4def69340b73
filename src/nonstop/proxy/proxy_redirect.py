"""Rewriting a proxied response's Location, Refresh and Set-Cookie, as nginx's proxy
module does (ngx_http_proxy_rewrite_redirect, ngx_http_proxy_rewrite_cookie).

Each rule is a text pattern (variables allowed) or a regex, and a replacement; the first
rule that matches rewrites, the others are not tried.  A text pattern of proxy_redirect
and proxy_cookie_path matches a prefix, case-sensitively, and only that prefix is
replaced; one of proxy_cookie_domain matches the whole domain, caselessly, a leading "."
of the cookie's domain aside (it stays).  A regex rule replaces the whole value, and its
replacement may use the captures.  Refresh is rewritten after its "url=", and a cookie's
``path=`` and ``domain=`` attributes each by their own rules.  Pure: values in, values out.
"""

from __future__ import annotations

import re
from typing import Final

from nonstop.config.model import HeaderRewrite
from nonstop.config.rewrite import compile_regex
from nonstop.proxy.request import Request
from nonstop.proxy.responses import absolute_url
from nonstop.proxy.variables import Getter, VariableTable, set_captures

__all__ = ["Rule", "compile_rules", "rewrite_cookie", "rewrite_redirect", "rewrite_refresh"]

PREFIX: Final = 0
DOMAIN: Final = 1


class Rule:
    """One rewrite rule, compiled."""

    __slots__ = ("pattern", "regex", "replacement")

    def __init__(self, rule: HeaderRewrite, table: VariableTable, where: str) -> None:
        self.pattern: Getter | None = (
            table.compile(rule.pattern, where) if rule.pattern is not None else None
        )
        self.regex: re.Pattern[str] | None = (
            compile_regex(rule.regex) if rule.regex is not None else None
        )
        self.replacement = table.compile(rule.replacement, where)


def compile_rules(
    rules: tuple[HeaderRewrite, ...], table: VariableTable, where: str
) -> tuple[Rule, ...]:
    return tuple(Rule(rule, table, where) for rule in rules)


def _apply(rules: tuple[Rule, ...], value: str, req: Request, how: int) -> str | None:
    """The value the first matching rule makes of ``value``; None when none matched."""
    for rule in rules:
        regex = rule.regex
        if regex is not None:
            found = regex.search(value)
            if found is None:
                continue
            set_captures(req, found)
            return rule.replacement(req)
        assert rule.pattern is not None
        pattern = rule.pattern(req)
        if how == DOMAIN:
            dot = "." if value.startswith(".") else ""
            if value[len(dot) :].lower() != pattern.lower():
                continue
            return dot + rule.replacement(req)
        if value.startswith(pattern):
            return rule.replacement(req) + value[len(pattern) :]
    return None


def rewrite_redirect(rules: tuple[Rule, ...], value: bytes, req: Request) -> bytes:
    """A Location header's value after proxy_redirect; one it rewrote to a path is then
    made absolute, as nginx's header filter does with the Location it set."""
    text = value.decode("latin-1")
    done = _apply(rules, text, req, PREFIX)
    if done is None:
        return value
    if done.startswith("/"):
        done = absolute_url(req.scheme, req.host or req.server_name, req.server_port, done)
    return done.encode("latin-1")


def rewrite_refresh(rules: tuple[Rule, ...], value: bytes, req: Request) -> bytes:
    """A Refresh header's value: what follows its "url=" (any case) after proxy_redirect."""
    at = value.lower().find(b"url=")
    if at < 0:
        return value
    text = value[at + 4 :].decode("latin-1")
    done = _apply(rules, text, req, PREFIX)
    return value if done is None else value[: at + 4] + done.encode("latin-1")


def rewrite_cookie(
    paths: tuple[Rule, ...], domains: tuple[Rule, ...], value: bytes, req: Request
) -> bytes:
    """A Set-Cookie value with its path= and domain= attributes rewritten."""
    parts = value.decode("latin-1").split(";")
    changed = False
    for i in range(1, len(parts)):
        key, eq, attr = parts[i].partition("=")
        name = key.strip().lower()
        if not eq or name not in ("path", "domain"):
            continue
        rules, how = (paths, PREFIX) if name == "path" else (domains, DOMAIN)
        done = _apply(rules, attr, req, how) if rules else None
        if done is not None:
            parts[i] = key + eq + done
            changed = True
    return ";".join(parts).encode("latin-1") if changed else value
