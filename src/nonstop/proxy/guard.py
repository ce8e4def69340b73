"""A location's gate: ``limit_req``, ``limit_conn``, ``allow``/``deny``, ``auth_basic``.

In nginx's phase order: the preaccess phase (limit_req, then limit_conn) counts a
request once, even when ``error_page`` sends it on to another location; the access phase
(allow/deny, then auth_basic) runs for every location it reaches, combined by
``satisfy`` as ngx_http_core_access_phase does: with ``all`` the first refusal answers
(403 from the rules, 401 from auth_basic), with ``any`` the first that grants access
lets the request in and otherwise a 401 from auth_basic outranks a 403.

``check`` returns 0 to go on, ``DELAY`` when limit_req wants the request to wait
(``req.limit_delay`` seconds; the caller waits on a timer and calls ``check`` again),
or the status to answer.  A location none of these directives apply to has no Guard,
so the request path pays nothing for them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from typing import TYPE_CHECKING, Any, Final

from nonstop.config.model import AccessRule, LimitReq, Limits
from nonstop.proxy.access import Access, compile_access
from nonstop.proxy.limits import (
    BUSY,
    OK,
    ConnZone,
    RequestZone,
    Zones,
    limit_requests,
    release,
)
from nonstop.proxy.passwords import check_password
from nonstop.proxy.variables import Getter, VariableTable

if TYPE_CHECKING:
    from nonstop.proxy.request import Request

__all__ = ["DELAY", "Guard", "compile_guard"]

DELAY: Final = 1
_VERIFIED_MAX: Final = 4096  # remembered valid credentials per location, then forgotten
_DELAY_LEVEL: Final = {"info": "info", "notice": "info", "warn": "notice", "error": "warn"}


class Guard:
    __slots__ = (
        "access",
        "challenge",
        "conn_dry_run",
        "conn_level",
        "conn_status",
        "conns",
        "realm",
        "req_dry_run",
        "req_level",
        "req_status",
        "reqs",
        "satisfy_any",
        "users",
        "verified",
    )

    def __init__(
        self,
        access: Access | None,
        limits: Limits,
        reqs: list[tuple[RequestZone, LimitReq, Getter]],
        conns: list[tuple[ConnZone, int, Getter]],
    ) -> None:
        self.access = access
        self.satisfy_any = limits.satisfy_any
        auth = limits.auth
        self.realm = auth.realm if auth is not None else None
        self.users: dict[str, str] = dict(auth.users) if auth is not None else {}
        # SHA-256 of Authorization headers found valid: crypt() is checked once per
        # credential and configuration (a bcrypt or yescrypt hash costs 50-150 ms of
        # the loop); a wrong password is hashed every time, as nginx hashes each one
        self.verified: set[bytes] = set()
        # as ngx_http_auth_basic_set_realm writes it: the realm as configured, unescaped
        self.challenge = f'WWW-Authenticate: Basic realm="{self.realm}"\r\n'.encode()
        self.reqs = reqs
        self.req_status = limits.req_status
        self.req_level = limits.req_log_level
        self.req_dry_run = limits.req_dry_run
        self.conns = conns
        self.conn_status = limits.conn_status
        self.conn_level = limits.conn_log_level
        self.conn_dry_run = limits.conn_dry_run

    def check(self, conn: Any, req: Request) -> int:
        if self.reqs and not req.limit_req_done:
            req.limit_req_done = True
            code = self._limit_req(conn, req)
            if code:
                return code
        if self.conns and not req.limit_conn_done:
            req.limit_conn_done = True
            code = self._limit_conn(conn, req)
            if code:
                return code
        return self._access(conn, req)

    # -- preaccess --------------------------------------------------------------------

    def _limit_req(self, conn: Any, req: Request) -> int:
        state = conn.state
        now = int(state.now() * 1000)
        keys = [(z, limit, key(req)) for z, limit, key in self.reqs]
        for i, (z, limit, key) in enumerate(keys):
            if len(key) > 65535:
                message = f'the value of the "{z.spec.key.raw}" key is more than 65535 bytes'
                state.log_error("error", _context(message, conn, req))
                keys[i] = (z, limit, "")  # not counted, as in nginx
        rc, excess, zone, delay = limit_requests(keys, now)
        dry = ", dry run" if self.req_dry_run else ""
        shown = f"{excess // 1000}.{excess % 1000:03d}"
        if rc >= BUSY:
            if rc == BUSY:
                message = f'limiting requests{dry}, excess: {shown} by zone "{zone}"'
                state.log_error(self.req_level, _context(message, conn, req))
            return 0 if self.req_dry_run else self.req_status
        if rc != OK or not delay:
            return 0
        message = f'delaying request{dry}, excess: {shown}, by zone "{zone}"'
        state.log_error(_DELAY_LEVEL[self.req_level], _context(message, conn, req))
        if self.req_dry_run:
            return 0
        req.limit_delay = delay / 1000
        return DELAY

    def _limit_conn(self, conn: Any, req: Request) -> int:
        holds: list[tuple[ConnZone, str]] = []
        for zone, most, key_of in self.conns:
            key = key_of(req)
            if not key or len(key) > 255:
                continue
            rc = zone.acquire(key, most)
            if rc != OK:
                release(holds)
                if rc == BUSY:
                    dry = ", dry run" if self.conn_dry_run else ""
                    message = f'limiting connections{dry} by zone "{zone.name}"'
                    conn.state.log_error(self.conn_level, _context(message, conn, req))
                return 0 if self.conn_dry_run else self.conn_status
            holds.append((zone, key))
        if holds:
            conn.holds = holds
        return 0

    # -- access -----------------------------------------------------------------------

    def _access(self, conn: Any, req: Request) -> int:
        """allow/deny, then auth_basic, combined by ``satisfy``."""
        access = self.access
        found = 0  # the status a refusal answers with (satisfy any)
        if access is not None:
            verdict = access.verdict(conn.remote_bytes)
            if verdict == 1 and self.satisfy_any:
                return 0
            if verdict == -1:
                if not self.satisfy_any:
                    conn.state.log_error("error", _context("access forbidden by rule", conn, req))
                    return 403
                found = 403
        if self.realm is not None:
            if self._authorized(conn, req):
                return 0
            return 401
        if found:
            conn.state.log_error("error", _context("access forbidden by rule", conn, req))
        return found

    def _authorized(self, conn: Any, req: Request) -> bool:
        """Basic credentials for a user of the file (ngx_http_auth_basic_handler)."""
        header = req.header(b"authorization")
        if header is None:
            header = b""
        token = hashlib.sha256(header).digest()
        if token in self.verified:
            return True
        user, password = _credentials(header)
        if user is None:
            message = "no user/password was provided for basic authentication"
            conn.state.log_error("info", _context(message, conn, req))
            return False
        stored = self.users.get(user)
        if stored is None:
            message = f'user "{user}" was not found in "{self.realm}"'
            conn.state.log_error("error", _context(message, conn, req))
            return False
        if not check_password(password, stored):
            message = f'user "{user}": password mismatch'
            conn.state.log_error("error", _context(message, conn, req))
            return False
        if len(self.verified) >= _VERIFIED_MAX:
            self.verified.clear()
        self.verified.add(token)
        return True


def _credentials(header: bytes) -> tuple[str | None, bytes]:
    """``Basic BASE64(user:password)`` (ngx_http_auth_basic_user); (None, b"") if not."""
    if len(header) < 6 or header[:6].lower() != b"basic ":
        return None, b""
    encoded = header[6:].lstrip(b" ")
    try:
        decoded = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        return None, b""
    user, colon, password = decoded.partition(b":")
    if not colon:
        return None, b""
    return user.decode("utf-8", "surrogateescape"), password


def _context(message: str, conn: Any, req: Request) -> str:
    """nginx's error log context after a request's message."""
    host = req.http_host.decode("latin-1") if req.http_host is not None else ""
    return (
        f"{message}, client: {conn.remote_addr}, server: {req.server_name}, "
        f'request: "{req.request_line}", host: "{host}"'
    )


def compile_guard(
    rules: tuple[AccessRule, ...], limits: Limits, zones: Zones, table: VariableTable, where: str
) -> Guard | None:
    """A location's Guard, or None when nothing of it applies there."""
    access = compile_access(rules)
    if access is None and limits.auth is None and not limits.reqs and not limits.conns:
        return None
    reqs: list[tuple[RequestZone, LimitReq, Getter]] = []
    for limit in limits.reqs:
        req_zone = zones.reqs[limit.zone]
        reqs.append((req_zone, limit, table.compile(req_zone.spec.key, where)))
    conns: list[tuple[ConnZone, int, Getter]] = []
    for name, most in limits.conns:
        conn_zone = zones.conns[name]
        conns.append((conn_zone, most, table.compile(conn_zone.spec.key, where)))
    return Guard(access, limits, reqs, conns)
