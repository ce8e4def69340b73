"""``nonstop``: run, check, reload, status, deploy, rollback.

Exit codes: 0 success, 1 failed but safe, 2 usage or config error, 3 cannot reach the
daemon.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from typing import Any

import click

from nonstop.admin.client import AdminClient
from nonstop.config import load
from nonstop.config.model import Config
from nonstop.config.units import parse_duration
from nonstop.errors import ConfigError, DaemonUnreachable, NonstopError

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
_engine_option = click.option(
    "--engine",
    type=click.Choice(["embedded", "nginx"]),
    default=None,
    help="Serve with this engine instead of the config's (nginx: a real nginx, driven).",
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


def _data_plane() -> str:
    """Whether the proxy's hot path runs compiled by mypyc or as the same code interpreted."""
    import importlib.machinery
    import importlib.util
    import pkgutil

    import nonstop.proxy
    import nonstop.proxy.balancers

    compiled = 0
    for package in (nonstop.proxy, nonstop.proxy.balancers):
        for module in pkgutil.iter_modules(package.__path__, package.__name__ + "."):
            spec = importlib.util.find_spec(module.name)
            origin = spec.origin if spec is not None else None
            if origin and origin.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES)):
                compiled += 1
    if compiled:
        return f"compiled (mypyc, {compiled} modules)"
    return "interpreted (built with NONSTOP_COMPILE=0 or without a C compiler)"


def _version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    from importlib.metadata import version

    click.echo(f"nonstop {version('nonstop')}")
    click.echo(f"data plane: {_data_plane()}")
    click.echo(f"python {sys.version.split()[0]}")
    ctx.exit()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "-V",
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_version,
    help="Show the version and whether the data plane is compiled, then exit.",
)
def main() -> None:
    """Load-balance web apps and deploy new versions without failing a request."""


@main.command()
@_config_option
@_prefix_option
@_engine_option
def check(config_path: str, prefix: str | None, engine: str | None) -> None:
    """Validate a config like `nginx -t` (engine nginx: and run `nginx -t` on its render)."""
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
        if (engine or config.engine) == "nginx":
            _check_nginx(config)
    except ConfigError as exc:
        _say(f"[emerg] {exc}")
        _say(f"configuration file {os.path.abspath(config_path)} test failed")
        sys.exit(2)
    _say(f"the configuration file {os.path.abspath(config_path)} syntax is ok")
    _say(f"configuration file {os.path.abspath(config_path)} test is successful")


def _check_nginx(config: Config) -> None:
    """Render ``config`` for nginx in a scratch directory and have nginx check it."""
    import asyncio
    import tempfile

    from nonstop.daemon import nginx_engine

    with tempfile.TemporaryDirectory(prefix="nonstop-check-") as home:
        engine = nginx_engine(config)
        engine.home = home
        for line in asyncio.run(engine.check()).splitlines():
            _say(f"[nginx] {line}")


@main.command()
@_config_option
@_prefix_option
@_engine_option
@click.option(
    "--shutdown-timeout",
    default="30s",
    show_default=True,
    help="How long in-flight requests may take to finish on SIGTERM.",
)
@click.option(
    "--nginx-pid",
    default=None,
    metavar="PATH",
    help="Engine nginx: drive the nginx already running with this pid file ([nginx] pid).",
)
def run(
    config_path: str,
    prefix: str | None,
    engine: str | None,
    shutdown_timeout: str,
    nginx_pid: str | None,
) -> None:
    """Run the daemon in the foreground (SIGTERM/SIGINT: graceful stop; SIGHUP: reload)."""
    import uvloop

    from nonstop.daemon import Daemon, setup_logging

    config = _load(config_path, prefix)
    try:
        grace = parse_duration(shutdown_timeout)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
    setup_logging(config)
    daemon = Daemon(config_path, prefix, grace, engine, nginx_pid)
    try:
        uvloop.run(daemon.run(config))
    except ConfigError as exc:
        _say(f"[emerg] {exc}")
        sys.exit(2)
    except OSError as exc:
        _say(f"[emerg] {exc}")
        sys.exit(1)
    except NonstopError as exc:
        _say(f"[emerg] {exc}")
        sys.exit(exc.exit_code)


def _client(config_path: str, prefix: str | None) -> AdminClient:
    from nonstop.daemon import admin_socket_path

    config = _load(config_path, prefix)
    return AdminClient(admin_socket_path(config))


def _unreachable(exc: DaemonUnreachable) -> str:
    """``exc``, and the command that starts a daemon for this command's config."""
    params = click.get_current_context().params
    command = ["nonstop", "run", "-c", str(params.get("config_path") or "nonstop.toml")]
    if params.get("prefix"):
        command += ["-p", str(params["prefix"])]
    return f"{exc}; is it running? Start it with `{shlex.join(command)}`"


def _call(client: AdminClient, cmd: str, **args: Any) -> dict[str, Any]:
    try:
        return client.call(cmd, **args)
    except DaemonUnreachable as exc:
        _say(_unreachable(exc))
        sys.exit(exc.exit_code)
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
@click.argument("app", required=False)
@_config_option
@_prefix_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status(app: str | None, config_path: str, prefix: str | None, as_json: bool) -> None:
    """Show apps (live release, instances, last deploys) and upstreams."""
    args = {} if app is None else {"app": app}
    answer = _call(_client(config_path, prefix), "status", **args)
    if not answer.get("ok"):
        _say(str(answer.get("error")))
        sys.exit(int(answer.get("exit_code") or 1))
    if as_json:
        click.echo(json.dumps(answer, indent=2))
        return
    from nonstop.cli.show import print_status

    print_status(answer)


def _holder() -> str:
    import getpass
    import socket

    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


def _long_call(config_path: str, prefix: str | None, cmd: str, as_json: bool, **args: Any) -> None:
    """A deploy or rollback: progress lines as they come, then exit with its outcome."""
    from nonstop.cli.show import Printer

    printer = Printer(as_json)
    client = _client(config_path, prefix)
    try:
        answer = client.stream(cmd, printer.event, holder=_holder(), pid=os.getpid(), **args)
    except DaemonUnreachable as exc:
        printer.unreachable(_unreachable(exc))
        sys.exit(exc.exit_code)
    except NonstopError as exc:
        printer.unreachable(str(exc))
        sys.exit(exc.exit_code)
    printer.final(answer)
    if not answer.get("ok"):
        sys.exit(int(answer.get("exit_code") or 1))


@main.command()
@click.argument("app")
@click.option("--release", "-r", default=None, help="What {release} becomes in the command.")
@_config_option
@_prefix_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object per event, result last.")
def deploy(
    app: str, release: str | None, config_path: str, prefix: str | None, as_json: bool
) -> None:
    """Deploy RELEASE of APP; exit 0 only once it serves all traffic and the old is stopped."""
    args: dict[str, Any] = {"app": app}
    if release is not None:
        args["release"] = release
    _long_call(config_path, prefix, "deploy", as_json, **args)


@main.command()
@click.argument("app")
@_config_option
@_prefix_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object per event, result last.")
def rollback(app: str, config_path: str, prefix: str | None, as_json: bool) -> None:
    """Back to the previous release of APP (instant while it is still warm)."""
    _long_call(config_path, prefix, "rollback", as_json, app=app)


if __name__ == "__main__":
    main()
