"""Reading satisfy, auth_basic, limit_req and limit_conn from nginx.conf.

As nginx reads them (ngx_http_core_module.c for ``satisfy``, ngx_http_auth_basic_module.c,
ngx_http_limit_req_module.c, ngx_http_limit_conn_module.c): the zone directives live in
``http``; the others at any of http, server and location, each inherited from the
innermost level that writes it, and ``limit_req``/``limit_conn`` as one list (a level
with one of its own inherits none).  ``auth_basic_user_file`` is read here, when the
configuration is loaded or reloaded; nginx reads it again on every request.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from nonstop.config.model import AuthBasic, LimitReq, Limits, LimitZone
from nonstop.config.template import compile_template
from nonstop.config.units import parse_size
from nonstop.errors import ConfigError

if TYPE_CHECKING:
    from nonstop.config.nginxconf import Directive

__all__ = ["LIMIT_LOG_LEVELS", "LimitsReader", "parse_htpasswd"]

LIMIT_LOG_LEVELS = ("info", "notice", "warn", "error")
_MIN_ZONE = 8 * 4096  # nginx: eight pages
_NODELAY = (2**63 - 1) // 1000 * 1000  # nginx's NGX_MAX_INT_T_VALUE / 1000, in milli-requests

# the directives of each level, by name (nginxconf's _inherit over its levels)
Lookup = Callable[[str], "list[Directive] | None"]


def parse_htpasswd(text: str) -> tuple[tuple[str, str], ...]:
    """``user:hash[:comment]`` lines as ngx_http_auth_basic_handler reads them: ``#``
    comments, the hash ending at ``:`` or the line's end; the first line of a user wins."""
    users: dict[str, str] = {}
    for line in text.split("\n"):
        if not line or line[0] in "#\r":
            continue
        name, colon, rest = line.partition(":")
        if not colon:
            continue
        password = rest.split(":", 1)[0].split("\r", 1)[0]
        users.setdefault(name, password)
    return tuple(users.items())


@dataclass
class LimitsReader:
    """What one configuration's levels say about access limits; remembers the zones and
    each password file it read."""

    conf_path: Callable[[str], str]
    notices: list[str] = field(default_factory=list)  # the config's "no effect" notices
    zones: dict[str, LimitZone] = field(default_factory=dict)
    files: dict[str, tuple[tuple[str, str], ...]] = field(default_factory=dict)
    used: list[tuple[str, bool, Directive]] = field(default_factory=list)  # (zone, is_req, d)

    # -- http: the zones ------------------------------------------------------------

    def zone(self, d: Directive) -> LimitZone:
        """``limit_req_zone KEY zone=NAME:SIZE rate=R [sync]`` or ``limit_conn_zone KEY
        zone=NAME:SIZE``."""
        is_req = d.name == "limit_req_zone"
        name, size, rate, sync = "", 0, 1000, False
        for arg in d.args[1:]:
            if arg.startswith("zone="):
                name, size = self._zone_spec(d, arg[5:])
            elif is_req and arg.startswith("rate="):
                rate = self._rate(d, arg)
            elif is_req and arg == "sync":
                sync = True
                self.notices.append(
                    f'"sync" of limit_req_zone has no effect in nonstop ({d.where})'
                )
            else:
                raise ConfigError(f'invalid parameter "{arg}"', d.where)
        if not name:
            raise ConfigError(f'"{d.name}" must have "zone" parameter', d.where)
        try:
            key = compile_template(d.args[0])
        except ValueError as exc:
            raise ConfigError(str(exc), d.where) from exc
        known = self.zones.get(name)
        if known is not None:
            if (known.rate > 0) != is_req:
                raise ConfigError(
                    f'the shared memory zone "{name}" is already declared for a different use',
                    d.where,
                )
            raise ConfigError(
                f'{d.name} "{name}" is already bound to key "{known.key.raw}"', d.where
            )
        zone = LimitZone(name, key, size, rate if is_req else 0, sync, d.source)
        self.zones[name] = zone
        return zone

    def _zone_spec(self, d: Directive, spec: str) -> tuple[str, int]:
        name, colon, raw = spec.partition(":")
        if not name:
            raise ConfigError(f'invalid zone name "{spec}"', d.where)
        if not colon:
            raise ConfigError(f'invalid zone size "{spec}"', d.where)
        try:
            size = parse_size(raw)
        except ValueError:
            raise ConfigError(f'invalid zone size "{spec}"', d.where) from None
        if size < _MIN_ZONE:
            raise ConfigError(f'zone "{name}" is too small', d.where)
        return name, size

    @staticmethod
    def _rate(d: Directive, arg: str) -> int:
        raw, scale = arg[5:], 1
        if raw.endswith("r/s"):
            raw = raw[:-3]
        elif raw.endswith("r/m"):
            raw, scale = raw[:-3], 60
        if not raw.isdigit() or int(raw) <= 0:
            raise ConfigError(f'invalid rate "{arg}"', d.where)
        return int(raw) * 1000 // scale

    def check_zones(self) -> None:
        """Every zone a ``limit_req``/``limit_conn`` names is declared, for its use
        (nginx says so when it creates the shared memory)."""
        for name, is_req, d in self.used:
            zone = self.zones.get(name)
            if zone is None:
                raise ConfigError(f'zero size shared memory zone "{name}"', d.where)
            if (zone.rate > 0) != is_req:
                raise ConfigError(
                    f'the shared memory zone "{name}" is already declared for a different use',
                    d.where,
                )

    # -- http, server, location -----------------------------------------------------

    def limits(self, lookup: Lookup) -> Limits:
        """The limits of a level, ``lookup`` finding each directive where it is inherited
        from."""
        reqs = tuple(self._limit_reqs(lookup("limit_req") or []))
        conns = tuple(self._limit_conns(lookup("limit_conn") or []))
        return Limits(
            satisfy_any=self._satisfy(lookup("satisfy")),
            auth=self._auth(lookup("auth_basic"), lookup("auth_basic_user_file")),
            reqs=reqs,
            req_status=self._status(lookup("limit_req_status")),
            req_log_level=self._level(lookup("limit_req_log_level")),
            req_dry_run=self._flag(lookup("limit_req_dry_run")),
            conns=conns,
            conn_status=self._status(lookup("limit_conn_status")),
            conn_log_level=self._level(lookup("limit_conn_log_level")),
            conn_dry_run=self._flag(lookup("limit_conn_dry_run")),
        )

    @staticmethod
    def _satisfy(found: Sequence[Directive] | None) -> bool:
        if not found:
            return False
        d = found[0]
        if d.args[0] not in ("all", "any"):
            raise ConfigError(f'invalid value "{d.args[0]}" in "satisfy" directive', d.where)
        return d.args[0] == "any"

    def _auth(
        self, realm: Sequence[Directive] | None, user_file: Sequence[Directive] | None
    ) -> AuthBasic | None:
        """nginx checks a password only when both a realm (not ``off``) and a file are
        set; the file is read once per load, and a file that cannot be read is an error
        at its ``auth_basic_user_file`` line."""
        if not realm or realm[0].args[0] == "off" or not user_file:
            return None
        if "$" in realm[0].args[0]:
            raw_realm = realm[0].args[0]
            message = f'auth_basic "{raw_realm}" with variables is outside the subset'
            raise ConfigError(message, realm[0].where)
        d = user_file[0]
        raw = d.args[0]
        if "$" in raw:
            raise ConfigError(
                f'auth_basic_user_file "{raw}" with variables is outside the subset', d.where
            )
        path = self.conf_path(raw)
        users = self.files.get(path)
        if users is None:
            try:
                with open(path, encoding="utf-8", errors="surrogateescape") as handle:
                    users = parse_htpasswd(handle.read())
            except OSError as exc:
                message = f'open() "{path}" failed ({exc.errno}: {exc.strerror})'
                raise ConfigError(message, d.where) from exc
            self.files[path] = users
        return AuthBasic(realm[0].args[0], path, users)

    def _limit_reqs(self, found: list[Directive]) -> list[LimitReq]:
        out: list[LimitReq] = []
        for d in found:
            zone, burst, delay = "", 0, 0
            for arg in d.args:
                if arg.startswith("zone="):
                    zone = arg[5:].partition(":")[0]
                elif arg.startswith("burst="):
                    burst = self._positive(d, arg, "burst")
                elif arg.startswith("delay="):
                    delay = self._positive(d, arg, "delay")
                elif arg == "nodelay":
                    delay = _NODELAY
                else:
                    raise ConfigError(f'invalid parameter "{arg}"', d.where)
            if not zone:
                raise ConfigError('"limit_req" must have "zone" parameter', d.where)
            if any(limit.zone == zone for limit in out):
                raise ConfigError('"limit_req" directive is duplicate', d.where)
            self.used.append((zone, True, d))
            scale = 1 if delay == _NODELAY else 1000
            out.append(LimitReq(zone, burst * 1000, delay * scale))
        return out

    @staticmethod
    def _positive(d: Directive, arg: str, what: str) -> int:
        raw = arg.partition("=")[2]
        if not raw.isdigit() or int(raw) <= 0:
            raise ConfigError(f'invalid {what} value "{arg}"', d.where)
        return int(raw)

    def _limit_conns(self, found: list[Directive]) -> list[tuple[str, int]]:
        out: list[tuple[str, int]] = []
        for d in found:
            zone, raw = d.args
            if not raw.isdigit() or not 0 < int(raw) <= 65535:
                raise ConfigError(f'invalid number of connections "{raw}"', d.where)
            if any(name == zone for name, _ in out):
                raise ConfigError('"limit_conn" directive is duplicate', d.where)
            self.used.append((zone, False, d))
            out.append((zone, int(raw)))
        return out

    @staticmethod
    def _status(found: Sequence[Directive] | None) -> int:
        if not found:
            return 503
        d = found[0]
        raw = d.args[0]
        if not raw.isdigit():
            raise ConfigError(f'"{d.name}" directive invalid number "{raw}"', d.where)
        if not 400 <= int(raw) <= 599:
            raise ConfigError("value must be between 400 and 599", d.where)
        return int(raw)

    @staticmethod
    def _level(found: Sequence[Directive] | None) -> str:
        if not found:
            return "error"
        d = found[0]
        if d.args[0] not in LIMIT_LOG_LEVELS:
            raise ConfigError(f'invalid value "{d.args[0]}"', d.where)
        return d.args[0]

    @staticmethod
    def _flag(found: Sequence[Directive] | None) -> bool:
        if not found:
            return False
        d = found[0]
        if d.args[0] not in ("on", "off"):
            message = (
                f'invalid value "{d.args[0]}" in "{d.name}" directive, it must be "on" or "off"'
            )
            raise ConfigError(message, d.where)
        return d.args[0] == "on"
