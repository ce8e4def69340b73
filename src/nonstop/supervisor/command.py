"""From an ``AppSpec`` and a (port, release) to the exact argv, env and cwd to run.

Pure: no environment is read here; the caller passes the base environment in.

``{port}`` and ``{release}`` are replaced by plain string replacement, never
``str.format``, so other braces in a command (``${HOME}``, JSON in an env value) pass
through untouched.  Without ``shell`` the command is split with ``shlex`` *before* the
substitution, so a release containing spaces or quotes stays one argument and cannot add
arguments of its own.  With ``shell = true`` the substituted text goes to ``/bin/sh -c``
verbatim, as the config asked.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping
from dataclasses import dataclass

from nonstop.config.accounts import Account
from nonstop.config.model import AppSpec
from nonstop.supervisor.errors import StartFailed

__all__ = ["BASE_ENV", "LaunchSpec", "base_environment", "build_launch", "substitute"]

# What an app gets of nonstop's own environment; everything else it gets from its ``env``.
BASE_ENV = ("PATH", "LANG", "LANGUAGE", "TZ")  # and every LC_*
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True, slots=True)
class LaunchSpec:
    """Everything a launcher needs to start one instance."""

    app: str
    port: int
    release: str
    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...]  # the full environment of the child
    cwd: str | None
    log_path: str  # stdout and stderr are appended here
    account: Account | None = None  # run as this user and group; None: as nonstop runs


def substitute(text: str, port: int, release: str) -> str:
    return text.replace("{port}", str(port)).replace("{release}", release)


def base_environment(source: Mapping[str, str], account: Account | None) -> dict[str, str]:
    """An app's base environment: ``PATH``, ``LANG``, ``LANGUAGE``, ``TZ`` and ``LC_*`` of
    ``source`` (nonstop's own), and ``HOME``, ``USER``, ``LOGNAME`` of whom it runs as —
    not the rest of nonstop's environment (its secrets, ``NOTIFY_SOCKET``, ...)."""
    env = {k: v for k, v in source.items() if k in BASE_ENV or k.startswith("LC_")}
    env.setdefault("PATH", DEFAULT_PATH)
    if account is not None:
        env.update(HOME=account.home, USER=account.user, LOGNAME=account.user)
    else:
        env.update({k: source[k] for k in ("HOME", "USER", "LOGNAME") if k in source})
    return env


def build_launch(
    app: AppSpec,
    port: int,
    release: str,
    log_path: str,
    base_env: Mapping[str, str],
    account: Account | None = None,
) -> LaunchSpec:
    """The argv/env/cwd for ``app`` on ``port`` running ``release``, as ``account``."""
    if app.shell:
        argv: tuple[str, ...] = ("/bin/sh", "-c", substitute(app.command, port, release))
    else:
        try:
            words = shlex.split(app.command)
        except ValueError as exc:
            raise StartFailed(f"{app.name}: cannot split command {app.command!r}: {exc}") from None
        if not words:
            raise StartFailed(f"{app.name}: the command is empty")
        argv = tuple(substitute(word, port, release) for word in words)
    env = dict(base_env)
    for key, value in app.env:
        env[key] = substitute(value, port, release)
    cwd = substitute(app.cwd, port, release) if app.cwd else None
    if cwd is not None:
        cwd = os.path.normpath(cwd)
    return LaunchSpec(
        app=app.name,
        port=port,
        release=release,
        argv=argv,
        env=tuple(sorted(env.items())),
        cwd=cwd,
        log_path=log_path,
        account=account,
    )
