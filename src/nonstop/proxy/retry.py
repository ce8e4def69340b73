"""Retry policy: whether a failed attempt may go to the next upstream server.

nginx's ``proxy_next_upstream`` (ngx_http_upstream_next and ngx_http_upstream_test_next):
which failures are retried (``error``, ``timeout``, ``invalid_header`` and the listed
``http_*`` statuses), within ``proxy_next_upstream_tries`` and
``proxy_next_upstream_timeout``, a request that was sent only if its body is still whole
and, unless ``non_idempotent`` is listed, its method is idempotent.  Pure decisions on an
``Exchange``; ``ClientConnection`` acts on them.
"""

from __future__ import annotations

from typing import Final

from nonstop.proxy.exchange import Exchange
from nonstop.proxy.request import Request
from nonstop.proxy.upstream import Outcome

__all__ = ["NON_IDEMPOTENT", "failure_status", "may_retry", "status_outcome", "status_retry"]

NON_IDEMPOTENT: Final = frozenset({b"POST", b"LOCK", b"PATCH"})

_STATUS_MASK: Final = {
    500: "http_500",
    502: "http_502",
    503: "http_503",
    504: "http_504",
    403: "http_403",
    404: "http_404",
    429: "http_429",
}


def status_retry(status: int, next_upstream: frozenset[str]) -> str:
    """The proxy_next_upstream condition an upstream's ``status`` meets, or "" (not
    listed, or not a status nginx retries on)."""
    if status >= 403 and status in _STATUS_MASK:  # (403 is the lowest listed)
        mask = _STATUS_MASK[status]
        if mask in next_upstream:
            return mask
    return ""


def status_outcome(status: int) -> Outcome:
    """How a retried status counts for its peer: 403 and 404 are no failure."""
    return Outcome.NEXT if status == 403 or status == 404 else Outcome.FAILED


def may_retry(ex: Exchange, req: Request, now: float, spare: int = 0) -> bool:
    """nginx's retry test; ``spare`` 1 for a status retry, which needs tries > 1."""
    route = ex.route
    attempt = ex.attempt
    if route is None or attempt is None or attempt.tries_left <= spare:
        return False
    if route.next_timeout and now - ex.first_try >= route.next_timeout:
        return False
    if ex.request_sent and not ex.body_retained:
        return False
    return not (
        ex.request_sent
        and req.method in NON_IDEMPOTENT
        and "non_idempotent" not in route.next_upstream
    )


def failure_status(kind: str) -> int:
    """The status a failed exchange answers when no retry is left: 504 for a timeout."""
    return 504 if kind == "timeout" or kind == "http_504" else 502
