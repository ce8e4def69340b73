"""``error_page``: which page answers a status, and the request it becomes.

nginx (ngx_http_send_error_page in src/http/ngx_http_special_response.c): a status the
server answers itself, or an upstream's when ``proxy_intercept_errors`` is on, is looked
up among the location's ``error_page`` codes.  A ``/uri`` target is an internal redirect
(the method becomes GET, except HEAD; the server's rewrite directives and the location
search run again), ``@name`` continues in that named location, anything else is a 302
(or the ``=`` code given if it is a redirect) to that URL.  The client gets the original
status, the ``=CODE`` given, or with a bare ``=`` the status of the page.  A page is
applied once per request (``recursive_error_pages off``).
"""

from __future__ import annotations

from typing import Any

from nonstop.config.model import ErrorPage
from nonstop.proxy.request import Request
from nonstop.proxy.uri import escape_uri
from nonstop.proxy.variables import Getter, VariableTable

__all__ = ["REDIRECTS", "Page", "compile_pages", "jump", "page_for", "redirect_to_page"]

REDIRECTS = (301, 302, 303, 307, 308)


class Page:
    """One code's page: where to go and which status to answer with."""

    __slots__ = ("overwrite", "target")

    def __init__(self, target: Getter, overwrite: int) -> None:
        self.target = target
        self.overwrite = overwrite


def compile_pages(
    pages: tuple[ErrorPage, ...], table: VariableTable, where: str
) -> dict[int, Page] | None:
    """code -> page; the first line naming a code wins, as in nginx's array search."""
    if not pages:
        return None
    out: dict[int, Page] = {}
    for page in pages:
        compiled = Page(table.compile(page.target, where), page.overwrite)
        for code in page.codes:
            out.setdefault(code, compiled)
    return out


def page_for(pages: dict[int, Page] | None, req: Request, code: int) -> Page | None:
    if pages is None or req.error_paged:
        return None
    return pages.get(code)


def redirect_to_page(req: Request, page: Page, code: int, owner: Any) -> tuple[int, str]:
    """Turn ``req`` into the request for ``page``.  Returns (status, Location): a status
    of 0 means the request was redirected internally and ``req.route`` is where it goes
    now; otherwise the caller answers with that redirect."""
    req.error_paged = True
    target = page.target(req)
    if not target.startswith(("/", "@")):
        status = page.overwrite if page.overwrite in REDIRECTS else 302
        return status, target
    req.err_status = code if page.overwrite < 0 else page.overwrite
    if req.method != b"HEAD" and not target.startswith("@"):
        req.method = b"GET"  # a named location keeps the method (ngx_http_send_error_page)
    req.content_length, req.chunked = -1, False  # a page is asked for without a body
    jump(req, target, owner)
    return 0, ""


def jump(req: Request, target: str, owner: Any) -> None:
    """An internal redirect of ``req`` to ``target`` (a URI or ``@name``) in the server
    ``owner``: ``req.route`` is where it goes; the caller starts it again."""
    req.ret_code, req.ret_text = 0, None
    req.forward = None
    req.internal = True
    if owner is None:
        req.ret_code = 500
        return
    if target.startswith("@"):
        route = owner.named.get(target)
        if route is None:
            req.ret_code = 500  # nginx: "could not find named location"
            req.route = owner.fallback
        else:
            req.route = owner.dispatch(req, route) if owner.entry is not None else route
        return
    path, _, args = target.partition("?")
    req.path, req.args = path, args
    route = owner.find(path, True)
    req.route = route
    if route.server is None and route.uri_replace is None:
        req.forward = (escape_uri(path) + ("?" + args if args else "")).encode("latin-1")
    else:
        req.rewritten = True
