"""Configuration: both input formats load into one frozen model."""

from nonstop.config.loader import load
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
from nonstop.config.nginxconf import Resolver, system_resolver
from nonstop.config.template import compile_template
from nonstop.config.vocabulary import VARIABLE_PREFIXES, VARIABLES, is_known_variable

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
