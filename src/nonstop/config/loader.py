"""``load``: the one entry point that turns a config file into a validated ``Config``.

The file name picks the format, as ``nonstop -c`` documents: a name ending in ``.conf`` is
nginx.conf, anything else is TOML.  ``prefix`` works as nginx's ``-p``: relative log and
state paths resolve against it; it defaults to the config file's directory.
"""

from __future__ import annotations

import os

from nonstop.config.model import Config
from nonstop.config.nginxconf import Resolver, load_nginx, system_resolver
from nonstop.config.toml import load_toml
from nonstop.config.validate import validate

__all__ = ["load"]


def load(
    path: str,
    prefix: str | None = None,
    *,
    resolver: Resolver = system_resolver,
    engine: str | None = None,
) -> Config:
    """Read, parse and validate ``path``; raises ``nonstop.errors.ConfigError``.

    ``resolver`` turns upstream host names into addresses (``socket.getaddrinfo`` by
    default, at load time as nginx does); tests pass a fake.  ``engine`` is ``--engine``:
    an nginx.conf read for ``nginx`` keeps what nonstop does not model for nginx to run
    (docs/engines.md, "Directives nonstop does not model").
    """
    absolute = os.path.abspath(path)
    root = os.path.abspath(prefix) if prefix else os.path.dirname(absolute)
    if absolute.endswith(".conf"):
        config = load_nginx(absolute, root, resolver, passthrough=engine == "nginx")
    else:
        config = load_toml(absolute, root, resolver)
    return validate(config)
