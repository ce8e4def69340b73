"""The one place that builds an engine: ``engine`` in the config names which."""

from __future__ import annotations

import os
import pwd

from nonstop.config.model import Config
from nonstop.engines.base import Engine
from nonstop.engines.embedded import EmbeddedEngine
from nonstop.engines.nginx import NginxEngine, SystemNginx, find_nginx
from nonstop.errors import ConfigError
from nonstop.events import EventBus

__all__ = ["build_engine", "nginx_engine"]


def build_engine(config: Config, events: EventBus | None = None) -> Engine:
    """The engine ``config`` asks for, not started yet; its health flips go to ``events``."""
    if config.engine == "nginx":
        return nginx_engine(config, events)
    if config.separate_workers:
        from nonstop.workers.engine import WorkersEngine

        return WorkersEngine(config, events=events)
    return EmbeddedEngine(config, events=events)


def nginx_engine(config: Config, events: EventBus | None = None) -> NginxEngine:
    """The nginx engine for ``config``, driving the nginx binary found on this host.

    Started as root without ``user``, nginx would run its workers as ``nobody``, who
    cannot reach the state directory; they run as nonstop's own user instead.  With
    ``user`` they run as that user, and the engine opens the way for them.
    """
    binary = find_nginx()
    if binary is None:
        raise ConfigError('engine "nginx" needs the nginx binary, and none was found on PATH')
    user = pwd.getpwuid(os.geteuid()).pw_name if os.geteuid() == 0 else None
    return NginxEngine(
        config, SystemNginx(binary), user=user, system_pid=config.nginx.pid, events=events
    )
