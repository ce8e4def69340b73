"""``nonstop``: run, check, reload, status, deploy, rollback.

Exit codes: 0 success, 1 failed but safe, 2 usage or config error, 3 cannot reach the
daemon, 4 the state store failed (full disk, read-only, corrupt).
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import sys
from collections.abc import Callable
from typing import Any, NoReturn

import click

import nonstop
from nonstop.admin.client import AdminClient
from nonstop.cli.fleet import fleet
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


def _load(
    path: str,
    prefix: str | None,
    on_error: Callable[[str], None] | None = None,
    engine: str | None = None,
) -> Config:
    try:
        config = load(path, prefix, engine=engine)
    except ConfigError as exc:
        if on_error is not None:
            on_error(str(exc))
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
    click.echo(f"nonstop {nonstop.__version__}")
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
    if _check_fleet(config_path):
        return
    config = _load(config_path, prefix, engine=engine)
    try:
        if (engine or config.engine) == "nginx":
            _check_nginx(config)  # nginx -t judges what nginx serves
        else:
            _check_embedded(config)
    except ConfigError as exc:
        _say(f"[emerg] {exc}")
        _say(f"configuration file {os.path.abspath(config_path)} test failed")
        sys.exit(2)
    _say(f"the configuration file {os.path.abspath(config_path)} syntax is ok")
    _say(f"configuration file {os.path.abspath(config_path)} test is successful")


def _check_embedded(config: Config) -> None:
    """Build what nonstop's proxy would serve ``config`` with, certificates included."""
    import asyncio

    from nonstop.proxy.server import ProxyState
    from nonstop.proxy.tls import TlsContexts

    loop = asyncio.new_event_loop()
    try:
        ProxyState(loop, config)  # compiles routes, variables and upstreams
    finally:
        loop.close()
    TlsContexts().load(config)


def _check_fleet(path: str) -> bool:
    """Check a ``[fleet]`` table if the file has one; True when that is all it holds."""
    if path.endswith(".conf"):
        return False
    from nonstop.fleet.config import read_fleet

    try:
        fleet = read_fleet(path)
    except ConfigError as exc:
        _say(f"[emerg] {exc}")
        _say(f"configuration file {os.path.abspath(path)} test failed")
        sys.exit(2)
    if fleet is None:
        return False
    sizes = ", ".join(map(str, fleet.batch_sizes()))
    _say(f"fleet: {len(fleet.hosts)} hosts in batches of {sizes}")
    import tomllib

    with open(path, "rb") as handle:
        if set(tomllib.load(handle)) != {"fleet"}:
            return False
    _say(f"configuration file {os.path.abspath(path)} test is successful")
    return True


def _check_nginx(config: Config) -> None:
    """Render ``config`` for nginx in a scratch directory and have nginx check it."""
    import asyncio
    import tempfile

    from nonstop.engines.build import nginx_engine

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
    """Run the daemon in the foreground (SIGTERM: graceful stop, the apps keep running;
    SIGINT: the same, stopping the apps; SIGHUP: reload; SIGUSR2: upgrade)."""
    import uvloop

    from nonstop.daemon import Daemon
    from nonstop.errorlog import goes_to_stderr, setup_logging
    from nonstop.listeners import inherited
    from nonstop.statedir import StateDirLock, raise_open_files_limit, restrict_umask
    from nonstop.upgrade import ENV, Handoff, receive

    handoff: Handoff | None = None

    logged_to_file = False  # once the error log is a file, it gets the [emerg] too

    def fail(message: str, code: int) -> NoReturn:
        if handoff is not None:  # the old nonstop says why its upgrade failed
            handoff.failed(message)
        _say(f"[emerg] {message}")
        if logged_to_file:  # as nginx's: stderr, and the error log the operator reads
            logging.getLogger("nonstop").critical("%s", message, extra={"nginx_level": "emerg"})
        sys.exit(code)

    handed = os.environ.pop(ENV, None)
    if handed is not None:  # started by `nonstop upgrade`: the old one sends its sockets
        try:
            handoff = receive(int(handed), inherited)
        except (ValueError, OSError) as exc:
            fail(str(exc), 1)
    config = _load(config_path, prefix, None if handoff is None else handoff.failed, engine)
    try:
        grace = parse_duration(shutdown_timeout)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
    # Before anything reads or writes state: the state directory is this daemon's alone,
    # what it writes is private, and it may open as many files as the hard limit allows.
    restrict_umask(config.group)
    lock = StateDirLock(config.state_dir, config.state_dir_passable, config.engine == "nginx")
    try:
        if handoff is not None:
            lock.take_over(handoff.lock_fd)
        else:
            lock.acquire()
    except NonstopError as exc:
        fail(str(exc), exc.exit_code)
    try:
        from_systemd = inherited.from_systemd()  # LISTEN_FDS: used instead of binding
    except ValueError as exc:
        fail(str(exc), 1)
    limits = raise_open_files_limit(config.max_connections, config.max_open_files)
    try:
        setup_logging(config)
    except OSError as exc:
        fail(f'open() "{config.error_log}" failed ({exc.errno}: {exc.strerror})', 1)
    logged_to_file = not goes_to_stderr()
    for warning in limits:
        logging.getLogger("nonstop").warning("%s", warning)
    if from_systemd:
        logging.getLogger("nonstop").info("%d listening socket(s) from systemd", from_systemd)
    daemon = Daemon(config_path, prefix, grace, engine, nginx_pid)
    daemon.lock, daemon.handoff = lock, handoff
    # systemd's sockets, or handed over by a nonstop that had them from systemd
    daemon.listeners_outlive = from_systemd > 0 or (handoff is not None and handoff.outlive)
    try:
        uvloop.run(daemon.run(config))
    except ConfigError as exc:
        fail(str(exc), 2)
    except OSError as exc:
        fail(str(exc), 1)
    except NonstopError as exc:
        fail(str(exc), exc.exit_code)


@main.command()
@_config_option
@_prefix_option
@click.option(
    "--timeout",
    default="60s",
    show_default=True,
    help="How long the new nonstop may take to become ready.",
)
def upgrade(config_path: str, prefix: str | None, timeout: str) -> None:
    """Replace the running nonstop by the one installed now, dropping no connection.

    The new daemon takes over the listening sockets, the admin socket and the running
    apps, and becomes ready; only then does the old one finish its requests and exit.
    If the new one fails, the old one keeps serving and this exits 1 saying why.
    """
    try:
        seconds = parse_duration(timeout)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--timeout") from exc
    answer = _call(_client(config_path, prefix), "upgrade", timeout=seconds)
    if not answer.get("ok"):
        _say(str(answer.get("error")))
        sys.exit(int(answer.get("exit_code") or 1))
    _say(
        f"upgraded: nonstop {answer.get('new_pid')} serves now; {answer.get('old_pid')} "
        "finishes its requests and exits"
    )


def _client(config_path: str, prefix: str | None) -> AdminClient:
    from nonstop.daemon import admin_socket_path

    try:
        config = load(config_path, prefix)
    except ConfigError:
        # an nginx.conf only the nginx engine runs (it passes directives nonstop does not
        # model) reaches its daemon without --engine; a broken one is reported as the
        # embedded engine reads it
        try:
            config = load(config_path, prefix, engine="nginx")
        except ConfigError:
            config = _load(config_path, prefix)
    for notice in config.notices:
        _say(f"[notice] {notice}")
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
@_config_option
@_prefix_option
@click.option(
    "--apps", is_flag=True, help="Stop the app instances too (by default they keep running)."
)
@click.option(
    "--timeout",
    default="120s",
    show_default=True,
    help="How long to wait for the daemon to exit.",
)
def stop(config_path: str, prefix: str | None, apps: bool, timeout: str) -> None:
    """Stop the daemon gracefully; exit 0 once it has exited.

    The apps keep running and serving on their ports, and the next `nonstop run` adopts
    them; with --apps they are stopped too (stop_signal, SIGKILL after stop_timeout).
    """
    try:
        seconds = parse_duration(timeout)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--timeout") from exc
    answer = _call(_client(config_path, prefix), "stop", apps=apps)
    pid = answer.get("pid")
    if isinstance(pid, int) and not _wait_exit(pid, seconds):
        _say(f"nonstop (pid {pid}) is still stopping after {timeout}")
        sys.exit(1)
    if not answer.get("instances", 1):  # an older daemon does not say: as if it ran some
        _say("stopped")
    else:
        _say("stopped" + ("; its apps are stopped too" if apps else "; its apps keep running"))


def _wait_exit(pid: int, timeout: float) -> bool:
    """Whether process ``pid`` ended within ``timeout`` seconds."""
    import select

    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        return bool(select.select([pidfd], [], [], timeout)[0])
    finally:
        os.close(pidfd)


@main.command()
@click.argument("app", required=False)
@_config_option
@_prefix_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option(
    "--watch", "-w", is_flag=True, help="Keep the view on screen, refreshed (Ctrl-C stops)."
)
@click.option(
    "--interval", default="1s", show_default=True, help="With --watch: how often to refresh."
)
def status(
    app: str | None, config_path: str, prefix: str | None, as_json: bool, watch: bool, interval: str
) -> None:
    """Show apps (live release, instances, last deploys) and upstreams."""
    args = {} if app is None else {"app": app}
    client = _client(config_path, prefix)
    if watch:
        _watch(client, args, as_json, interval)
        return
    answer = _status(client, args)
    if as_json:
        click.echo(json.dumps(answer, indent=2))
        return
    from nonstop.cli.show import print_status

    print_status(answer)


def _status(client: AdminClient, args: dict[str, Any]) -> dict[str, Any]:
    answer = _call(client, "status", **args)
    if not answer.get("ok"):
        _say(str(answer.get("error")))
        sys.exit(int(answer.get("exit_code") or 1))
    return answer


def _watch(client: AdminClient, args: dict[str, Any], as_json: bool, interval: str) -> None:
    """``status --watch``: a view redrawn in place, so only at a terminal."""
    if as_json:
        raise click.UsageError("--watch draws for a terminal; scripts poll `status --json`")
    if not (sys.stdout.isatty() and sys.stdin.isatty()):
        raise click.UsageError(
            "--watch needs a terminal; without one, run `nonstop status` (or --json) when needed"
        )
    try:
        seconds = parse_duration(interval)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--interval") from exc
    if seconds <= 0:
        raise click.BadParameter("must be above 0", param_hint="--interval")
    from nonstop.cli.show import watch_status

    _status(client, args)  # a wrong app name or a config without a daemon: say so and exit

    def fetch() -> dict[str, Any]:
        answer = client.call("status", **args)
        if not answer.get("ok"):
            raise NonstopError(str(answer.get("error")))
        return answer

    watch_status(fetch, seconds)


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
@click.option(
    "--hold",
    is_flag=True,
    help="Switch, keep the old release warm and return; `commit` or `abort` decides.",
)
@click.option(
    "--hold-timeout",
    default="10m",
    show_default=True,
    help="With --hold: roll back if neither commit nor abort comes within this time.",
)
def deploy(
    app: str,
    release: str | None,
    config_path: str,
    prefix: str | None,
    as_json: bool,
    hold: bool,
    hold_timeout: str,
) -> None:
    """Deploy RELEASE of APP; exit 0 only once it serves all traffic and the old is stopped
    (with --hold: once it serves all traffic and the old release waits warm)."""
    args: dict[str, Any] = {"app": app}
    if release is not None:
        args["release"] = release
    if hold:
        try:
            args["hold"] = parse_duration(hold_timeout)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--hold-timeout") from exc
        if args["hold"] <= 0:
            raise click.BadParameter("must be above 0", param_hint="--hold-timeout")
    _long_call(config_path, prefix, "deploy", as_json, **args)


def _decision(cmd: str, doc: str) -> None:
    """``commit`` and ``abort``: decide APP's held deploy."""

    @main.command(name=cmd, help=doc)
    @click.argument("app")
    @_config_option
    @_prefix_option
    @click.option("--json", "as_json", is_flag=True, help="One JSON object per event, result last.")
    def decide(app: str, config_path: str, prefix: str | None, as_json: bool) -> None:
        _long_call(config_path, prefix, cmd, as_json, app=app)


_decision(
    "commit",
    "Finish APP's held deploy: drain and stop the old release; exit 0 once it is stopped.",
)
_decision(
    "abort",
    "Roll APP's held deploy back to the warm old release; exit 0 once the new one stopped.",
)


@main.command()
@click.argument("app")
@_config_option
@_prefix_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object per event, result last.")
def rollback(app: str, config_path: str, prefix: str | None, as_json: bool) -> None:
    """Back to the previous release of APP (instant while it is still warm)."""
    _long_call(config_path, prefix, "rollback", as_json, app=app)


def _server_call(
    config_path: str, prefix: str | None, cmd: str, as_json: bool, **args: Any
) -> dict[str, Any]:
    """``drain``/``undrain``: one answer (JSON with --json), exit with its outcome."""
    client = _client(config_path, prefix)
    try:
        answer = client.stream(cmd, lambda event: None, **args)
    except NonstopError as exc:
        _say(str(exc))
        sys.exit(exc.exit_code)
    if as_json:
        click.echo(json.dumps(answer))
    if not answer.get("ok"):
        if not as_json:
            _say(str(answer.get("error")))
        sys.exit(int(answer.get("exit_code") or 1))
    return answer


@main.command()
@click.argument("upstream")
@click.argument("address")
@_config_option
@_prefix_option
@click.option(
    "--timeout",
    default="30s",
    show_default=True,
    help="How long to wait for the requests in flight to it to finish.",
)
@click.option("--json", "as_json", is_flag=True, help="The answer as JSON.")
def drain(
    upstream: str, address: str, config_path: str, prefix: str | None, timeout: str, as_json: bool
) -> None:
    """Take ADDRESS out of UPSTREAM: no new request goes to it; exit 0 once none is in
    flight to it, 1 if some still are after --timeout (it stays drained either way)."""
    try:
        seconds = parse_duration(timeout)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--timeout") from exc
    _server_call(
        config_path, prefix, "drain", as_json, upstream=upstream, address=address, timeout=seconds
    )
    if not as_json:
        _say(f"{address} of upstream {upstream} is drained: nothing in flight to it")


@main.command()
@click.argument("upstream")
@click.argument("address")
@_config_option
@_prefix_option
@click.option("--json", "as_json", is_flag=True, help="The answer as JSON.")
def undrain(
    upstream: str, address: str, config_path: str, prefix: str | None, as_json: bool
) -> None:
    """Put ADDRESS back into UPSTREAM after `nonstop drain`."""
    _server_call(config_path, prefix, "undrain", as_json, upstream=upstream, address=address)
    if not as_json:
        _say(f"{address} of upstream {upstream} takes requests again")


main.add_command(fleet)


if __name__ == "__main__":
    main()
