"""``nonstop``: run, check, reload, status.

Exit codes (PRODUCT.md section 2): 0 success, 1 failed but safe, 2 usage or config
error, 3 cannot reach the daemon.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import click

from nonstop.admin.client import AdminClient
from nonstop.config import load
from nonstop.config.model import Config
from nonstop.config.units import parse_duration
from nonstop.errors import ConfigError, NonstopError

__all__ = ["main"]

_config_option = click.option(
    "-c",
    "--config",
    "config_path",
    default="nonstop.toml",
    show_default=True,
    help="Config file; a name ending in .conf is read as nginx.conf.",
)
_prefix_option = click.option(
    "-p", "--prefix", default=None, help="Prefix for relative paths (default: the config's dir)."
)


def _say(message: str) -> None:
    click.echo(f"nonstop: {message}", err=True)


def _load(path: str, prefix: str | None) -> Config:
    try:
        config = load(path, prefix)
    except ConfigError as exc:
        _say(f"[emerg] {exc}")
        _say(f"configuration file {os.path.abspath(path)} test failed")
        sys.exit(2)
    for notice in config.notices:
        _say(f"[notice] {notice}")
    return config


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="nonstop")
def main() -> None:
    """Load-balance web apps and deploy new versions without failing a request."""


@main.command()
@_config_option
@_prefix_option
def check(config_path: str, prefix: str | None) -> None:
    """Validate a config like `nginx -t`."""
    config = _load(config_path, prefix)
    try:
        import asyncio

        from nonstop.proxy.server import ProxyState
        from nonstop.proxy.tls import TlsContexts

        loop = asyncio.new_event_loop()
        try:
            ProxyState(loop, config)  # compiles routes, variables and upstreams
        finally:
            loop.close()
        TlsContexts().load(config)
    except ConfigError as exc:
        _say(f"[emerg] {exc}")
        _say(f"configuration file {os.path.abspath(config_path)} test failed")
        sys.exit(2)
    _say(f"the configuration file {os.path.abspath(config_path)} syntax is ok")
    _say(f"configuration file {os.path.abspath(config_path)} test is successful")


@main.command()
@_config_option
@_prefix_option
@click.option(
    "--shutdown-timeout",
    default="30s",
    show_default=True,
    help="How long in-flight requests may take to finish on SIGTERM.",
)
def run(config_path: str, prefix: str | None, shutdown_timeout: str) -> None:
    """Run the daemon in the foreground (SIGTERM/SIGINT: graceful stop; SIGHUP: reload)."""
    import uvloop

    from nonstop.daemon import Daemon, setup_logging

    config = _load(config_path, prefix)
    try:
        grace = parse_duration(shutdown_timeout)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
    setup_logging(config)
    daemon = Daemon(config_path, prefix, grace)
    try:
        uvloop.run(daemon.run(config))
    except ConfigError as exc:
        _say(f"[emerg] {exc}")
        sys.exit(2)
    except OSError as exc:
        _say(f"[emerg] {exc}")
        sys.exit(1)


def _client(config_path: str, prefix: str | None) -> AdminClient:
    from nonstop.daemon import admin_socket_path

    config = _load(config_path, prefix)
    return AdminClient(admin_socket_path(config))


def _call(client: AdminClient, cmd: str, **args: Any) -> dict[str, Any]:
    try:
        return client.call(cmd, **args)
    except NonstopError as exc:
        _say(str(exc))
        sys.exit(exc.exit_code)


@main.command()
@_config_option
@_prefix_option
def reload(config_path: str, prefix: str | None) -> None:
    """Apply a changed config with no dropped connection."""
    answer = _call(_client(config_path, prefix), "reload")
    if not answer.get("ok"):
        _say(f"reload refused, the running config stays: {answer.get('error')}")
        sys.exit(2)
    _say("configuration reloaded")


@main.command()
@_config_option
@_prefix_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status(config_path: str, prefix: str | None, as_json: bool) -> None:
    """Show listeners, upstreams and their servers' state."""
    answer = _call(_client(config_path, prefix), "status")
    if as_json:
        click.echo(json.dumps(answer, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(
        f"nonstop pid {answer['pid']}, up {answer['uptime']:.0f}s, "
        f"{answer['connections']} connections, listening on {', '.join(answer['listen'])}"
    )
    table = Table("upstream", "server", "weight", "state", "in flight", "fails")
    for name, peers in answer["upstreams"].items():
        for peer in peers:
            table.add_row(
                name,
                str(peer.get("address")),
                str(peer.get("weight")),
                str(peer.get("state")),
                str(peer.get("conns")),
                str(peer.get("fails")),
            )
    console.print(table)


if __name__ == "__main__":
    main()
