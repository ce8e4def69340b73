"""``allow`` and ``deny``: whether a client address may have a location's answer.

As ngx_http_access_module: the rules are tried in order and the first that matches the
client decides; none matching allows.  An IPv4-mapped IPv6 client (``::ffff:a.b.c.d``)
is tested against the IPv4 rules, ``unix:`` matches clients on a unix socket and ``all``
every client.  Denied requests are answered 403 (where ``error_page`` may take over).
The access phase comes after the rewrite directives, so a ``return`` still answers.
"""

from __future__ import annotations

import ipaddress

from nonstop.config.model import AccessRule

__all__ = ["Access", "compile_access"]

_MAPPED = b"\0" * 10 + b"\xff\xff"


class Access:
    """The rules, as (allow, address length, network, mask) over packed addresses."""

    __slots__ = ("rules",)

    def __init__(self, rules: list[tuple[bool, int, int, int]]) -> None:
        self.rules = rules

    def verdict(self, client: bytes) -> int:
        """1 when an ``allow`` rule matched, -1 a ``deny``, 0 none (nginx then declines,
        which counts for ``satisfy``).  ``client`` is the packed address: 4 or 16 bytes,
        b"" on a unix socket."""
        if len(client) == 16 and client[:12] == _MAPPED:
            client = client[12:]
        size = len(client)
        value = int.from_bytes(client, "big")
        for allow, length, network, mask in self.rules:
            if length == -1 or (length == size and value & mask == network):
                return 1 if allow else -1
        return 0


def compile_access(rules: tuple[AccessRule, ...]) -> Access | None:
    if not rules:
        return None
    out: list[tuple[bool, int, int, int]] = []
    for rule in rules:
        if rule.network == "all":
            out.append((rule.allow, -1, 0, 0))
        elif rule.network == "unix:":
            out.append((rule.allow, 0, 0, 0))
        else:
            net = ipaddress.ip_network(rule.network)
            size = 4 if net.version == 4 else 16
            out.append((rule.allow, size, int(net.network_address), int(net.netmask)))
    return Access(out)
