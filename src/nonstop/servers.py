"""An app's servers as plain data: what the control plane tells an engine to serve.

Both planes import this module and nothing else of each other's: the deployer decides
an app's server set, an engine (``nonstop.engines``) makes it live.  Slots follow the
state store: slot 0 (blue) owns ``ports[0::2]``, slot 1 (green) ``ports[1::2]``, so an
app with more port pairs runs one instance per pair on each side.
"""

from __future__ import annotations

from dataclasses import dataclass

from nonstop.config.model import AppSpec, ServerSpec

__all__ = ["ServerReport", "ServerState", "address", "server_spec", "slot_of", "slot_ports"]


@dataclass(frozen=True, slots=True)
class ServerState:
    """One server of an app as the control plane wants it served.

    ``draining``: no new request goes to it, requests already on it finish.
    ``healthy`` False: it gets no request until it is healthy again (a crashed or
    restarting instance).
    """

    spec: ServerSpec
    draining: bool = False
    healthy: bool = True

    @property
    def address(self) -> str:
        return self.spec.address


@dataclass(frozen=True, slots=True)
class ServerReport:
    """What an engine reports of one app server: its state and counts since it joined.

    ``responses``/``responses_5xx`` are None where the engine cannot count them.
    """

    address: str
    state: str
    in_flight: int = 0
    responses: int | None = None
    responses_5xx: int | None = None


def slot_ports(app: AppSpec, slot: int) -> tuple[int, ...]:
    """The ports of ``slot`` (0 = blue, 1 = green)."""
    if slot not in (0, 1):
        raise ValueError(f"slot must be 0 or 1, not {slot}")
    return app.ports[slot::2]


def slot_of(app: AppSpec, port: int) -> int:
    """The slot a port of ``app`` belongs to (0 for a port the app does not list)."""
    if port not in app.ports:
        return 0
    return app.ports.index(port) % 2


def address(host: str, port: int) -> str:
    """The upstream address of an instance, as ``Instance.address`` writes it."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def server_spec(app: AppSpec, port: int, backup: bool = False) -> ServerSpec:
    """The upstream server of one instance of ``app``.

    ``backup`` is how the previous release waits during ``verify``: it gets no request
    while the new release answers, and takes the retry of a GET the new release failed
    (nginx's backup semantics, ``ngx_http_upstream_round_robin.c``).
    """
    return ServerSpec(address=address(app.host, port), host=app.host, port=port, backup=backup)
