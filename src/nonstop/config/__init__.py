"""Configuration: both input formats load into one frozen model."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from nonstop.config.model import (
    DEFAULT_NEXT_UPSTREAM,
    AccessLog,
    AddHeader,
    AdminSpec,
    AppSpec,
    Config,
    HealthSpec,
    Listen,
    LocationSpec,
    MapSpec,
    NginxSpec,
    ProxyPass,
    ReturnSpec,
    ServerBlock,
    ServerSpec,
    SetHeader,
    Source,
    Template,
    TlsSpec,
    UpstreamSpec,
)
from nonstop.config.vocabulary import VARIABLE_PREFIXES, VARIABLES, is_known_variable

if TYPE_CHECKING:
    from nonstop.config.loader import load
    from nonstop.config.nginxconf import Resolver, system_resolver
    from nonstop.config.template import compile_template

# The readers are imported when first asked for: a worker process gets its Config over
# the channel and only needs the model (the parsers are ~1.5 MiB of it when imported).
_LAZY = {
    "load": "nonstop.config.loader",
    "Resolver": "nonstop.config.nginxconf",
    "system_resolver": "nonstop.config.nginxconf",
    "compile_template": "nonstop.config.template",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "DEFAULT_NEXT_UPSTREAM",
    "VARIABLES",
    "VARIABLE_PREFIXES",
    "AccessLog",
    "AddHeader",
    "AdminSpec",
    "AppSpec",
    "Config",
    "HealthSpec",
    "Listen",
    "LocationSpec",
    "MapSpec",
    "NginxSpec",
    "ProxyPass",
    "Resolver",
    "ReturnSpec",
    "ServerBlock",
    "ServerSpec",
    "SetHeader",
    "Source",
    "Template",
    "TlsSpec",
    "UpstreamSpec",
    "compile_template",
    "is_known_variable",
    "load",
    "system_resolver",
]
