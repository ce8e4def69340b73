"""The ``[fleet]`` table (docs/fleet.md) -> the frozen ``FleetSpec``.

It is read from a ``fleet.toml`` or from a ``[fleet]`` table in nonstop.toml, with the same
typed table reader as the rest of the TOML config, so every error names the file and the
key (``fleet.toml: fleet.batches[1]: ...``) and unknown keys are errors.  Paths on the
deploying machine (``identity``, ``known_hosts``) resolve ``~`` and are relative to the
file; paths on the hosts (``remote_config``, ``releases_dir``) must be absolute.
"""

from __future__ import annotations

import os
import posixpath
import re
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass

from nonstop.config.toml import _Table
from nonstop.errors import ConfigError
from nonstop.fleet.batches import Batch, Percent, batch_sizes
from nonstop.fleet.hosts import Destination, SshSettings

__all__ = ["FleetSpec", "fleet_from_table", "load_fleet", "read_fleet"]

_KEYS = frozenset(
    {
        "hosts",
        "front",
        "front_upstream",
        "remote_config",
        "releases_dir",
        "batches",
        "identity",
        "known_hosts",
        "connect_timeout",
        "command_timeout",
        "keep_releases",
        "front_config",
        "upstream_port",
        "remote_nonstop",
        "lease_file",
        "hold_timeout",
    }
)
_PERCENT = re.compile(r"([0-9]+)%")


@dataclass(frozen=True, slots=True)
class FleetSpec:
    """Every host of the fleet and how to reach and deploy them."""

    hosts: tuple[Destination, ...]
    remote_config: str
    releases_dir: str
    known_hosts: str
    front: Destination | None = None
    front_upstream: str | None = None
    batches: tuple[Batch, ...] = (1,)
    identity: str | None = None
    connect_timeout: float = 10.0
    command_timeout: float = 300.0
    keep_releases: int = 5
    front_config: str | None = None
    upstream_port: int | None = None
    remote_nonstop: str = "nonstop"
    lease_file: str | None = None
    hold_timeout: float = 600.0
    file: str = ""

    @property
    def ssh(self) -> SshSettings:
        return SshSettings(
            known_hosts=self.known_hosts,
            identity=self.identity,
            connect_timeout=self.connect_timeout,
            command_timeout=self.command_timeout,
        )

    def batch_sizes(self) -> list[int]:
        return batch_sizes(self.batches, len(self.hosts))

    @property
    def lock_host(self) -> Destination:
        """Where the fleet lock's lease lives: the front, else the first host."""
        return self.front if self.front is not None else self.hosts[0]

    @property
    def lease_path(self) -> str:
        return self.lease_file or posixpath.join(self.releases_dir, ".fleet-lease")

    def upstream_address(self, host: Destination, servers: Sequence[str]) -> str:
        """``HOST:PORT`` of ``host`` among ``servers``, the addresses of the front's
        upstream: ``host:upstream_port`` when that is set, else the one server whose
        host is the SSH destination's host; ``ValueError`` saying why when none is."""
        name = f"[{host.host}]" if ":" in host.host else host.host
        if self.upstream_port is not None:
            wanted = f"{name}:{self.upstream_port}"
            if wanted not in servers:
                raise ValueError(f"{wanted} is not a server of the front's {self.front_upstream}")
            return wanted
        mine = [s for s in servers if s.rsplit(":", 1)[0] == name]
        if len(mine) != 1:
            what = "no server" if not mine else f"{len(mine)} servers ({', '.join(mine)})"
            raise ValueError(
                f"{what} of the front's {self.front_upstream} on {name}: "
                "set upstream_port in [fleet]"
            )
        return mine[0]


def read_fleet(path: str) -> FleetSpec | None:
    """The ``[fleet]`` table of the TOML file ``path``, or None when it has none."""
    absolute = os.path.abspath(path)
    try:
        with open(absolute, "rb") as handle:
            data = tomllib.load(handle)
    except OSError as exc:
        raise ConfigError(exc.strerror or str(exc), absolute) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(exc), absolute) from exc
    if "fleet" not in data:
        return None
    return fleet_from_table(data["fleet"], absolute)


def load_fleet(path: str) -> FleetSpec:
    """Like ``read_fleet``, but a file without ``[fleet]`` is an error."""
    spec = read_fleet(path)
    if spec is None:
        raise ConfigError("no [fleet] table", os.path.abspath(path))
    return spec


def fleet_from_table(value: object, file: str) -> FleetSpec:
    """Check and convert the parsed ``[fleet]`` table of ``file``."""
    if not isinstance(value, dict):
        raise ConfigError("expected a table", f"{file}: fleet")
    t = _Table(value, "fleet", file, _KEYS)
    hosts = _hosts(t)
    front = _destination(t, "front", t.string("front"))
    upstream = t.string("front_upstream")
    if front is not None and not upstream:
        raise t.error("front_upstream", "required when front is set: the front's upstream")
    if upstream and front is None:
        raise t.error("front_upstream", "needs front: the host whose upstream it names")
    upstream_port = t.integer("upstream_port", 0, minimum=1) if t.has("upstream_port") else None
    if upstream_port is not None and upstream_port > 65535:
        raise t.error("upstream_port", "must be a port, 1-65535")
    remote_nonstop = t.string("remote_nonstop", "nonstop")
    assert remote_nonstop is not None
    if not remote_nonstop:
        raise t.error("remote_nonstop", "must not be empty")
    base = os.path.dirname(file)
    return FleetSpec(
        hosts=hosts,
        remote_config=_remote_path(t, "remote_config"),
        releases_dir=_remote_path(t, "releases_dir"),
        known_hosts=_local_path(base, t.string("known_hosts", "~/.ssh/known_hosts")),
        front=front,
        front_upstream=upstream,
        batches=_batches(t),
        identity=_local_path(base, t.string("identity")) if t.has("identity") else None,
        connect_timeout=_positive(t, "connect_timeout", 10.0),
        command_timeout=_positive(t, "command_timeout", 300.0),
        keep_releases=t.integer("keep_releases", 5, minimum=1),
        front_config=_remote_path(t, "front_config") if t.has("front_config") else None,
        upstream_port=upstream_port,
        remote_nonstop=remote_nonstop,
        lease_file=_remote_path(t, "lease_file") if t.has("lease_file") else None,
        hold_timeout=_positive(t, "hold_timeout", 600.0),
        file=file,
    )


def _destination(t: _Table, where: str, text: str | None) -> Destination | None:
    if text is None:
        return None
    try:
        return Destination.parse(text)
    except ValueError as exc:
        raise ConfigError(str(exc), f"{t.file}: fleet.{where}") from exc


def _hosts(t: _Table) -> tuple[Destination, ...]:
    texts = t.strings("hosts")
    if not texts:
        raise t.error("hosts", "required: at least one host (user@host:port)")
    hosts: list[Destination] = []
    for i, text in enumerate(texts):
        host = _destination(t, f"hosts[{i}]", text)
        assert host is not None
        if any((h.host, h.port) == (host.host, host.port) for h in hosts):
            raise ConfigError(f'"{text}" is listed twice', f"{t.file}: fleet.hosts[{i}]")
        hosts.append(host)
    return tuple(hosts)


def _batches(t: _Table) -> tuple[Batch, ...]:
    raw = t.typed("batches", (list,))
    if raw is None:
        return (1,)
    assert isinstance(raw, list)
    if not raw:
        raise t.error("batches", "must not be empty")
    out: list[Batch] = []
    for i, item in enumerate(raw):
        where = f"{t.file}: fleet.batches[{i}]"
        if type(item) is int:
            if item < 1:
                raise ConfigError("a host count must be at least 1", where)
            out.append(item)
            continue
        match = _PERCENT.fullmatch(item) if isinstance(item, str) else None
        if match is None:
            raise ConfigError('expected a host count (2) or a percentage ("50%")', where)
        percent = int(match.group(1))
        if not 1 <= percent <= 100:
            raise ConfigError("a percentage must be between 1% and 100%", where)
        out.append(Percent(percent))
    return tuple(out)


def _remote_path(t: _Table, key: str) -> str:
    path = t.required(key)
    if not posixpath.isabs(path):
        raise t.error(key, "must be an absolute path on the hosts")
    return posixpath.normpath(path)


def _local_path(base: str, raw: str | None) -> str:
    assert raw is not None
    return os.path.normpath(os.path.join(base, os.path.expanduser(raw)))


def _positive(t: _Table, key: str, default: float) -> float:
    value = t.duration(key, default)
    if value <= 0:
        raise t.error(key, "must be more than 0")
    return value
